package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

const testSize = 4<<20 + 123 // not a multiple of any block size

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    io.ReaderAt
		size int64
		opts []Option
	}{
		{"no export", nil, 1, nil},
		{"negative size", pattern(1), -1, nil},
		{"no handshake deadline", pattern(1), 1, []Option{WithHandshakeTimeout(0)}},
		{"negative write timeout", pattern(1), 1, []Option{WithWriteTimeout(-time.Second)}},
		{"no request in flight", pattern(1), 1, []Option{WithInFlight(0, MaxRequest)}},
		{"preferred block not a power of two", pattern(1), 1, []Option{WithPreferredBlockSize(3000)}},
		{"preferred block too small", pattern(1), 1, []Option{WithPreferredBlockSize(256)}},
		{"preferred block too large", pattern(1), 1, []Option{WithPreferredBlockSize(2 * MaxRequest)}},
		{"long name", pattern(1), 1, []Option{WithName(strings.Repeat("n", 4097))}},
	} {
		if _, err := New(tc.r, tc.size, tc.opts...); err == nil {
			t.Errorf("%s: New accepted it", tc.name)
		}
	}
}

func TestHandshakeOptions(t *testing.T) {
	ts := serve(t, "unix", pattern(testSize), testSize, WithName("disk"), WithDescription("a test disk"), WithPreferredBlockSize(64<<10))
	c := ts.dial(t)
	hf, err := c.hello()
	must(t, err)
	if hf != flagFixedNewstyle|flagNoZeroes {
		t.Errorf("handshake flags %#x", hf)
	}
	must(t, c.flags(flagCFixedNewstyle|flagCNoZeroes))

	expect := func(what string, opt uint32, data []byte, typ uint32) optReply {
		t.Helper()
		must(t, c.option(opt, data))
		r, err := c.optReply()
		must(t, err)
		if r.opt != opt || r.typ != typ {
			t.Fatalf("%s: reply to option %d of type %#x (%q), want option %d type %#x", what, r.opt, r.typ, r.data, opt, typ)
		}
		return r
	}
	r := expect("NBD_OPT_LIST", optList, nil, repServer)
	if want := append(be.AppendUint32(nil, 4), "diska test disk"...); !bytes.Equal(r.data, want) {
		t.Errorf("NBD_REP_SERVER %q, want %q", r.data, want)
	}
	r, err = c.optReply()
	must(t, err)
	if r.typ != repAck {
		t.Errorf("NBD_OPT_LIST ends with %#x", r.typ)
	}
	expect("NBD_OPT_LIST with data", optList, []byte("x"), repErrInvalid)
	expect("NBD_OPT_STARTTLS", optStartTLS, nil, repErrPolicy)
	expect("NBD_OPT_STRUCTURED_REPLY with data", optStructuredReply, []byte{1}, repErrInvalid)
	expect("NBD_OPT_EXTENDED_HEADERS", 11, nil, repErrUnsup)
	expect("unknown option", 0xdeadbeef, []byte("whatever"), repErrUnsup)
	expect("NBD_OPT_INFO of 3 bytes", optInfo, []byte{0, 0, 0}, repErrInvalid)
	expect("NBD_OPT_INFO with a name longer than the data", optInfo, append(be.AppendUint32(nil, 100), 0, 0), repErrInvalid)
	expect("NBD_OPT_INFO with a name length near 2^32", optInfo, append(be.AppendUint32(nil, 0xfffffffe), 0, 0), repErrInvalid)
	expect("NBD_OPT_INFO with a trailing byte", optInfo, append(infoBytes("", infoName), 0), repErrInvalid)
	expect("NBD_OPT_INFO with fewer requests than counted", optInfo, infoBytes("", infoName)[:7], repErrInvalid)
	expect("NBD_OPT_GO for an unknown export", optGo, infoBytes("other"), repErrUnknown)

	for _, name := range []string{"", "disk"} {
		infos, final, err := c.info(optInfo, name, infoName, infoDescription, infoBlockSize, 0x7777)
		must(t, err)
		if final.typ != repAck {
			t.Fatalf("NBD_OPT_INFO %q: final reply %#x %q", name, final.typ, final.data)
		}
		want := map[uint16][]byte{
			infoExport:      be.AppendUint16(be.AppendUint64(nil, testSize), flagHasFlags|flagReadOnly|flagSendFlush|flagCanMultiConn),
			infoName:        []byte("disk"),
			infoDescription: []byte("a test disk"),
			infoBlockSize:   be.AppendUint32(be.AppendUint32(be.AppendUint32(nil, 1), 64<<10), 32<<20),
		}
		if len(infos) != len(want) {
			t.Errorf("NBD_OPT_INFO %q: %d infos, want %d", name, len(infos), len(want))
		}
		for typ, w := range want {
			if !bytes.Equal(infos[typ], w) {
				t.Errorf("NBD_OPT_INFO %q: info %d is % x, want % x", name, typ, infos[typ], w)
			}
		}
	}
	// Without requests, the export and the block sizes still come.
	infos, final, err := c.info(optGo, "disk")
	must(t, err)
	if final.typ != repAck || len(infos) != 2 || infos[infoExport] == nil || infos[infoBlockSize] == nil {
		t.Fatalf("NBD_OPT_GO: %#x, infos %v", final.typ, infos)
	}
	r2, err := c.read(1, testSize-10, 10)
	must(t, err)
	if r2.errno != 0 {
		t.Fatalf("read: error %d", r2.errno)
	}
	checkPattern(t, r2.data, testSize-10)
	must(t, c.request(cmdDisc, 0, 2, 0, 0))
	c.closed(t)
	if err := ts.errs.find(nil); err != nil {
		t.Errorf("error reported for a well-behaved client: %v", err)
	}
}

