package nbd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
)

// holeBlock is the block size of the holes export: every other block,
// the odd ones, is a hole.
const holeBlock = 64 << 10

func isHole(off int64) bool { return off/holeBlock%2 == 1 }

// holes is an export whose data blocks read as pattern does and whose
// holes read as zeros; allocation is its AllocationFunc, failing or
// panicking when told to.
type holes struct {
	size       int64
	fail, boom atomic.Bool
	zeroRun    atomic.Bool // report an empty run, which is a bug
}

func (h *holes) ReadAt(b []byte, off int64) (int, error) {
	n, err := pattern(h.size).ReadAt(b, off)
	for i := range b[:n] {
		if isHole(off + int64(i)) {
			b[i] = 0
		}
	}
	return n, err
}

func (h *holes) allocation(off, length int64) (int64, bool, error) {
	switch {
	case h.fail.Load():
		return 0, false, errFault
	case h.boom.Load():
		var s []int
		_ = s[off] // a real runtime panic
	case h.zeroRun.Load():
		return 0, false, nil
	}
	return min(holeBlock-off%holeBlock, length), isHole(off), nil
}

// wantExtents is the block status of holes for [off, off+length): one
// descriptor per block, the last one cut at the end.
func wantExtents(off, length int64, one bool) []uint32 {
	var d []uint32
	for end := off + length; off < end; {
		n := min(holeBlock-off%holeBlock, end-off)
		var f uint32
		if isHole(off) {
			f = stateHole | stateZero
		}
		d = append(d, uint32(n), f)
		off += n
		if one {
			break
		}
	}
	return d
}

func metaBytes(name string, queries ...string) []byte {
	b := be.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = be.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

type chunk struct {
	flags, typ uint16
	handle     uint64
	payload    []byte
}

// chunk reads one structured reply chunk.
func (c *client) chunk() (chunk, error) {
	var h [chunkHeaderLen]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return chunk{}, err
	}
	if m := be.Uint32(h[0:]); m != chunkReplyMagic {
		return chunk{}, fmt.Errorf("structured reply magic %#x", m)
	}
	ch := chunk{flags: be.Uint16(h[4:]), typ: be.Uint16(h[6:]), handle: be.Uint64(h[8:])}
	n := be.Uint32(h[16:])
	if n > MaxRequest+8 {
		return ch, fmt.Errorf("chunk of %d bytes", n)
	}
	ch.payload = make([]byte, n)
	_, err := io.ReadFull(c.r, ch.payload)
	return ch, err
}

// optReplies sends an option and collects its replies up to the final
// one, which it returns last.
func (c *client) optReplies(opt uint32, data []byte) ([]optReply, error) {
	if err := c.option(opt, data); err != nil {
		return nil, err
	}
	var all []optReply
	for {
		r, err := c.optReply()
		if err != nil {
			return all, err
		}
		if r.opt != opt {
			return all, fmt.Errorf("reply to option %d, want %d", r.opt, opt)
		}
		all = append(all, r)
		if r.typ != repMetaContext && r.typ != repInfo {
			return all, nil
		}
	}
}

type option struct {
	opt  uint32
	data []byte
}

// negotiate dials and runs a handshake that sends opts in turn, then
// NBD_OPT_GO, and hands the replies of each to check.
func (ts *testServer) negotiate(t *testing.T, check func(opt uint32, replies []optReply), opts ...option) *client {
	t.Helper()
	c := ts.dial(t)
	_, err := c.hello()
	must(t, err)
	must(t, c.flags(flagCFixedNewstyle|flagCNoZeroes))
	for _, o := range append(opts, option{optGo, infoBytes("")}) {
		r, err := c.optReplies(o.opt, o.data)
		must(t, err)
		check(o.opt, r)
	}
	return c
}

func metaContextReply(id uint32) []byte {
	return append(be.AppendUint32(nil, id), metaBaseAllocation...)
}

