package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests speak the protocol with this small client, written from
// doc/proto.md like the server, so that they can also break it on purpose.
// qemu's client (qemu_test.go) is the independent oracle.

type client struct {
	nc net.Conn
	r  *bufio.Reader
}

func dial(t testing.TB, network, addr string) *client {
	t.Helper()
	nc, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{nc: nc, r: bufio.NewReader(nc)}
}

// hello reads the server's greeting and returns its handshake flags.
func (c *client) hello() (uint16, error) {
	var b [18]byte
	if _, err := io.ReadFull(c.r, b[:]); err != nil {
		return 0, err
	}
	if be.Uint64(b[0:]) != nbdMagic || be.Uint64(b[8:]) != optMagic {
		return 0, fmt.Errorf("greeting % x", b)
	}
	return be.Uint16(b[16:]), nil
}

func (c *client) write(b []byte) error {
	_, err := c.nc.Write(b)
	return err
}

func (c *client) flags(f uint32) error { return c.write(be.AppendUint32(nil, f)) }

func optionBytes(opt uint32, data []byte) []byte {
	b := be.AppendUint64(nil, optMagic)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func (c *client) option(opt uint32, data []byte) error { return c.write(optionBytes(opt, data)) }

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *client) optReply() (optReply, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return optReply{}, err
	}
	if m := be.Uint64(h[0:]); m != optReplyMagic {
		return optReply{}, fmt.Errorf("option reply magic %#x", m)
	}
	r := optReply{opt: be.Uint32(h[8:]), typ: be.Uint32(h[12:]), data: make([]byte, be.Uint32(h[16:]))}
	_, err := io.ReadFull(c.r, r.data)
	return r, err
}

func infoBytes(name string, infos ...uint16) []byte {
	b := be.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = be.AppendUint16(b, i)
	}
	return b
}

// info sends NBD_OPT_INFO or NBD_OPT_GO and collects the NBD_REP_INFO
// replies by type, up to the final reply, whose type it returns.
func (c *client) info(opt uint32, name string, infos ...uint16) (map[uint16][]byte, optReply, error) {
	if err := c.option(opt, infoBytes(name, infos...)); err != nil {
		return nil, optReply{}, err
	}
	got := map[uint16][]byte{}
	for {
		r, err := c.optReply()
		if err != nil {
			return nil, r, err
		}
		if r.opt != opt {
			return nil, r, fmt.Errorf("reply to option %d, want %d", r.opt, opt)
		}
		if r.typ != repInfo {
			return got, r, nil
		}
		if len(r.data) < 2 {
			return nil, r, fmt.Errorf("NBD_REP_INFO of %d bytes", len(r.data))
		}
		got[be.Uint16(r.data)] = r.data[2:]
	}
}

// handshake runs a fixed newstyle handshake and NBD_OPT_GO for the default
// export and returns the export's size and transmission flags.
func (c *client) handshake() (uint64, uint16, error) {
	if _, err := c.hello(); err != nil {
		return 0, 0, err
	}
	if err := c.flags(flagCFixedNewstyle | flagCNoZeroes); err != nil {
		return 0, 0, err
	}
	infos, final, err := c.info(optGo, "", infoBlockSize)
	if err != nil {
		return 0, 0, err
	}
	if final.typ != repAck {
		return 0, 0, fmt.Errorf("NBD_OPT_GO: reply %#x %q", final.typ, final.data)
	}
	e := infos[infoExport]
	if len(e) != 10 {
		return 0, 0, fmt.Errorf("NBD_INFO_EXPORT of %d bytes", len(e))
	}
	return be.Uint64(e), be.Uint16(e[8:]), nil
}

func requestBytes(typ, flags uint16, handle, off uint64, length uint32) []byte {
	b := be.AppendUint32(nil, requestMagic)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, handle)
	b = be.AppendUint64(b, off)
	return be.AppendUint32(b, length)
}

func (c *client) request(typ, flags uint16, handle, off uint64, length uint32) error {
	return c.write(requestBytes(typ, flags, handle, off, length))
}

type reply struct {
	errno  uint32
	handle uint64
	data   []byte
}

// reply reads one simple reply; dataLen says how many bytes of data follow
// a successful reply to the request of a handle.
func (c *client) reply(dataLen func(handle uint64) int) (reply, error) {
	var h [16]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return reply{}, err
	}
	if m := be.Uint32(h[0:]); m != simpleReplyMagic {
		return reply{}, fmt.Errorf("reply magic %#x", m)
	}
	r := reply{errno: be.Uint32(h[4:]), handle: be.Uint64(h[8:])}
	if r.errno == 0 {
		r.data = make([]byte, dataLen(r.handle))
		if _, err := io.ReadFull(c.r, r.data); err != nil {
			return r, err
		}
	}
	return r, nil
}