func TestExportName(t *testing.T) {
	ts := serve(t, "tcp", pattern(testSize), testSize, WithName("disk"))
	for _, tc := range []struct {
		name     string
		flags    uint32
		zeroes   bool
		accepted bool
	}{
		{"", flagCFixedNewstyle | flagCNoZeroes, false, true},
		{"disk", flagCFixedNewstyle, true, true},
		{"", 0, true, true}, // plain newstyle: the oldest clients
		{"nope", flagCFixedNewstyle, true, false},
	} {
		c := ts.dial(t)
		_, err := c.hello()
		must(t, err)
		must(t, c.flags(tc.flags))
		must(t, c.option(optExportName, []byte(tc.name)))
		if !tc.accepted {
			c.closed(t)
			continue
		}
		want := be.AppendUint16(be.AppendUint64(nil, testSize), transmissionFlags)
		if tc.zeroes {
			want = append(want, make([]byte, 124)...)
		}
		got := make([]byte, len(want))
		_, err = io.ReadFull(c.r, got)
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Errorf("NBD_OPT_EXPORT_NAME %q, flags %d: % x, want % x", tc.name, tc.flags, got, want)
		}
		r, err := c.read(7, 1000, 5000)
		must(t, err)
		checkPattern(t, r.data, 1000)
	}
	waitFor(t, "the refused connection's error", func() bool { return ts.errs.find(nil) != nil })
	if err := ts.errs.find(nil); !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("reported %v", err)
	}
}

func TestAbort(t *testing.T) {
	ts := serve(t, "unix", pattern(testSize), testSize)
	c := ts.dial(t)
	_, err := c.hello()
	must(t, err)
	must(t, c.flags(flagCFixedNewstyle))
	must(t, c.option(optAbort, []byte("ignored")))
	r, err := c.optReply()
	must(t, err)
	if r.opt != optAbort || r.typ != repAck {
		t.Errorf("NBD_OPT_ABORT: %+v", r)
	}
	c.closed(t)
	// A client that aborts and hangs up at once is no error either.
	c = ts.dial(t)
	_, err = c.hello()
	must(t, err)
	must(t, c.write(append(be.AppendUint32(nil, 0), optionBytes(optAbort, nil)...)))
	c.nc.Close()
	waitFor(t, "both connections to end", func() bool { return ts.Stats().Active == 0 })
	if err := ts.errs.find(nil); err != nil {
		t.Errorf("reported %v", err)
	}
}

