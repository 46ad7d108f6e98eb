package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// layout allocates the host clusters of a qcow2 image written front to
// back and writes its metadata, so that the result passes qemu-img check
// with no errors and no leaks:
//
//   - cluster 0 is the header, written last;
//   - data clusters, compressed clusters and L2 tables are appended in
//     guest order, each L2 table as soon as its range is complete;
//   - the refcount block of every range of clusters is allocated when the
//     range gets its first cluster, kept in memory until no later write can
//     change it, then written; it counts itself;
//   - the L1 table and the refcount table come last.
//
// Memory is one L2 table, a partial compressed cluster, at most a few
// refcount blocks, the L1 table (at most 32 MiB, by qemu's limit) and the
// refcount table: it does not grow with the amount of data.
type layout struct {
	w           io.WriterAt
	size        int64 // virtual size
	clusterBits uint32
	clusterSize int64
	l2Bits      uint32
	compression uint8
	err         error // sticky: the first error ends the image

	next int64 // the next free cluster

	// Refcounts are 16 bits wide, as qemu writes them.
	perBlock int64               // refcount entries per block
	blocks   map[int64]*refBlock // by range, not yet written
	reftable []uint64            // offset of each range's refcount block

	l1       []uint64
	l2       []byte // the L2 table being filled
	l2Index  int64  // its L1 index, or -1
	l2Filled bool

	// The compressed cluster being packed: compressed data is stored
	// byte after byte, as qemu packs it.
	cur     int64 // its cluster, or -1
	curBuf  []byte
	curFill int64
}

type refBlock struct {
	cluster int64
	counts  []uint16
}

// maxRefcount is the largest 16-bit refcount.
const maxRefcount = 1<<16 - 1

func newLayout(w io.WriterAt, size int64, clusterBits uint32, compression uint8) *layout {
	cs := int64(1) << clusterBits
	l := &layout{
		w:           w,
		size:        size,
		clusterBits: clusterBits,
		clusterSize: cs,
		l2Bits:      clusterBits - 3,
		compression: compression,
		perBlock:    cs * 8 / 16,
		blocks:      map[int64]*refBlock{},
		l2Index:     -1,
		cur:         -1,
	}
	hdr := Header{ClusterBits: clusterBits}
	l.l1 = make([]uint64, hdr.l1EntriesFor(uint64(size)))
	l.alloc(1) // the header
	return l
}

// fail records the first error.
func (l *layout) fail(err error) {
	if l.err == nil {
		l.err = err
	}
}

// alloc returns the first of n new contiguous clusters, each with a
// refcount of one.
func (l *layout) alloc(n int64) int64 {
	start := l.allocRaw(n)
	for c := start; c < start+n; c++ {
		l.incref(c)
	}
	return start
}

// allocRaw returns n new contiguous clusters without counting them.
func (l *layout) allocRaw(n int64) int64 {
	start := l.next
	l.next += n
	return start
}

// incref counts one more reference to cluster c.
func (l *layout) incref(c int64) {
	b := l.block(c / l.perBlock)
	i := c % l.perBlock
	if b.counts[i] == maxRefcount {
		l.fail(fmt.Errorf("qcow2: refcount of cluster %d overflows", c))
		return
	}
	b.counts[i]++
}

// block returns the refcount block of range k, allocating it on first use.
// Its own cluster goes at the end of the file and is counted like any
// other, possibly in the next range.
func (l *layout) block(k int64) *refBlock {
	if b, ok := l.blocks[k]; ok {
		return b
	}
	if k < int64(len(l.reftable)) && l.reftable[k] != 0 {
		// Written already: a refcount may not change after that. The
		// allocation order makes this unreachable; fail loudly if not.
		l.fail(fmt.Errorf("qcow2: internal error: refcount block %d changed after it was written", k))
		return &refBlock{counts: make([]uint16, l.perBlock)}
	}
	for int64(len(l.reftable)) <= k {
		l.reftable = append(l.reftable, 0)
	}
	b := &refBlock{cluster: l.allocRaw(1), counts: make([]uint16, l.perBlock)}
	l.blocks[k] = b
	l.reftable[k] = uint64(b.cluster) << l.clusterBits
	l.incref(b.cluster)
	return b
}

// flushBlocks writes the refcount blocks that no later write can change:
// those of ranges wholly below both the next free cluster and the cluster
// still being packed.
func (l *layout) flushBlocks(all bool) {
	low := l.next
	if l.cur >= 0 {
		low = min(low, l.cur)
	}
	var ready []int64
	for k := range l.blocks {
		if all || (k+1)*l.perBlock <= low {
			ready = append(ready, k)
		}
	}
	if len(ready) == 0 {
		return
	}
	slices.Sort(ready)
	buf := make([]byte, l.clusterSize)
	for _, k := range ready {
		b := l.blocks[k]
		for i, v := range b.counts {
			binary.BigEndian.PutUint16(buf[2*i:], v)
		}
		l.writeAt(buf, b.cluster)
		delete(l.blocks, k)
	}
}