// read reads length bytes at off with one request and waits for its reply.
func (c *client) read(handle, off uint64, length uint32) (reply, error) {
	if err := c.request(cmdRead, 0, handle, off, length); err != nil {
		return reply{}, err
	}
	r, err := c.reply(func(uint64) int { return int(length) })
	if err == nil && r.handle != handle {
		err = fmt.Errorf("reply for handle %d, want %d", r.handle, handle)
	}
	return r, err
}

// closed requires the server to close the connection: a read ends, with
// EOF or a reset, whatever the server had sent before.
func (c *client) closed(t testing.TB) {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server did not close the connection within a minute")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// pattern is an export of any size whose every byte is known without
// storing it.
type pattern int64

func patternByte(off int64) byte { return byte(off*7 + off>>16 + off>>24) }

func (p pattern) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(b) && off+int64(n) < int64(p) {
		b[n] = patternByte(off + int64(n))
		n++
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func checkPattern(t testing.TB, data []byte, off int64) {
	t.Helper()
	for i, b := range data {
		if b != patternByte(off+int64(i)) {
			t.Fatalf("byte %d of the read at %d is %#x, want %#x", i, off, b, patternByte(off+int64(i)))
		}
	}
}

// faulty wraps an export: reads that touch [from, to) fail, or panic.
type faulty struct {
	io.ReaderAt
	from, to int64
	panics   bool
}

var errFault = errors.New("injected fault")

func (f faulty) ReadAt(b []byte, off int64) (int, error) {
	if off < f.to && off+int64(len(b)) > f.from {
		if f.panics {
			var s []byte
			_ = s[off] // a real runtime panic
		}
		return 0, errFault
	}
	return f.ReaderAt.ReadAt(b, off)
}

// counting wraps an export, counting its reads, and holding each until
// gate is closed when gate is not nil.
type counting struct {
	io.ReaderAt
	calls, active, peak atomic.Int64
	gate                chan struct{}
	once                sync.Once
}

// open lets the reads held at the gate go, once (a test defers it too, so
// that a failure does not leave reads held).
func (c *counting) open() { c.once.Do(func() { close(c.gate) }) }

func (c *counting) ReadAt(b []byte, off int64) (int, error) {
	c.calls.Add(1)
	n := c.active.Add(1)
	defer c.active.Add(-1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if c.gate != nil {
		<-c.gate
	}
	return c.ReaderAt.ReadAt(b, off)
}

// errLog collects what OnError reports.
type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errLog) add(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *errLog) all() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// find returns the first error that matches target (errors.Is) or, when
// target is nil, any error.
func (l *errLog) find(target error) error {
	for _, err := range l.all() {
		if target == nil || errors.Is(err, target) {
			return err
		}
	}
	return nil
}

// waitFor polls cond until it holds, failing the test after a minute: the
// bound is only there so that a bug fails instead of hanging.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("still waiting, after a minute, for %s", what)
		}
	}
}

type testServer struct {
	*Server
	network, addr string
	errs          *errLog
	panics        bool // the export panics on purpose: ErrInternal is expected
	cancel        context.CancelFunc
	done          chan error
}

// serve starts a server for r on a unix socket ("unix") or a loopback TCP
// port ("tcp"); it stops when the test ends, and must stop cleanly.
func serve(t testing.TB, network string, r io.ReaderAt, size int64, opts ...Option) *testServer {
	t.Helper()
	ts := &testServer{network: network, errs: &errLog{}, done: make(chan error, 1)}
	s, err := New(r, size, append([]Option{OnError(ts.errs.add)}, opts...)...)
	must(t, err)
	ts.Server = s
	var ln net.Listener
	if network == "unix" {
		// Socket paths are short (108 bytes): not under t.TempDir's long name.
		dir, err := os.MkdirTemp("", "nbd")
		must(t, err)
		t.Cleanup(func() { os.RemoveAll(dir) })
		ln, err = net.Listen("unix", filepath.Join(dir, "s"))
		must(t, err)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
	}
	ts.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop ends Serve and requires it to return nil, with no connection left.
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		if ok {
			close(ts.done)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Serve did not return within two minutes of its context's end")
	}
	if a := ts.Stats().Active; a != 0 {
		t.Errorf("%d connections still active after Serve returned", a)
	}
	if err := ts.errs.find(ErrInternal); err != nil && !ts.panics {
		t.Errorf("internal error reported: %v", err)
	}
}

func (ts *testServer) dial(t testing.TB) *client { return dial(t, ts.network, ts.addr) }

// connect dials and runs the handshake.
func (ts *testServer) connect(t testing.TB) *client {
	t.Helper()
	c := ts.dial(t)
	_, _, err := c.handshake()
	must(t, err)
	return c
}

var syscallEMFILE = syscall.EMFILE