func TestRequests(t *testing.T) {
	const big = 3 * MaxRequest // a large export costs nothing: its bytes are computed
	ts := serve(t, "unix", pattern(big), big)
	c := ts.connect(t)
	for i, tc := range []struct {
		typ, flags uint16
		off        uint64
		length     uint32
		payload    []byte
		errno      uint32
	}{
		{typ: cmdRead, off: 0, length: 1},
		{typ: cmdRead, off: big - 1, length: 1},
		{typ: cmdRead, off: 12345, length: MaxRequest},
		{typ: cmdRead, off: big, length: 0},
		{typ: cmdRead, flags: cmdFlagFUA, off: 512, length: 512},
		{typ: cmdRead, off: 0, length: MaxRequest + 1, errno: errInval},
		{typ: cmdRead, off: big, length: 1, errno: errInval},
		{typ: cmdRead, off: big - 10, length: 11, errno: errInval},
		{typ: cmdRead, off: 1<<64 - 1, length: 2, errno: errInval},
		{typ: cmdRead, off: 1 << 63, length: 0, errno: errInval},
		{typ: cmdRead, flags: 1 << 2, off: 0, length: 512, errno: errInval}, // NBD_CMD_FLAG_DF: no structured replies
		{typ: cmdWrite, off: 0, length: 4096, payload: make([]byte, 4096), errno: errPerm},
		{typ: cmdWrite, off: 0, length: 0, errno: errPerm},
		{typ: cmdWrite, off: big, length: 3, payload: []byte{1, 2, 3}, errno: errPerm},
		{typ: cmdTrim, off: 0, length: 4096, errno: errPerm},
		{typ: cmdWriteZeroes, off: 0, length: 4096, errno: errPerm},
		{typ: cmdFlush},
		{typ: cmdFlush, flags: cmdFlagFUA},
		{typ: cmdFlush, flags: 1 << 1, errno: errInval},
		{typ: 5, off: 0, length: 4096, errno: errInval}, // NBD_CMD_CACHE, not advertised
		{typ: 7, off: 0, length: 4096, errno: errInval}, // NBD_CMD_BLOCK_STATUS without a context
		{typ: 0xffff, errno: errInval},
	} {
		handle := uint64(1000 + i)
		must(t, c.write(append(requestBytes(tc.typ, tc.flags, handle, tc.off, tc.length), tc.payload...)))
		r, err := c.reply(func(uint64) int {
			if tc.typ == cmdRead {
				return int(tc.length)
			}
			return 0
		})
		must(t, err)
		if r.handle != handle || r.errno != tc.errno {
			t.Fatalf("request %d (%+v): reply handle %d error %d, want %d", i, tc, r.handle, r.errno, tc.errno)
		}
		if r.errno == 0 && tc.typ == cmdRead {
			checkPattern(t, r.data, int64(tc.off))
		}
	}
	st := ts.Stats()
	if st.Requests != 22 || st.Rejected != 15 || st.BytesRead != 2+MaxRequest+512 || st.ReadErrors != 0 {
		t.Errorf("stats %+v", st)
	}
	must(t, c.request(cmdDisc, 0, 99, 0, 0))
	c.closed(t)
	if err := ts.errs.find(nil); err != nil {
		t.Errorf("reported %v", err)
	}
}

// TestPipelined sends many reads at once, as qemu does, and matches the
// replies, which may come in any order, by handle.
func TestPipelined(t *testing.T) {
	ts := serve(t, "unix", pattern(testSize), testSize, WithInFlight(4, MaxRequest))
	c := ts.connect(t)
	rng := rand.New(rand.NewPCG(1, 2))
	type req struct{ off, length uint64 }
	reqs := map[uint64]req{}
	var batch []byte
	for h := range uint64(300) {
		l := 1 + rng.Uint64N(256<<10)
		o := rng.Uint64N(testSize - l + 1)
		reqs[h] = req{o, l}
		batch = append(batch, requestBytes(cmdRead, 0, h, o, uint32(l))...)
	}
	go c.write(batch) // the server may wait for replies to be read before it reads on
	for range reqs {
		r, err := c.reply(func(h uint64) int { return int(reqs[h].length) })
		must(t, err)
		q, ok := reqs[r.handle]
		if !ok || r.errno != 0 {
			t.Fatalf("reply for handle %d, error %d", r.handle, r.errno)
		}
		checkPattern(t, r.data, int64(q.off))
		delete(reqs, r.handle)
	}
}