func TestStructuredReplies(t *testing.T) {
	h := &holes{size: testSize}
	ts := serve(t, "unix", h, testSize, WithName("disk"), WithAllocation(h.allocation))
	c := ts.dial(t)
	_, err := c.hello()
	must(t, err)
	must(t, c.flags(flagCFixedNewstyle|flagCNoZeroes))
	for _, tc := range []struct {
		what string
		opt  uint32
		data []byte
		want []optReply // the data of each reply, by type
	}{
		{"a context before structured replies", optSetMetaContext, metaBytes("", metaBaseAllocation), []optReply{{typ: repErrInvalid}}},
		{"a context list before structured replies", optListMetaContext, metaBytes(""), []optReply{{typ: repErrInvalid}}},
		{"NBD_OPT_STRUCTURED_REPLY with data", optStructuredReply, []byte{0}, []optReply{{typ: repErrInvalid}}},
		{"NBD_OPT_STRUCTURED_REPLY", optStructuredReply, nil, []optReply{{typ: repAck}}},
		{"list everything", optListMetaContext, metaBytes(""), []optReply{{typ: repMetaContext, data: metaContextReply(0)}, {typ: repAck}}},
		{"list the base namespace", optListMetaContext, metaBytes("disk", "base:"), []optReply{{typ: repMetaContext, data: metaContextReply(0)}, {typ: repAck}}},
		{"list another context", optListMetaContext, metaBytes("", "qemu:allocation-depth"), []optReply{{typ: repAck}}},
		{"list for another export", optListMetaContext, metaBytes("other"), []optReply{{typ: repErrUnknown}}},
		{"a query longer than the data", optListMetaContext, metaBytes("", "base:")[:12], []optReply{{typ: repErrInvalid}}},
		{"a query count near 2^32", optSetMetaContext, be.AppendUint32(be.AppendUint32(nil, 0), 0xffffffff), []optReply{{typ: repErrInvalid}}},
		{"a trailing byte", optSetMetaContext, append(metaBytes("", metaBaseAllocation), 0), []optReply{{typ: repErrInvalid}}},
		{"select nothing known", optSetMetaContext, metaBytes("", "qemu:dirty-bitmap:x"), []optReply{{typ: repAck}}},
		{"select base:allocation", optSetMetaContext, metaBytes("disk", "qemu:allocation-depth", metaBaseAllocation),
			[]optReply{{typ: repMetaContext, data: metaContextReply(baseAllocationID)}, {typ: repAck}}},
	} {
		got, err := c.optReplies(tc.opt, tc.data)
		must(t, err)
		if len(got) != len(tc.want) {
			t.Fatalf("%s: %d replies %+v, want %d", tc.what, len(got), got, len(tc.want))
		}
		for i, w := range tc.want {
			if got[i].typ != w.typ || w.typ == repMetaContext && !bytes.Equal(got[i].data, w.data) {
				t.Errorf("%s: reply %d is %#x %q, want %#x %q", tc.what, i, got[i].typ, got[i].data, w.typ, w.data)
			}
		}
	}
	_, final, err := c.info(optGo, "disk")
	must(t, err)
	if final.typ != repAck {
		t.Fatalf("NBD_OPT_GO: %#x %q", final.typ, final.data)
	}

	expectChunk := func(what string, handle uint64, typ uint16, payload []byte) {
		t.Helper()
		ch, err := c.chunk()
		must(t, err)
		if ch.handle != handle || ch.flags != replyFlagDone || ch.typ != typ || !bytes.Equal(ch.payload, payload) {
			t.Fatalf("%s: chunk handle %d flags %#x type %#x payload % x, want handle %d type %#x payload % x",
				what, ch.handle, ch.flags, ch.typ, ch.payload, handle, typ, payload)
		}
	}
	errorChunk := func(errno uint32) []byte { return be.AppendUint16(be.AppendUint32(nil, errno), 0) }
	statusChunk := func(d []uint32) []byte { return append(be.AppendUint32(nil, baseAllocationID), statusBytes(d)...) }

	// A read is one data chunk, holes and all.
	want := make([]byte, 3*holeBlock)
	h.ReadAt(want, holeBlock-50)
	must(t, c.request(cmdRead, 0, 1, holeBlock-50, uint32(len(want))))
	expectChunk("read", 1, replyTypeOffsetData, append(be.AppendUint64(nil, holeBlock-50), want...))
	must(t, c.request(cmdRead, 0, 2, 100, 0))
	expectChunk("empty read", 2, replyTypeNone, nil)
	must(t, c.request(cmdRead, 0, 3, testSize, 1))
	expectChunk("read past the end", 3, replyTypeError, errorChunk(errInval))
	must(t, c.request(cmdRead, 1<<2, 4, 0, 1))
	expectChunk("read with NBD_CMD_FLAG_DF", 4, replyTypeError, errorChunk(errInval))

	for i, tc := range []struct {
		flags       uint16
		off, length int64
	}{
		{0, 0, 4*holeBlock + 5},
		{0, 100, 2 * holeBlock},
		{cmdFlagReqOne, 100, 1 << 20},
		{cmdFlagReqOne | cmdFlagFUA, holeBlock, 3},
		{0, testSize - 1, 1},
		{0, 0, testSize}, // 65 extents
	} {
		handle := uint64(10 + i)
		must(t, c.request(cmdBlockStatus, tc.flags, handle, uint64(tc.off), uint32(tc.length)))
		expectChunk(fmt.Sprintf("block status %+v", tc), handle, replyTypeBlockStatus, statusChunk(wantExtents(tc.off, tc.length, tc.flags&cmdFlagReqOne != 0)))
	}
	for i, tc := range []struct {
		flags       uint16
		off, length uint64
	}{
		{0, testSize, 1},
		{0, testSize - 1, 2},
		{0, 1 << 63, 1},
		{0, 0, 0},
		{1 << 2, 0, 512},
	} {
		handle := uint64(20 + i)
		must(t, c.request(cmdBlockStatus, tc.flags, handle, tc.off, uint32(tc.length)))
		expectChunk(fmt.Sprintf("block status %+v", tc), handle, replyTypeError, errorChunk(errInval))
	}
	// The export fails, reports a run of nothing, panics: that request
	// gets EIO, and the connection goes on.
	ts.panics = true
	for i, fault := range []*atomic.Bool{&h.fail, &h.zeroRun, &h.boom} {
		fault.Store(true)
		must(t, c.request(cmdBlockStatus, 0, uint64(30+i), 0, 4096))
		expectChunk("failing block status", uint64(30+i), replyTypeError, errorChunk(errIO))
		fault.Store(false)
	}
	if err := ts.errs.find(errFault); err == nil {
		t.Error("the failed block status was not reported")
	}
	if err := ts.errs.find(ErrInternal); err == nil {
		t.Error("the panic was not reported as ErrInternal")
	}
	must(t, c.request(cmdBlockStatus, cmdFlagReqOne, 40, 0, 10))
	expectChunk("block status after the faults", 40, replyTypeBlockStatus, statusChunk([]uint32{10, 0}))
	if st := ts.Stats(); st.BlockStatus != 7 || st.ReadErrors != 3 {
		t.Errorf("stats %+v", st)
	}
	must(t, c.request(cmdDisc, 0, 99, 0, 0))
	c.closed(t)
}