func (l *layout) writeAt(p []byte, cluster int64) {
	if l.err != nil {
		return
	}
	if _, err := l.w.WriteAt(p, cluster<<l.clusterBits); err != nil {
		l.fail(err)
	}
}

// setEntry sets the L2 entry of a guest cluster. Guest clusters come in
// increasing order; a table is written when its range is done.
func (l *layout) setEntry(guestCluster int64, entry uint64) {
	l1Index := guestCluster >> l.l2Bits
	if l1Index != l.l2Index {
		l.flushL2()
		l.l2Index = l1Index
		if l.l2 == nil {
			l.l2 = make([]byte, l.clusterSize)
		}
		clear(l.l2)
	}
	i := guestCluster & (1<<l.l2Bits - 1)
	binary.BigEndian.PutUint64(l.l2[i*8:], entry)
	l.l2Filled = true
}

func (l *layout) flushL2() {
	if !l.l2Filled {
		return
	}
	c := l.alloc(1)
	l.writeAt(l.l2, c)
	l.l1[l.l2Index] = uint64(c)<<l.clusterBits | flagCopied
	l.l2Filled = false
	l.flushBlocks(false)
}

// data stores one uncompressed guest cluster.
func (l *layout) data(guestCluster int64, p []byte) {
	c := l.alloc(1)
	l.writeAt(p, c)
	l.setEntry(guestCluster, uint64(c)<<l.clusterBits|flagCopied)
	l.flushBlocks(false)
}

// zero marks a guest cluster as reading zeros whatever the backing file
// holds there.
func (l *layout) zero(guestCluster int64) {
	l.setEntry(guestCluster, flagZero)
}

// compressed stores the compressed bytes z of one guest cluster, packed
// right after the previous compressed cluster. Like qemu, it continues
// into the next host cluster when that one is free and adjacent, and
// starts a fresh cluster otherwise.
func (l *layout) compressed(guestCluster int64, z []byte) {
	n := int64(len(z))
	if n == 0 || n > l.clusterSize {
		l.fail(fmt.Errorf("qcow2: internal error: %d compressed bytes for a %d-byte cluster", n, l.clusterSize))
		return
	}
	if l.cur < 0 || l.curFill == l.clusterSize || (l.curFill+n > l.clusterSize && l.next != l.cur+1) {
		l.flushCompressed()
		l.startCompressed()
	}
	off := l.cur<<l.clusterBits + l.curFill
	k := copy(l.curBuf[l.curFill:], z)
	l.curFill += int64(k)
	l.incref(l.cur)
	if k < len(z) {
		// Continue into the adjacent cluster; the full one is final.
		l.flushCompressed()
		l.startCompressed()
		l.curFill = int64(copy(l.curBuf, z[k:]))
		l.incref(l.cur)
	}
	sectors := (off+n-1)>>9 - off>>9 // beyond the first one
	csizeShift := 62 - (l.clusterBits - 8)
	l.setEntry(guestCluster, flagCompressed|uint64(sectors)<<csizeShift|uint64(off))
}

func (l *layout) startCompressed() {
	l.cur = l.allocRaw(1)
	if l.curBuf == nil {
		l.curBuf = make([]byte, l.clusterSize)
	}
	clear(l.curBuf)
	l.curFill = 0
}

// flushCompressed writes the cluster being packed, if any.
func (l *layout) flushCompressed() {
	if l.cur < 0 {
		return
	}
	l.writeAt(l.curBuf, l.cur)
	l.cur = -1
	l.flushBlocks(false)
}

// headerFields is what the header says beyond the layout.
type headerFields struct {
	backingFile   string
	backingFormat string
}