func TestReadErrors(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panics=%v", panics), func(t *testing.T) {
			ts := serve(t, "unix", faulty{pattern(testSize), 1 << 20, 1<<20 + 4096, panics}, testSize)
			ts.panics = panics
			c := ts.connect(t)
			for i, tc := range []struct {
				off, length uint64
				fails       bool
			}{
				{0, 1 << 20, false},
				{1<<20 - 1, 2, true},
				{1<<20 + 4095, 1, true},
				{1<<20 + 4096, 4096, false},
				{0, 2 << 20, true},
				{1<<20 - 4096, 4096, false},
			} {
				r, err := c.read(uint64(i), tc.off, uint32(tc.length))
				must(t, err)
				if (r.errno == errIO) != tc.fails || (r.errno != 0 && r.errno != errIO) {
					t.Fatalf("read %d bytes at %d: error %d", tc.length, tc.off, r.errno)
				}
				if r.errno == 0 {
					checkPattern(t, r.data, int64(tc.off))
				}
			}
			if st := ts.Stats(); st.ReadErrors != 3 {
				t.Errorf("stats %+v", st)
			}
			want := errFault
			if panics {
				want = ErrInternal
			}
			err := ts.errs.find(want)
			if err == nil || !strings.Contains(err.Error(), "at offset 1048575") {
				t.Errorf("reported %v, want %v for the read at 1048575", ts.errs.all(), want)
			}
		})
	}
}

// TestHostileHandshakes sends what no honest client sends before the
// transmission phase: each gets its connection closed, and an error.
func TestHostileHandshakes(t *testing.T) {
	ts := serve(t, "unix", pattern(testSize), testSize)
	hdr := func(magic uint64, opt, length uint32) []byte {
		return be.AppendUint32(be.AppendUint32(be.AppendUint64(nil, magic), opt), length)
	}
	for _, tc := range []struct {
		name, sent string
		after      []byte
		hangUp     bool
		want       string
	}{
		{"unknown client flags", "", be.AppendUint32(nil, 1<<2), false, "unknown client flags"},
		{"garbage instead of an option", "\x00\x00\x00\x03", []byte("GET / HTTP/1.1\r\n\r\n"), false, "option magic"},
		{"an option of 4 GiB", "\x00\x00\x00\x03", hdr(optMagic, optGo, 0xffffffff), false, "more than 65536"},
		{"an option of 64 KiB and a byte", "\x00\x00\x00\x03", hdr(optMagic, 0xdead, 64<<10+1), false, "more than 65536"},
		{"a truncated option", "\x00\x00\x00\x03", append(hdr(optMagic, optGo, 100), 1, 2, 3), true, "unexpected EOF"},
		{"a truncated option header", "\x00\x00\x00\x03", hdr(optMagic, optGo, 100)[:10], true, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ts.errs.all())
			c := ts.dial(t)
			_, err := c.hello()
			must(t, err)
			must(t, c.write(append([]byte(tc.sent), tc.after...)))
			if tc.hangUp {
				c.nc.(*net.UnixConn).CloseWrite()
			}
			c.closed(t)
			waitFor(t, "the error", func() bool { return len(ts.errs.all()) > before })
			err = ts.errs.all()[before]
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("reported %v, want %q", err, tc.want)
			}
			if !tc.hangUp && !errors.Is(err, ErrProtocol) {
				t.Errorf("%v is not ErrProtocol", err)
			}
		})
	}
}