// TestBlockStatusCapped: a long run of small alternating extents is
// answered with at most maxExtents of them, from the start.
func TestBlockStatusCapped(t *testing.T) {
	const size = 2 * maxExtents * holeBlock
	h := &holes{size: size}
	ts := serve(t, "tcp", h, size, WithAllocation(h.allocation))
	c := ts.negotiate(t, func(opt uint32, r []optReply) {
		if r[len(r)-1].typ != repAck {
			t.Fatalf("option %d: %+v", opt, r)
		}
	}, option{optStructuredReply, nil}, option{optSetMetaContext, metaBytes("", metaBaseAllocation)})
	must(t, c.request(cmdBlockStatus, 0, 1, 0, size-1))
	ch, err := c.chunk()
	must(t, err)
	if ch.typ != replyTypeBlockStatus || len(ch.payload) != 4+8*maxExtents {
		t.Fatalf("chunk type %#x of %d bytes, want %d", ch.typ, len(ch.payload), 4+8*maxExtents)
	}
	if want := wantExtents(0, maxExtents*holeBlock, false); !bytes.Equal(ch.payload[4:], statusBytes(want)) {
		t.Error("the extents are not the first ones")
	}
}

func statusBytes(d []uint32) []byte {
	var b []byte
	for _, v := range d {
		b = be.AppendUint32(b, v)
	}
	return b
}

// TestNoAllocation: without an AllocationFunc there is no context to
// select, block status is EINVAL, and reads are still structured.
func TestNoAllocation(t *testing.T) {
	ts := serve(t, "unix", pattern(testSize), testSize)
	c := ts.negotiate(t, func(opt uint32, r []optReply) {
		for i, x := range r {
			if x.typ == repMetaContext || i == len(r)-1 && x.typ != repAck {
				t.Fatalf("option %d: %+v, want no context and NBD_REP_ACK", opt, r)
			}
		}
	}, option{optStructuredReply, nil}, option{optListMetaContext, metaBytes("")}, option{optSetMetaContext, metaBytes("", metaBaseAllocation)})
	must(t, c.request(cmdBlockStatus, 0, 1, 0, 512))
	ch, err := c.chunk()
	must(t, err)
	if ch.typ != replyTypeError || be.Uint32(ch.payload) != errInval {
		t.Fatalf("block status without a context: %+v", ch)
	}
	must(t, c.request(cmdRead, 0, 2, 7, 9))
	ch, err = c.chunk()
	must(t, err)
	if ch.typ != replyTypeOffsetData || be.Uint64(ch.payload) != 7 || len(ch.payload) != 17 {
		t.Fatalf("read: %+v", ch)
	}
	checkPattern(t, ch.payload[8:], 7)
	if err := ts.errs.find(nil); err != nil && !errors.Is(err, io.EOF) {
		t.Errorf("reported %v", err)
	}
}
