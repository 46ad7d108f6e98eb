package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// The fuzz targets feed a connection arbitrary client bytes through a
// net.Pipe. The server must not panic (every goroutine would turn it into
// ErrInternal, which fails the target), hang, or allocate from a number it
// did not check. FuzzRequests also checks every reply against a model of
// what the request deserves.

const fuzzSize = 1 << 20

// fuzzConn runs one server connection over a pipe: it writes in, then
// ends the client's side of the stream (so that the server reads EOF after
// in, as after a shutdown(SHUT_WR)) and returns everything the server sent
// until it closed the connection.
func fuzzConn(t *testing.T, in []byte) []byte {
	var errs errLog
	s, err := New(pattern(fuzzSize), fuzzSize, WithInFlight(2, MaxRequest), WithName("fuzz"),
		WithDescription("d"), WithShutdownGrace(time.Second), OnError(errs.add))
	if err != nil {
		t.Fatal(err)
	}
	cli, p := net.Pipe()
	defer cli.Close()
	srv := &halfConn{Conn: p}
	done := make(chan struct{})
	s.active.Add(1)
	go s.serveConn(context.Background(), srv, 1, func() { close(done) })
	var out bytes.Buffer
	drained := make(chan struct{})
	go func() {
		io.Copy(&out, cli)
		close(drained)
	}()
	cli.Write(in) // fails once the server hangs up, as it may
	srv.closeRead()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("the server hung on %q", in)
	}
	<-drained
	if err := errs.find(ErrInternal); err != nil {
		t.Fatalf("%v on %q", err, in)
	}
	return out.Bytes()
}

// halfConn is the server's end of a net.Pipe whose client has no more to
// send: a net.Pipe cannot be half closed. Once a write on a pipe returns,
// the other end has read it all, so closeRead, called then, makes the
// server's next read (or the one it is blocked in) end with io.EOF.
type halfConn struct {
	net.Conn
	mu  sync.Mutex
	eof bool
}

func (c *halfConn) closeRead() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.eof = true
	c.Conn.SetReadDeadline(time.Unix(1, 0))
}

func (c *halfConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.eof && errors.Is(err, os.ErrDeadlineExceeded) {
		err = io.EOF
	}
	return n, err
}

// SetDeadline and SetReadDeadline keep the end of the stream in place.
func (c *halfConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *halfConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.eof {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func FuzzHandshake(f *testing.F) {
	flags := be.AppendUint32(nil, flagCFixedNewstyle|flagCNoZeroes)
	read := requestBytes(cmdRead, 0, 1, 0, 4096)
	disc := requestBytes(cmdDisc, 0, 2, 0, 0)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(cat(flags, optionBytes(optGo, infoBytes("", infoBlockSize)), read, disc))
	f.Add(cat(flags, optionBytes(optList, nil), optionBytes(optInfo, infoBytes("fuzz", infoName, infoDescription, infoBlockSize)),
		optionBytes(optStructuredReply, nil), optionBytes(optGo, infoBytes("fuzz")), read, disc))
	f.Add(cat(be.AppendUint32(nil, 0), optionBytes(optExportName, nil), read, disc))
	f.Add(cat(flags, optionBytes(optExportName, []byte("fuzz")), read))
	f.Add(cat(flags, optionBytes(optStartTLS, nil), optionBytes(optAbort, nil)))
	f.Add(cat(flags, optionBytes(optInfo, []byte{0, 0, 0, 9, 'x', 0}), optionBytes(optGo, infoBytes("nope")), optionBytes(99, []byte("x"))))
	f.Add(cat(flags, optionBytes(optExportName, []byte("nope"))))
	f.Add(cat(flags, be.AppendUint32(be.AppendUint32(be.AppendUint64(nil, optMagic), optGo), 0xffffffff)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		out := fuzzConn(t, in)
		if len(out) < 18 || be.Uint64(out) != nbdMagic || be.Uint64(out[8:]) != optMagic {
			t.Fatalf("greeting %q", out)
		}
	})
}

// handshakeGo is what a client sends to reach the transmission phase.
var handshakeGo = append(be.AppendUint32(nil, flagCFixedNewstyle|flagCNoZeroes), optionBytes(optGo, infoBytes(""))...)

func FuzzRequests(f *testing.F) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(cat(requestBytes(cmdRead, 0, 1, 0, 4096), requestBytes(cmdRead, 1, 2, fuzzSize-1, 1), requestBytes(cmdRead, 0, 3, fuzzSize, 0)))
	f.Add(cat(requestBytes(cmdRead, 0, 1, fuzzSize-1, 2), requestBytes(cmdRead, 0, 2, 1<<63, 1<<31), requestBytes(cmdRead, 4, 3, 0, 1)))
	f.Add(cat(requestBytes(cmdWrite, 0, 1, 0, 5), []byte("hello"), requestBytes(cmdFlush, 0, 2, 0, 0), requestBytes(cmdTrim, 0, 3, 0, 512),
		requestBytes(cmdWriteZeroes, 0, 4, 0, 512), requestBytes(5, 0, 5, 0, 512), requestBytes(7, 0, 6, 0, 512)))
	f.Add(cat(requestBytes(cmdRead, 0, 1, 0, 100), requestBytes(cmdDisc, 0, 2, 0, 0), requestBytes(cmdRead, 0, 3, 0, 100)))
	f.Add(cat(requestBytes(cmdWrite, 0, 1, 0, MaxRequest+1)))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		in = append(append([]byte(nil), in...), requestBytes(cmdDisc, 0, 0, 0, 0)...)
		m := modelRequests(in)
		out := fuzzConn(t, append(append([]byte(nil), handshakeGo...), in...))
		if err := m.check(out); err != nil {
			t.Fatalf("%v\nrequests % x", err, in)
		}
	})
}