func TestHostileRequests(t *testing.T) {
	ts := serve(t, "unix", pattern(testSize), testSize)
	for _, tc := range []struct {
		name string
		sent []byte
		want string
	}{
		{"garbage magic", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n"), "request magic"},
		{"a write of 32 MiB and a byte", requestBytes(cmdWrite, 0, 1, 0, MaxRequest+1), "write of 33554433 bytes"},
		{"a truncated write", append(requestBytes(cmdWrite, 0, 1, 0, 100), 1, 2), "unexpected EOF"},
		{"a truncated request", requestBytes(cmdRead, 0, 1, 0, 100)[:20], "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ts.errs.all())
			c := ts.connect(t)
			must(t, c.write(tc.sent))
			c.nc.(*net.UnixConn).CloseWrite()
			c.closed(t)
			waitFor(t, "the error", func() bool { return len(ts.errs.all()) > before })
			if err := ts.errs.all()[before]; !strings.Contains(err.Error(), tc.want) {
				t.Errorf("reported %v, want %q", err, tc.want)
			}
		})
	}
}

// TestSlowHandshake: a client that never ends its handshake, sending
// nothing or a byte now and then, is cut off at the handshake deadline.
func TestSlowHandshake(t *testing.T) {
	ts := serve(t, "tcp", pattern(testSize), testSize, WithHandshakeTimeout(300*time.Millisecond))
	silent := ts.dial(t)
	_, err := silent.hello()
	must(t, err)
	dribbler := ts.dial(t)
	_, err = dribbler.hello()
	must(t, err)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		msg := append(be.AppendUint32(nil, flagCFixedNewstyle), optionBytes(optList, nil)...)
		for i := 0; ; i = (i + 1) % len(msg) {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if dribbler.write(msg[i:i+1]) != nil {
				return
			}
		}
	}()
	silent.closed(t)
	dribbler.closed(t)
	waitFor(t, "two errors", func() bool { return len(ts.errs.all()) == 2 })
	for _, err := range ts.errs.all() {
		if !strings.Contains(err.Error(), "handshake not finished within 300ms") {
			t.Errorf("reported %v", err)
		}
	}
}

// TestStalledClient: a client that sends reads and never reads a reply
// gets no more than the in-flight bounds out of the server: while the
// export is slow to answer, and once it answers but the replies fill the
// socket.
func TestStalledClient(t *testing.T) {
	export := &counting{ReaderAt: pattern(testSize), gate: make(chan struct{})}
	defer export.open()
	ts := serve(t, "unix", export, testSize, WithInFlight(3, MaxRequest), WithShutdownGrace(100*time.Millisecond))
	c := ts.connect(t)
	// 560 KB of requests, more than the socket buffers hold, for 4 KiB
	// each: were the bounds broken, the test would still not take much.
	const n = 20000
	var batch []byte
	for h := range uint64(n) {
		batch = append(batch, requestBytes(cmdRead, 0, h, h*4096%(4<<20), 4096)...)
	}
	write := func() {
		t.Helper()
		c.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		written, err := c.nc.Write(batch)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("wrote %d of %d bytes of requests: %v", written, len(batch), err)
		}
		batch = batch[written:]
	}
	write()
	waitFor(t, "3 reads to start", func() bool { return export.active.Load() == 3 })
	// The server read 3 requests and the one that waits for a place, and
	// nothing more while the reads do not end.
	if calls, st := export.calls.Load(), ts.Stats(); calls != 3 || st.Requests != 4 {
		t.Errorf("%d reads of the export, %d requests read: want 3 and 4", calls, st.Requests)
	}
	// Now the reads end but the replies go nowhere once the socket is full.
	export.open()
	write()
	if calls, peak := export.calls.Load(), export.peak.Load(); calls > n/10 || peak > 3 {
		t.Errorf("%d reads of the export, at most %d at once: want far fewer than %d, at most 3", calls, peak, n)
	}
	ts.stop(t) // within the shutdown grace, though the replies are stuck
}

// TestWriteTimeout: with a write timeout, a client that stops reading
// loses its connection.
func TestWriteTimeout(t *testing.T) {
	ts := serve(t, "unix", pattern(MaxRequest), MaxRequest, WithWriteTimeout(200*time.Millisecond))
	c := ts.connect(t)
	for h := range uint64(8) {
		must(t, c.request(cmdRead, 0, h, 0, MaxRequest))
	}
	waitFor(t, "the connection to be dropped", func() bool { return ts.Stats().Active == 0 })
	if err := ts.errs.find(nil); err == nil || !strings.Contains(err.Error(), "writing a reply") {
		t.Errorf("reported %v", ts.errs.all())
	}
}