// finish writes the remaining tables and the header. The image is
// complete only when finish returns nil.
func (l *layout) finish(hf headerFields) error {
	l.flushL2()
	l.flushCompressed()
	cs := l.clusterSize

	l1Bytes := int64(len(l.l1)) * 8
	var l1Off int64
	if l1Bytes > 0 {
		l1Clusters := (l1Bytes + cs - 1) / cs
		l1Off = l.alloc(l1Clusters) << l.clusterBits
		buf := make([]byte, l1Clusters*cs)
		for i, e := range l.l1 {
			binary.BigEndian.PutUint64(buf[i*8:], e)
		}
		if l.err == nil {
			if _, err := l.w.WriteAt(buf, l1Off); err != nil {
				l.fail(err)
			}
		}
	}

	// The refcount table is contiguous and must list the blocks of every
	// range, its own ranges included: find a size that holds them all.
	rt := int64(1)
	for {
		end, blocks := l.next+rt, int64(len(l.reftable))
		for (end+l.perBlock-1)/l.perBlock > blocks {
			blocks++
			end++
		}
		need := (blocks*8 + cs - 1) / cs
		if need <= rt {
			break
		}
		rt = need
	}
	if rt*cs > maxRefcountTable {
		return fmt.Errorf("qcow2: image too large: refcount table of %d bytes exceeds %d", rt*cs, maxRefcountTable)
	}
	rtCluster := l.alloc(rt)
	if int64(len(l.reftable))*8 > rt*cs {
		return errors.New("qcow2: internal error: refcount table too small")
	}
	buf := make([]byte, rt*cs)
	for i, off := range l.reftable {
		binary.BigEndian.PutUint64(buf[i*8:], off)
	}
	l.writeAt(buf, rtCluster)
	l.flushBlocks(true)

	hdr, err := buildHeader(l, hf, uint64(l1Off), uint64(rtCluster)<<l.clusterBits, uint32(rt))
	if err != nil {
		return err
	}
	l.writeAt(hdr, 0)
	return l.err
}

// buildHeader encodes cluster 0 of a version 3 image: the header (112
// bytes, with the compression type), the backing format extension and the
// backing file name.
func buildHeader(l *layout, hf headerFields, l1Off, rtOff uint64, rtClusters uint32) ([]byte, error) {
	buf := make([]byte, l.clusterSize)
	be := binary.BigEndian
	copy(buf, Magic)
	be.PutUint32(buf[4:], 3)
	be.PutUint32(buf[20:], l.clusterBits)
	be.PutUint64(buf[24:], uint64(l.size))
	be.PutUint32(buf[36:], uint32(len(l.l1)))
	be.PutUint64(buf[40:], l1Off)
	be.PutUint64(buf[48:], rtOff)
	be.PutUint32(buf[56:], rtClusters)
	var incompat uint64
	if l.compression == CompressionZstd {
		incompat |= IncompatCompression
	}
	be.PutUint64(buf[72:], incompat)
	be.PutUint32(buf[96:], 4) // 16-bit refcounts
	be.PutUint32(buf[100:], 112)
	buf[104] = l.compression
	off, err := putExtensions(buf, 112, hf)
	if err != nil {
		return nil, err
	}
	if hf.backingFile != "" {
		be.PutUint64(buf[8:], uint64(off))
		be.PutUint32(buf[16:], uint32(len(hf.backingFile)))
		copy(buf[off:], hf.backingFile)
	}
	return buf, nil
}

// putExtensions writes the backing format extension (when there is a
// backing file) and the end marker at off, then checks that the backing
// file name fits after them in the header cluster. It returns where the
// name goes.
func putExtensions(buf []byte, off int, hf headerFields) (int, error) {
	if hf.backingFile == "" {
		if hf.backingFormat != "" {
			return 0, errors.New("qcow2: backing format without a backing file")
		}
		return off + 8, nil // the end marker is zeros already
	}
	if len(hf.backingFile) > maxBackingNameLen {
		return 0, fmt.Errorf("qcow2: backing file name of %d bytes is longer than %d", len(hf.backingFile), maxBackingNameLen)
	}
	if len(hf.backingFormat) > maxBackingFormatLen {
		return 0, fmt.Errorf("qcow2: backing format %q is too long", hf.backingFormat)
	}
	be := binary.BigEndian
	if hf.backingFormat != "" {
		need := off + 8 + (len(hf.backingFormat)+7)&^7
		if need > len(buf) {
			return 0, fmt.Errorf("qcow2: header does not fit in a %d-byte cluster", len(buf))
		}
		be.PutUint32(buf[off:], extBackingFormat)
		be.PutUint32(buf[off+4:], uint32(len(hf.backingFormat)))
		copy(buf[off+8:], hf.backingFormat)
		off = need
	}
	if off+8 > len(buf) {
		return 0, fmt.Errorf("qcow2: header does not fit in a %d-byte cluster", len(buf))
	}
	be.PutUint64(buf[off:], 0)
	off += 8
	if off+len(hf.backingFile) > len(buf) {
		return 0, fmt.Errorf("qcow2: backing file name of %d bytes does not fit in the %d-byte header cluster", len(hf.backingFile), len(buf))
	}
	return off, nil
}