// requestModel is what each request of a stream deserves, by handle, and
// how many requests of each handle there are.
type requestModel struct {
	want      map[uint64]modelReply
	count     map[uint64]int
	ambiguous bool // a handle repeats with another answer: no telling which is which
}

type modelReply struct {
	errno       uint32
	off, length uint64 // of a read that succeeds
}

func modelRequests(in []byte) requestModel {
	m := requestModel{want: map[uint64]modelReply{}, count: map[uint64]int{}}
	for {
		if len(in) < requestHeaderLen {
			return m // the server waits for the rest
		}
		h := in[:requestHeaderLen]
		in = in[requestHeaderLen:]
		if be.Uint32(h) != requestMagic {
			return m
		}
		flags, typ, handle, off, length := be.Uint16(h[4:]), be.Uint16(h[6:]), be.Uint64(h[8:]), be.Uint64(h[16:]), uint64(be.Uint32(h[24:]))
		var r modelReply
		switch typ {
		case cmdDisc:
			return m
		case cmdRead:
			if flags&^cmdFlagFUA != 0 || length > MaxRequest || off > fuzzSize || off+length > fuzzSize {
				r.errno = errInval
			} else {
				r.off, r.length = off, length
			}
		case cmdWrite:
			if length > MaxRequest {
				return m
			}
			if uint64(len(in)) < length {
				return m
			}
			in = in[length:]
			r.errno = errPerm
		case cmdFlush:
			if flags&^cmdFlagFUA != 0 {
				r.errno = errInval
			}
		case cmdTrim, cmdWriteZeroes:
			r.errno = errPerm
		default:
			r.errno = errInval
		}
		if w, dup := m.want[handle]; dup && w != r {
			m.ambiguous = true
		}
		m.want[handle] = r
		m.count[handle]++
	}
}

// check parses the server's side of the conversation: the greeting, the
// reply to NBD_OPT_GO, then simple replies, each of which must be the one
// its request deserves. However the stream ends (NBD_CMD_DISC, EOF, a
// fatal error), the requests before the end get their replies first.
func (m requestModel) check(out []byte) error {
	const greeting = 18 + 3*20 + 12 + 14 // hello, NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE, NBD_REP_ACK
	ack := be.AppendUint32(be.AppendUint32(be.AppendUint64(nil, optReplyMagic), optGo), repAck)
	if len(out) < greeting || !bytes.Equal(out[greeting-20:greeting], be.AppendUint32(ack, 0)) {
		return fmt.Errorf("handshake % x", out[:min(len(out), greeting)])
	}
	if m.ambiguous {
		return nil
	}
	out = out[greeting:]
	for len(out) > 0 {
		if len(out) < replyHeaderLen {
			return fmt.Errorf("truncated reply % x", out)
		}
		if mg := be.Uint32(out); mg != simpleReplyMagic {
			return fmt.Errorf("reply magic %#x", mg)
		}
		errno, handle := be.Uint32(out[4:]), be.Uint64(out[8:])
		out = out[replyHeaderLen:]
		w, ok := m.want[handle]
		if !ok || m.count[handle] == 0 {
			return fmt.Errorf("reply for handle %d, which was not asked for or was answered already", handle)
		}
		m.count[handle]--
		if errno != w.errno {
			return fmt.Errorf("handle %d: error %d, want %d", handle, errno, w.errno)
		}
		if errno == 0 && w.length > 0 {
			if uint64(len(out)) < w.length {
				return fmt.Errorf("handle %d: %d bytes of data, want %d", handle, len(out), w.length)
			}
			for i, b := range out[:w.length] {
				if b != patternByte(int64(w.off)+int64(i)) {
					return fmt.Errorf("handle %d: byte %d of the read at %d is wrong", handle, i, w.off)
				}
			}
			out = out[w.length:]
		}
	}
	for h, n := range m.count {
		if n != 0 {
			return fmt.Errorf("%d requests of handle %d without a reply before the disconnect", n, h)
		}
	}
	return nil
}