// TestDisconnectWaits: NBD_CMD_DISC after reads still running gets their
// replies first.
func TestDisconnectWaits(t *testing.T) {
	export := &counting{ReaderAt: pattern(testSize), gate: make(chan struct{})}
	defer export.open()
	ts := serve(t, "unix", export, testSize)
	c := ts.connect(t)
	must(t, c.request(cmdRead, 0, 1, 100, 200))
	must(t, c.request(cmdRead, 0, 2, 300, 400))
	must(t, c.request(cmdDisc, 0, 3, 0, 0))
	waitFor(t, "both reads to start", func() bool { return export.active.Load() == 2 })
	export.open()
	lens := map[uint64]int{1: 200, 2: 400}
	for range 2 {
		r, err := c.reply(func(h uint64) int { return lens[h] })
		must(t, err)
		if r.errno != 0 || len(r.data) != lens[r.handle] {
			t.Fatalf("reply %+v", r)
		}
	}
	c.closed(t)
}

// TestShutdown: when Serve's context ends, clients in every phase are
// disconnected, a read in progress is answered first, and Serve returns.
func TestShutdown(t *testing.T) {
	export := &counting{ReaderAt: pattern(testSize), gate: make(chan struct{})}
	defer export.open()
	ts := serve(t, "tcp", export, testSize)
	greeted := ts.dial(t) // in the handshake
	_, err := greeted.hello()
	must(t, err)
	idle := ts.connect(t)
	busy := ts.connect(t)
	must(t, busy.request(cmdRead, 0, 1, 4096, 8192))
	waitFor(t, "the read to start", func() bool { return export.active.Load() == 1 })
	ts.cancel()
	greeted.closed(t)
	idle.closed(t)
	export.open()
	r, err := busy.reply(func(uint64) int { return 8192 })
	must(t, err)
	if r.errno != 0 {
		t.Fatalf("read in progress at shutdown: error %d", r.errno)
	}
	checkPattern(t, r.data, 4096)
	busy.closed(t)
	ts.stop(t)
	if _, err := net.Dial("tcp", ts.addr); err == nil {
		t.Error("the listener still accepts")
	}
	if err := ts.errs.find(nil); err != nil {
		t.Errorf("reported %v", err)
	}
}

// TestConcurrentClients: clients on several connections at once, each with
// several reads in flight.
func TestConcurrentClients(t *testing.T) {
	ts := serve(t, "tcp", pattern(testSize), testSize)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		c := ts.connect(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				rng := rand.New(rand.NewPCG(uint64(i), 7))
				for j := range 50 {
					l := 1 + rng.Uint64N(128<<10)
					o := rng.Uint64N(testSize - l + 1)
					r, err := c.read(uint64(j), o, uint32(l))
					if err != nil {
						return err
					}
					for k, b := range r.data {
						if b != patternByte(int64(o)+int64(k)) {
							return fmt.Errorf("client %d: byte %d of %d at %d is wrong", i, k, l, o)
						}
					}
				}
				return c.request(cmdDisc, 0, 0, 0, 0)
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	waitFor(t, "the clients to disconnect", func() bool { return ts.Stats().Active == 0 })
	if st := ts.Stats(); st.Connections != 8 || st.Requests != 8*51 {
		t.Errorf("stats %+v", st)
	}
}

// brokenListener fails Accept with a lasting error after a few temporary
// ones.
type brokenListener struct {
	net.Listener
	temporary int
}

func (l *brokenListener) Accept() (net.Conn, error) {
	if l.temporary > 0 {
		l.temporary--
		return nil, &net.OpError{Op: "accept", Err: syscallEMFILE}
	}
	return nil, errors.New("listener broke")
}

func TestServeListenerError(t *testing.T) {
	s, err := New(pattern(1), 1)
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	bl := &brokenListener{Listener: ln, temporary: 3}
	err = s.Serve(context.Background(), bl)
	if err == nil || !strings.Contains(err.Error(), "listener broke") || bl.temporary != 0 {
		t.Fatalf("Serve: %v (%d temporary errors left)", err, bl.temporary)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the listener is not closed: %v", err)
	}
}
