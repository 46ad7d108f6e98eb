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
	h := &holes{size: fuzzSize}
	s, err := New(h, fuzzSize, WithInFlight(2, MaxRequest), WithName("fuzz"),
		WithDescription("d"), WithShutdownGrace(time.Second), OnError(errs.add), WithAllocation(h.allocation))
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
	f.Add(cat(flags, optionBytes(optStructuredReply, nil), optionBytes(optListMetaContext, metaBytes("", "base:")),
		optionBytes(optSetMetaContext, metaBytes("fuzz", "x:y", metaBaseAllocation)), optionBytes(optGo, infoBytes("")),
		requestBytes(cmdBlockStatus, cmdFlagReqOne, 1, 0, 4096), read, disc))
	f.Add(cat(flags, optionBytes(optSetMetaContext, metaBytes("")), optionBytes(optStructuredReply, []byte{1}),
		optionBytes(optListMetaContext, []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}), optionBytes(optAbort, nil)))
	f.Add(cat(flags, be.AppendUint32(be.AppendUint32(be.AppendUint64(nil, optMagic), optGo), 0xffffffff)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		out := fuzzConn(t, in)
		if len(out) < 18 || be.Uint64(out) != nbdMagic || be.Uint64(out[8:]) != optMagic {
			t.Fatalf("greeting %q", out)
		}
	})
}

// handshakeGo is what a client sends to reach the transmission phase;
// handshakeStructured also negotiates structured replies and
// base:allocation.
var (
	handshakeGo         = append(be.AppendUint32(nil, flagCFixedNewstyle|flagCNoZeroes), optionBytes(optGo, infoBytes(""))...)
	handshakeStructured = bytes.Join([][]byte{be.AppendUint32(nil, flagCFixedNewstyle|flagCNoZeroes), optionBytes(optStructuredReply, nil),
		optionBytes(optSetMetaContext, metaBytes("", metaBaseAllocation)), optionBytes(optGo, infoBytes(""))}, nil)
)

func FuzzRequests(f *testing.F) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(cat(requestBytes(cmdRead, 0, 1, 0, 4096), requestBytes(cmdRead, 1, 2, fuzzSize-1, 1), requestBytes(cmdRead, 0, 3, fuzzSize, 0)), false)
	f.Add(cat(requestBytes(cmdRead, 0, 1, fuzzSize-1, 2), requestBytes(cmdRead, 0, 2, 1<<63, 1<<31), requestBytes(cmdRead, 4, 3, 0, 1)), true)
	f.Add(cat(requestBytes(cmdWrite, 0, 1, 0, 5), []byte("hello"), requestBytes(cmdFlush, 0, 2, 0, 0), requestBytes(cmdTrim, 0, 3, 0, 512),
		requestBytes(cmdWriteZeroes, 0, 4, 0, 512), requestBytes(5, 0, 5, 0, 512), requestBytes(7, 0, 6, 0, 512)), false)
	f.Add(cat(requestBytes(cmdRead, 0, 1, 0, 100), requestBytes(cmdDisc, 0, 2, 0, 0), requestBytes(cmdRead, 0, 3, 0, 100)), true)
	f.Add(cat(requestBytes(cmdWrite, 0, 1, 0, MaxRequest+1)), true)
	f.Add(cat(requestBytes(cmdBlockStatus, 0, 1, 100, 300000), requestBytes(cmdBlockStatus, cmdFlagReqOne, 2, 70000, 1), requestBytes(cmdRead, 0, 3, 65000, 1000),
		requestBytes(cmdBlockStatus, 0, 4, fuzzSize, 1), requestBytes(cmdBlockStatus, 0, 5, 0, 0), requestBytes(cmdRead, 0, 6, 0, 0), requestBytes(cmdFlush, 0, 7, 0, 0)), true)
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, in []byte, structured bool) {
		in = append(append([]byte(nil), in...), requestBytes(cmdDisc, 0, 0, 0, 0)...)
		m := modelRequests(in, structured)
		hs := handshakeGo
		if structured {
			hs = handshakeStructured
		}
		out := fuzzConn(t, append(append([]byte(nil), hs...), in...))
		if err := m.check(out); err != nil {
			t.Fatalf("%v\nrequests % x", err, in)
		}
	})
}

// requestModel is what each request of a stream deserves, by handle, and
// how many requests of each handle there are.
type requestModel struct {
	structured bool
	want       map[uint64]modelReply
	count      map[uint64]int
	ambiguous  bool // a handle repeats with another answer: no telling which is which
}

type modelReply struct {
	cmd         uint16
	errno       uint32
	off, length uint64 // of a read or block status that succeeds
	one         bool   // block status of one extent
}

