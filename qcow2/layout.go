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

	l1       []l1Entry
	l2       []byte // the L2 table being filled
	l2Index  int64  // its L1 index, or -1
	l2Filled bool

	// Compressed data is packed byte after byte into cur, as qemu packs
	// it, continuing into the next cluster when that one is adjacent. When
	// it is not (an uncompressed cluster or a table came between), cur is
	// set aside as a tail whose free end later chunks that fit may use:
	// qemu wastes those ends.
	cur   *packCluster
	tails []*packCluster
	spare [][]byte // buffers of written pack clusters, for reuse
}

// packCluster is a host cluster being filled with compressed data; it is
// written when full or when the image is finished.
type packCluster struct {
	cluster int64
	buf     []byte
	fill    int64
}

// Tails are few and must be worth keeping: a chunk of compressed zeros is
// a few dozen bytes.
const (
	maxTails    = 8
	minTailFree = 64
)

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
	}
	hdr := Header{ClusterBits: clusterBits}
	l.l1 = make([]l1Entry, hdr.l1EntriesFor(uint64(size)))
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
	if l.cur != nil {
		low = min(low, l.cur.cluster)
	}
	for _, t := range l.tails {
		low = min(low, t.cluster)
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
func (l *layout) setEntry(guestCluster int64, entry l2Entry) {
	l1Index := guestCluster >> l.l2Bits
	if l1Index != l.l2Index {
		l.flushL2()
		l.l2Index = l1Index
		if l.l2 == nil {
			l.l2 = make([]byte, l.clusterSize)
		}
		clear(l.l2)
	}
	putL2(l.l2, guestCluster&(1<<l.l2Bits-1), entry)
	l.l2Filled = true
}

func (l *layout) flushL2() {
	if !l.l2Filled {
		return
	}
	c := l.alloc(1)
	l.writeAt(l.l2, c)
	l.l1[l.l2Index] = tableEntry(c << l.clusterBits)
	l.l2Filled = false
	l.flushBlocks(false)
}

// data stores one uncompressed guest cluster.
func (l *layout) data(guestCluster int64, p []byte) {
	c := l.alloc(1)
	l.writeAt(p, c)
	l.setEntry(guestCluster, normalEntry(c<<l.clusterBits))
	l.flushBlocks(false)
}

// zero marks a guest cluster as reading zeros whatever the backing file
// holds there.
func (l *layout) zero(guestCluster int64) {
	l.setEntry(guestCluster, zeroEntry())
}

// compressed stores the compressed bytes z of one guest cluster: in the
// free end of a tail if one fits it, else right after the previous
// compressed chunk.
func (l *layout) compressed(guestCluster int64, z []byte) {
	n := int64(len(z))
	if n == 0 || n > l.clusterSize {
		l.fail(fmt.Errorf("qcow2: internal error: %d compressed bytes for a %d-byte cluster", n, l.clusterSize))
		return
	}
	var off int64
	if i := l.bestTail(n); i >= 0 {
		t := l.tails[i]
		off = t.cluster<<l.clusterBits + t.fill
		t.fill += int64(copy(t.buf[t.fill:], z))
		l.incref(t.cluster)
		if l.clusterSize-t.fill < minTailFree {
			l.tails = append(l.tails[:i], l.tails[i+1:]...)
			l.writePack(t)
		}
	} else {
		if l.cur != nil && l.cur.fill+n > l.clusterSize && l.next != l.cur.cluster+1 {
			l.retire()
		}
		if l.cur == nil || l.cur.fill == l.clusterSize {
			l.flushCur()
			l.cur = l.newPack()
		}
		c := l.cur
		off = c.cluster<<l.clusterBits + c.fill
		k := copy(c.buf[c.fill:], z)
		c.fill += int64(k)
		l.incref(c.cluster)
		if k < len(z) {
			// Continue into the adjacent cluster; the full one is final.
			l.flushCur()
			l.cur = l.newPack()
			l.cur.fill = int64(copy(l.cur.buf, z[k:]))
			l.incref(l.cur.cluster)
		}
	}
	l.setEntry(guestCluster, compressedEntry(off, n, l.clusterBits))
}

// bestTail returns the fullest tail with room for n bytes, or -1.
func (l *layout) bestTail(n int64) int {
	best := -1
	for i, t := range l.tails {
		if l.clusterSize-t.fill >= n && (best < 0 || t.fill > l.tails[best].fill) {
			best = i
		}
	}
	return best
}

// retire sets cur aside as a tail, or writes it if its free end is too
// small to keep. Of too many tails, the fullest is written.
func (l *layout) retire() {
	c := l.cur
	l.cur = nil
	if l.clusterSize-c.fill < minTailFree {
		l.writePack(c)
		return
	}
	l.tails = append(l.tails, c)
	if len(l.tails) > maxTails {
		i := 0
		for j, t := range l.tails {
			if t.fill > l.tails[i].fill {
				i = j
			}
		}
		t := l.tails[i]
		l.tails = append(l.tails[:i], l.tails[i+1:]...)
		l.writePack(t)
	}
}

func (l *layout) newPack() *packCluster {
	var buf []byte
	if k := len(l.spare); k > 0 {
		buf, l.spare = l.spare[k-1], l.spare[:k-1]
		clear(buf)
	} else {
		buf = make([]byte, l.clusterSize)
	}
	return &packCluster{cluster: l.allocRaw(1), buf: buf}
}

// flushCur writes the cluster being packed, if any.
func (l *layout) flushCur() {
	if l.cur != nil {
		c := l.cur
		l.cur = nil
		l.writePack(c)
	}
}

func (l *layout) writePack(c *packCluster) {
	l.writeAt(c.buf, c.cluster)
	l.spare = append(l.spare, c.buf)
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
	l.flushCur()
	for _, t := range l.tails {
		l.writePack(t)
	}
	l.tails = nil
	cs := l.clusterSize

	l1Bytes := int64(len(l.l1)) * 8
	var l1Off int64
	if l1Bytes > 0 {
		l1Clusters := (l1Bytes + cs - 1) / cs
		l1Off = l.alloc(l1Clusters) << l.clusterBits
		buf := make([]byte, l1Clusters*cs)
		for i, e := range l.l1 {
			binary.BigEndian.PutUint64(buf[i*8:], uint64(e))
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
	if l.compression == headerCompressionZstd {
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
