package qcow2

// The refcounts: the refcount table and blocks as stored, the rebuilt
// counts, and their comparison.

import (
	"encoding/binary"
	"errors"
	"math"
)

// Refcount table entries (qemu's REFT_OFFSET_MASK, REFT_RESERVED_MASK).
const (
	checkReftOffsetMask   = 0xfffffffffffffe00
	checkReftReservedMask = 0x1ff
)

// errCheckRefblock is a refcount block that qemu cannot read: its offset
// is not cluster aligned or beyond what its block layer can address. Each
// refcount in it is a check error.
var errCheckRefblock = errors.New("qcow2: check: refcount block cannot be read")

func (c *checker) readReftable(off int64) error {
	if c.reftableSize == 0 || off >= c.fileSize {
		return nil
	}
	inFile := c.entriesInFile(uint64(off), c.reftableSize, 8)
	buf := make([]byte, inFile*8) // bounded by the file size
	if err := c.readZ(buf, off); err != nil {
		return err
	}
	c.reftable = make([]uint64, inFile)
	for i := range c.reftable {
		c.reftable[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	return nil
}

func (c *checker) reftableEntry(i int64) uint64 {
	if i < int64(len(c.reftable)) {
		return c.reftable[i]
	}
	return 0
}

// inc counts one reference to each cluster of [off, off+size) (qemu's
// qcow2_inc_refcounts_imrt). A range that ends a cluster or more past the
// end of the file is a corruption and is not counted; the rebuilt table
// therefore never grows by more than one cluster.
func (c *checker) inc(off uint64, size int64) {
	if size <= 0 {
		return
	}
	// qemu computes this in int64; offsets this large cannot be in a file.
	if off >= 1<<62 || int64(off)+size-c.fileSize >= c.cs {
		c.corrupt("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x%x size 0x%x",
			off, size)
		return
	}
	maxRef := c.maxRefcount()
	first := int64(off) >> c.bits
	last := (int64(off) + size - 1) >> c.bits
	for k := first; k <= last; k++ {
		if k >= c.nMax {
			// Unreachable by the check above; kept so that a mistake
			// there cannot index out of range.
			c.corrupt("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x%x size 0x%x",
				off, size)
			return
		}
		if k >= c.n {
			c.n = k + 1
		}
		r := c.imrt.get(k)
		if r == maxRef {
			c.corrupt("ERROR: overflow cluster offset=0x%x", uint64(k)<<c.bits)
			c.finding("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing")
			continue
		}
		c.imrt.set(k, r+1)
	}
}

func (c *checker) maxRefcount() uint64 {
	if c.order == 6 {
		return math.MaxUint64
	}
	return 1<<(1<<c.order) - 1
}

// checkCounts is an array of refcounts of 2^order bits, packed least
// significant bits first into words.
type checkCounts struct {
	order uint32
	words []uint64
}

func newCheckCounts(n int64, order uint32) checkCounts {
	return checkCounts{order: order, words: make([]uint64, (n<<order+63)/64)}
}

func (a checkCounts) get(k int64) uint64 {
	if a.order == 6 {
		return a.words[k]
	}
	bit := uint64(k) << a.order
	return a.words[bit>>6] >> (bit & 63) & (1<<(1<<a.order) - 1)
}

func (a checkCounts) set(k int64, v uint64) {
	if a.order == 6 {
		a.words[k] = v
		return
	}
	bit := uint64(k) << a.order
	mask := uint64(1<<(1<<a.order)-1) << (bit & 63)
	a.words[bit>>6] = a.words[bit>>6]&^mask | v<<(bit&63)&mask
}

// checkRefblocks counts the refcount blocks and checks that each is
// referenced exactly once (qemu's check_refblocks).
func (c *checker) checkRefblocks() {
	for i := range int64(len(c.reftable)) {
		raw := c.reftable[i]
		off := raw & checkReftOffsetMask
		cluster := off >> c.bits
		if raw&checkReftReservedMask != 0 {
			c.corrupt("ERROR refcount table entry %d has reserved bits set", i)
			continue
		}
		if off&uint64(c.cs-1) != 0 {
			c.corrupt("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i)
			continue
		}
		if cluster >= uint64(c.n) {
			c.corrupt("ERROR refcount block %d is outside image", i)
			continue
		}
		if off != 0 {
			c.inc(off, c.cs)
			if rc := c.imrt.get(int64(cluster)); rc != 1 {
				c.corrupt("ERROR refcount block %d refcount=%d", i, rc)
			}
		}
	}
}

// compare compares the rebuilt refcounts with the stored ones (qemu's
// compare_refcounts) and returns the highest cluster that either calls
// used.
func (c *checker) compare() int64 {
	var highest int64
	for k := range c.n {
		if c.badBlocks[k>>c.blockBits] {
			c.res.CheckErrors++
			c.finding("Can't get refcount for cluster %d: Input/output error", k)
			continue
		}
		rc1, rc2 := c.disk.get(k), c.imrt.get(k)
		if rc1 > 0 || rc2 > 0 {
			highest = k
		}
		switch {
		case rc1 < rc2:
			c.corrupt("ERROR cluster %d refcount=%d reference=%d", k, rc1, rc2)
		case rc1 > rc2:
			c.res.Leaks++
			c.finding("Leaked cluster %d refcount=%d reference=%d", k, rc1, rc2)
		}
	}
	return highest
}

// loadStored reads the stored refcounts of the clusters of the file, one
// refcount block at a time.
func (c *checker) loadStored() error {
	c.disk = newCheckCounts(c.nMax, c.order)
	c.badBlocks = make([]bool, (c.nMax>>c.blockBits)+1)
	// Only the refcounts of the clusters of the file are needed.
	buf := make([]byte, min(c.cs, (c.nMax<<c.order+7)/8))
	for i := range int64(len(c.badBlocks)) {
		off, err := c.refblockOffset(i)
		if err != nil {
			c.badBlocks[i] = true
			continue
		}
		if off == 0 || off >= uint64(c.fileSize) {
			continue // no block, or one that reads as zeros
		}
		if err := c.readZ(buf, int64(off)); err != nil {
			return err
		}
		first := i << c.blockBits
		for k := first; k < min(c.nMax, first+1<<c.blockBits); k++ {
			c.disk.set(k, c.refcountIn(buf, k-first))
		}
	}
	return nil
}

// refblockOffset returns the offset of the refcount block of refcount
// table index i, 0 if there is none, or errCheckRefblock.
func (c *checker) refblockOffset(i int64) (uint64, error) {
	if i >= c.reftableSize {
		return 0, nil
	}
	off := c.reftableEntry(i) & checkReftOffsetMask
	if off&uint64(c.cs-1) != 0 || off > uint64(checkMaxOffset-c.cs) {
		return 0, errCheckRefblock
	}
	return off, nil
}

// stored returns the refcount the image stores for a cluster (qemu's
// qcow2_get_refcount): 0 past the refcount table or in a hole of it, and
// errCheckRefblock if its refcount block cannot be read.
func (c *checker) stored(cluster int64) (uint64, error) {
	if cluster < c.nMax {
		if c.badBlocks[cluster>>c.blockBits] {
			return 0, errCheckRefblock
		}
		return c.disk.get(cluster), nil
	}
	// Only a broken image references clusters past the end of the file:
	// read just the refcount, not the whole block.
	off, err := c.refblockOffset(cluster >> c.blockBits)
	if err != nil || off == 0 || off >= uint64(c.fileSize) {
		return 0, err
	}
	i := cluster & (1<<c.blockBits - 1)
	var b [8]byte
	n := max(1, int64(1)<<c.order/8)
	if err := c.readZ(b[:n], int64(off)+i<<c.order/8); err != nil {
		return 0, err
	}
	if c.order < 3 {
		return c.refcountIn(b[:], i%(8>>c.order)), nil
	}
	return c.refcountIn(b[:], 0), nil
}

// refcountIn decodes entry i of a refcount block: big-endian for widths of
// 8 bits and more, least significant bits first within a byte below.
func (c *checker) refcountIn(blk []byte, i int64) uint64 {
	be := binary.BigEndian
	switch c.order {
	case 3:
		return uint64(blk[i])
	case 4:
		return uint64(be.Uint16(blk[i*2:]))
	case 5:
		return uint64(be.Uint32(blk[i*4:]))
	case 6:
		return be.Uint64(blk[i*8:])
	}
	w := uint64(1) << c.order
	perByte := 8 / int64(w)
	return uint64(blk[i/perByte]) >> (uint64(i%perByte) * w) & (1<<w - 1)
}