func modelRequests(in []byte, structured bool) requestModel {
	m := requestModel{structured: structured, want: map[uint64]modelReply{}, count: map[uint64]int{}}
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
		r := modelReply{cmd: typ}
		outside := off > fuzzSize || off+length > fuzzSize
		switch typ {
		case cmdDisc:
			return m
		case cmdRead:
			if flags&^cmdFlagFUA != 0 || length > MaxRequest || outside {
				r.errno = errInval
			} else {
				r.off, r.length = off, length
			}
		case cmdBlockStatus:
			if !structured || flags&^(cmdFlagFUA|cmdFlagReqOne) != 0 || length == 0 || outside {
				r.errno = errInval
			} else {
				r.off, r.length, r.one = off, length, flags&cmdFlagReqOne != 0
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
// replies of the handshake up to NBD_OPT_GO's, then replies, each of which
// must be the one its request deserves: structured ones for reads and
// block status once negotiated, simple ones otherwise. However the stream
// ends (NBD_CMD_DISC, EOF, a fatal error), the requests before the end get
// their replies first.
func (m requestModel) check(out []byte) error {
	greeting := 18 + 3*20 + 12 + 14 // hello, NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE, NBD_REP_ACK
	if m.structured {
		greeting += 20 + 20 + 4 + len(metaBaseAllocation) + 20 // NBD_REP_ACK, NBD_REP_META_CONTEXT, NBD_REP_ACK
	}
	ack := be.AppendUint32(be.AppendUint32(be.AppendUint64(nil, optReplyMagic), optGo), repAck)
	if len(out) < greeting || !bytes.Equal(out[greeting-20:greeting], be.AppendUint32(ack, 0)) {
		return fmt.Errorf("handshake % x", out[:min(len(out), greeting)])
	}
	if m.ambiguous {
		return nil
	}
	out = out[greeting:]
	for len(out) > 0 {
		if len(out) < 4 {
			return fmt.Errorf("truncated reply % x", out)
		}
		var err error
		switch mg := be.Uint32(out); mg {
		case simpleReplyMagic:
			out, err = m.simple(out)
		case chunkReplyMagic:
			out, err = m.chunk(out)
		default:
			return fmt.Errorf("reply magic %#x", mg)
		}
		if err != nil {
			return err
		}
	}
	for h, n := range m.count {
		if n != 0 {
			return fmt.Errorf("%d requests of handle %d without a reply before the disconnect", n, h)
		}
	}
	return nil
}

// take finds what the request of handle deserves and counts its reply.
func (m requestModel) take(handle uint64) (modelReply, error) {
	w, ok := m.want[handle]
	if !ok || m.count[handle] == 0 {
		return w, fmt.Errorf("reply for handle %d, which was not asked for or was answered already", handle)
	}
	m.count[handle]--
	return w, nil
}

// checkData requires data to be the export's bytes at off.
func checkData(data []byte, off uint64) error {
	h := holes{size: fuzzSize}
	want := make([]byte, len(data))
	h.ReadAt(want, int64(off))
	if !bytes.Equal(data, want) {
		return fmt.Errorf("the read at %d is wrong", off)
	}
	return nil
}

func (m requestModel) simple(out []byte) ([]byte, error) {
	if len(out) < replyHeaderLen {
		return nil, fmt.Errorf("truncated reply % x", out)
	}
	errno, handle := be.Uint32(out[4:]), be.Uint64(out[8:])
	out = out[replyHeaderLen:]
	w, err := m.take(handle)
	if err != nil {
		return nil, err
	}
	if m.structured && (w.cmd == cmdRead || w.cmd == cmdBlockStatus) {
		return nil, fmt.Errorf("handle %d: a simple reply to command %d after structured replies were negotiated", handle, w.cmd)
	}
	if errno != w.errno {
		return nil, fmt.Errorf("handle %d: error %d, want %d", handle, errno, w.errno)
	}
	if w.cmd == cmdBlockStatus && errno == 0 {
		return nil, fmt.Errorf("handle %d: a simple reply to a block status", handle)
	}
	if errno == 0 && w.length > 0 {
		if uint64(len(out)) < w.length {
			return nil, fmt.Errorf("handle %d: %d bytes of data, want %d", handle, len(out), w.length)
		}
		if err := checkData(out[:w.length], w.off); err != nil {
			return nil, fmt.Errorf("handle %d: %w", handle, err)
		}
		out = out[w.length:]
	}
	return out, nil
}

func (m requestModel) chunk(out []byte) ([]byte, error) {
	if len(out) < chunkHeaderLen {
		return nil, fmt.Errorf("truncated chunk % x", out)
	}
	flags, typ, handle, n := be.Uint16(out[4:]), be.Uint16(out[6:]), be.Uint64(out[8:]), uint64(be.Uint32(out[16:]))
	out = out[chunkHeaderLen:]
	if uint64(len(out)) < n {
		return nil, fmt.Errorf("handle %d: chunk of %d bytes, %d sent", handle, n, len(out))
	}
	payload := out[:n]
	out = out[n:]
	w, err := m.take(handle)
	if err != nil {
		return nil, err
	}
	var want []byte
	wantType := uint16(replyTypeNone)
	switch {
	case !m.structured || w.cmd != cmdRead && w.cmd != cmdBlockStatus:
		return nil, fmt.Errorf("handle %d: a structured reply to command %d", handle, w.cmd)
	case w.errno != 0:
		wantType, want = replyTypeError, be.AppendUint16(be.AppendUint32(nil, w.errno), 0)
	case w.cmd == cmdBlockStatus:
		wantType, want = replyTypeBlockStatus, append(be.AppendUint32(nil, baseAllocationID), statusBytes(wantExtents(int64(w.off), int64(w.length), w.one))...)
	case w.length > 0:
		if len(payload) < 8 || be.Uint64(payload) != w.off {
			return nil, fmt.Errorf("handle %d: data chunk % x, want offset %d", handle, payload[:min(len(payload), 8)], w.off)
		}
		if err := checkData(payload[8:], w.off); err != nil || uint64(len(payload)-8) != w.length {
			return nil, fmt.Errorf("handle %d: %d bytes of data, want %d: %v", handle, len(payload)-8, w.length, err)
		}
		wantType, want = replyTypeOffsetData, payload
	}
	if flags != replyFlagDone || typ != wantType || !bytes.Equal(payload, want) {
		return nil, fmt.Errorf("handle %d: chunk flags %#x type %#x payload % x, want type %#x payload % x", handle, flags, typ, payload, wantType, want)
	}
	return out, nil
}
