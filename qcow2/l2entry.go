package qcow2

import "encoding/binary"

// The one codec of L1 and L2 entries (qcow2.rst "Cluster mapping" and
// "Compressed Clusters Descriptor"): the reader, the writer and the
// checker all decode and encode entries here.

// Bit layout of L1 and L2 entries.
const (
	offsetMask     = 0x00fffffffffffe00 // bits 9-55: host offset
	flagCopied     = 1 << 63            // refcount is exactly 1
	flagCompressed = 1 << 62
	flagZero       = 1 << 0 // reads as zeros; reserved with extended L2

	// Bits that must be zero in an L1 entry, and in an L2 entry that is
	// not compressed (qemu's L1E_RESERVED_MASK, L2E_STD_RESERVED_MASK).
	l1ReservedMask    = 0x7f000000000001ff
	l2StdReservedMask = 0x3f000000000001fe
)

// l1Entry is an entry of an L1 table: where an L2 table is, if anywhere.
type l1Entry uint64

// tableOffset is the host offset of the L2 table, 0 if there is none.
func (e l1Entry) tableOffset() uint64  { return uint64(e) & offsetMask }
func (e l1Entry) copied() bool         { return e&flagCopied != 0 }
func (e l1Entry) reservedBits() uint64 { return uint64(e) & l1ReservedMask }

// tableEntry encodes an L1 entry for an L2 table at host offset off that
// only this image references.
func tableEntry(off int64) l1Entry { return l1Entry(uint64(off) | flagCopied) }

// l2Entry is the first 64 bits of an L2 entry.
type l2Entry uint64

// clusterKind is what an L2 entry makes of its guest cluster (qemu's
// QCow2ClusterType).
type clusterKind uint8

const (
	clusterUnallocated clusterKind = iota // read from the backing file
	clusterZeroPlain                      // zeros, no host cluster
	clusterZeroAlloc                      // zeros, with a preallocated host cluster
	clusterNormal                         // data at hostOffset, or subclusters
	clusterCompressed                     // compressed data at compressedRange
)

// kind classifies the entry as qemu's qcow2_get_cluster_type does. With
// extended L2 entries the zero flag is reserved and ignored: the
// subcluster bitmap ([l2Bitmap]) says which parts read as zeros.
func (e l2Entry) kind(extendedL2 bool) clusterKind {
	switch {
	case e.compressed():
		return clusterCompressed
	case e.zero() && !extendedL2:
		if e.hostOffset() != 0 {
			return clusterZeroAlloc
		}
		return clusterZeroPlain
	case e.hostOffset() == 0:
		return clusterUnallocated
	}
	return clusterNormal
}

func (e l2Entry) compressed() bool { return e&flagCompressed != 0 }
func (e l2Entry) copied() bool     { return e&flagCopied != 0 }
func (e l2Entry) zero() bool       { return e&flagZero != 0 }

// hostOffset is the host cluster of a normal or preallocated zero cluster.
// It is meaningless for a compressed cluster.
func (e l2Entry) hostOffset() int64 { return int64(e & offsetMask) }

// reservedBits returns the bits of a standard (not compressed) entry that
// must be zero.
func (e l2Entry) reservedBits() uint64 { return uint64(e) & l2StdReservedMask }

// csizeShift is where the sector count of a compressed cluster descriptor
// starts: x = 62 - (cluster_bits - 8).
func csizeShift(clusterBits uint32) uint32 { return 62 - (clusterBits - 8) }

// compressedOffset is the host offset of a compressed cluster's data: bits
// 0 to x-1 of the descriptor.
func (e l2Entry) compressedOffset(clusterBits uint32) int64 {
	return int64(uint64(e) & (1<<csizeShift(clusterBits) - 1))
}

// compressedRange returns where the compressed data of the entry lies in
// the file: from its offset to the end of its last 512-byte sector. The
// descriptor counts the sectors after the one holding the offset in bits
// x to 61, so n is at most two clusters.
func (e l2Entry) compressedRange(clusterBits uint32) (off, n int64) {
	shift := csizeShift(clusterBits)
	off = int64(uint64(e) & (1<<shift - 1))
	sectors := int64(uint64(e)>>shift&(1<<(clusterBits-8)-1)) + 1
	return off, sectors*512 - off&511
}

// normalEntry encodes a data cluster at host offset host (cluster
// aligned) that only this image references.
func normalEntry(host int64) l2Entry { return l2Entry(uint64(host) | flagCopied) }

// zeroEntry encodes a cluster that reads as zeros whatever the backing
// file holds, without a host cluster.
func zeroEntry() l2Entry { return flagZero }

// compressedEntry encodes a compressed cluster whose n bytes (1 to a
// cluster) start at host offset off.
func compressedEntry(off, n int64, clusterBits uint32) l2Entry {
	sectors := (off+n-1)>>9 - off>>9 // beyond the first one
	return l2Entry(flagCompressed | uint64(sectors)<<csizeShift(clusterBits) | uint64(off))
}

// l2Bitmap is the second 64 bits of an extended L2 entry: bit i says that
// subcluster i is allocated, bit 32+i that it reads as zeros.
type l2Bitmap uint64

func (b l2Bitmap) alloc() uint32 { return uint32(b) }
func (b l2Bitmap) zeros() uint32 { return uint32(b >> 32) }

// subclusterKind is how subcluster sc (0 to 31) of a normal or
// unallocated cluster reads: data, zeros or unallocated.
func (b l2Bitmap) subclusterKind(sc int64) clusterKind {
	switch {
	case b.alloc()&(1<<sc) != 0:
		return clusterNormal
	case b.zeros()&(1<<sc) != 0:
		return clusterZeroPlain
	}
	return clusterUnallocated
}

// readL2 decodes entry i of an L2 table; bitmap is zero without extended
// L2 entries.
func readL2(table []byte, i int64, extendedL2 bool) (l2Entry, l2Bitmap) {
	if extendedL2 {
		return l2Entry(binary.BigEndian.Uint64(table[i*16:])), l2Bitmap(binary.BigEndian.Uint64(table[i*16+8:]))
	}
	return l2Entry(binary.BigEndian.Uint64(table[i*8:])), 0
}

// putL2 encodes entry i of an L2 table without extended L2 entries, the
// only kind canga writes.
func putL2(table []byte, i int64, e l2Entry) {
	binary.BigEndian.PutUint64(table[i*8:], uint64(e))
}
