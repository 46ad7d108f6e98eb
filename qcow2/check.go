package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// Check rebuilds the reference counts of the qcow2 image in ra, a file of
// fileSize bytes, from its metadata and compares them with the refcounts the
// image stores, the way qemu-img check does (qemu 7.2,
// block/qcow2-refcount.c qcow2_check_refcounts). The counts of the result
// agree with those of qemu-img check --output=json.
//
// Check never writes and never repairs. It returns an error when qemu-img
// check fails without a report: the header is invalid (see [ReadHeader];
// like qemu, Check reads past the end of the file as zeros, so that tables
// there are findings, not errors), the snapshot table or the bitmap
// directory cannot be read, or the file cannot be read. Everything else is
// a finding counted in the result; [CheckResult.CheckErrors] counts the
// refcounts that could not be read, as qemu does.
//
// A dirty image with lazy refcounts is checked as it is, like qemu-img
// check does (it opens the image for checking only, without the repair
// that opening it for writing would do): refcounts that were not yet
// written are corruptions ("ERROR cluster 5 refcount=0 reference=1") and
// so are the OFLAG_COPIED flags that disagree with them.
//
// Memory is proportional to the size of the file divided by the cluster
// size (two refcounts of the image's width per cluster of the file: the
// stored ones and the rebuilt ones), never to a number read from the file:
// a reference past the end of the file is a corruption, as in qemu, and
// does not grow the table. L1, L2 and bitmap tables are streamed, and only
// their parts inside the file are read. Where Check departs from qemu, on
// broken images only:
//   - tables that overlap so much that the entries to examine exceed what
//     a file of this size can hold (qemu would examine them for hours) are
//     an error;
//   - offsets of 2^62 and more are past the end of the file (qemu runs out
//     of memory on them and fails the check);
//   - bitmaps are checked as qemu counts them, but the size of a bitmap
//     table is not compared with the virtual size and granularity.
func Check(ra io.ReaderAt, fileSize int64) (*CheckResult, error) {
	if fileSize < 0 {
		return nil, fmt.Errorf("qcow2: check: negative file size %d", fileSize)
	}
	// qemu reads past the end of the file as zeros, so that a table there
	// is not an error when the image is opened but a corruption that the
	// check reports: give ReadHeader the same view of the file.
	hdr, err := ReadHeader(checkPadded{ra, fileSize}, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	c := &checker{
		ra:       ra,
		fileSize: fileSize,
		hdr:      hdr,
		bits:     hdr.ClusterBits,
		cs:       hdr.ClusterSize(),
		order:    hdr.RefcountOrder,
		ext:      hdr.ExtendedL2(),
		res:      &CheckResult{},
	}
	if err := c.run(); err != nil {
		return nil, err
	}
	return c.res, nil
}

// CheckResult is what qemu-img check reports. The counts have the meaning
// of the keys of qemu-img check --output=json of the same name.
type CheckResult struct {
	CheckErrors        int64 // check-errors: refcounts that could not be read
	Corruptions        int64 // corruptions
	Leaks              int64 // leaks: clusters with a refcount but no reference
	ImageEndOffset     int64 // image-end-offset: end of the last used cluster
	TotalClusters      int64 // total-clusters: guest clusters of the virtual disk
	AllocatedClusters  int64 // allocated-clusters: guest clusters the active L1 maps
	FragmentedClusters int64 // fragmented-clusters
	CompressedClusters int64 // compressed-clusters

	// Messages are the findings in qemu-img check's words and order
	// ("ERROR cluster 5 refcount=0 reference=1", "Leaked cluster 12
	// refcount=1 reference=0", ...), which qemu-img prints on stderr.
	// A badly broken image can have a finding for each of its clusters;
	// only the first [MaxCheckMessages] are kept.
	Messages []string
	// MessagesDropped counts the findings beyond [MaxCheckMessages].
	MessagesDropped int64
}

// MaxCheckMessages bounds [CheckResult.Messages].
const MaxCheckMessages = 10000

// Clean reports whether the image has neither corruptions, leaks nor
// check errors.
func (r *CheckResult) Clean() bool {
	return r.CheckErrors == 0 && r.Corruptions == 0 && r.Leaks == 0
}

// WriteReport writes the findings, one per line, then the summary: all
// that qemu-img check prints, on one writer.
func (r *CheckResult) WriteReport(w io.Writer) error {
	if err := r.WriteMessages(w); err != nil {
		return err
	}
	return r.WriteSummary(w)
}

// WriteMessages writes the findings, one per line, as qemu-img check does
// on stderr.
func (r *CheckResult) WriteMessages(w io.Writer) error {
	var b strings.Builder
	for _, m := range r.Messages {
		b.WriteString(m)
		b.WriteByte('\n')
	}
	if r.MessagesDropped > 0 {
		fmt.Fprintf(&b, "(%d more findings not shown)\n", r.MessagesDropped)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteSummary writes the summary that qemu-img check prints on stdout.
func (r *CheckResult) WriteSummary(w io.Writer) error {
	var b strings.Builder
	if r.Clean() {
		b.WriteString("No errors were found on the image.\n")
	} else {
		if r.Corruptions != 0 {
			fmt.Fprintf(&b, "\n%d errors were found on the image.\n"+
				"Data may be corrupted, or further writes to the image may corrupt it.\n", r.Corruptions)
		}
		if r.Leaks != 0 {
			fmt.Fprintf(&b, "\n%d leaked clusters were found on the image.\n"+
				"This means waste of disk space, but no harm to data.\n", r.Leaks)
		}
		if r.CheckErrors != 0 {
			fmt.Fprintf(&b, "\n%d internal errors have occurred during the check.\n", r.CheckErrors)
		}
	}
	if r.TotalClusters != 0 && r.AllocatedClusters != 0 {
		fmt.Fprintf(&b, "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			r.AllocatedClusters, r.TotalClusters,
			float64(r.AllocatedClusters)*100/float64(r.TotalClusters),
			float64(r.FragmentedClusters)*100/float64(r.AllocatedClusters),
			float64(r.CompressedClusters)*100/float64(r.AllocatedClusters))
	}
	if r.ImageEndOffset != 0 {
		fmt.Fprintf(&b, "Image end offset: %d\n", r.ImageEndOffset)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Bit masks of qemu's block/qcow2.h that only the check needs.
const (
	checkL1ReservedMask    = 0x7f000000000001ff
	checkL2StdReservedMask = 0x3f000000000001fe
	checkReftOffsetMask    = 0xfffffffffffffe00
	checkReftReservedMask  = 0x1ff
	checkL2BitmapAllAlloc  = 0xffffffff

	checkMaxSnapshotExtra = 1024     // QCOW_MAX_SNAPSHOT_EXTRA_DATA
	checkMaxSnapshotsSize = 64 << 20 // QCOW_MAX_SNAPSHOTS_SIZE
	checkSnapshotHeader   = 40       // sizeof(QCowSnapshotHeader)
	checkNameKeep         = 128      // bytes of a snapshot ID or name kept for messages

	checkMaxBitmaps       = 65535     // QCOW2_MAX_BITMAPS
	checkMaxBitmapDir     = 64 << 20  // QCOW2_MAX_BITMAP_DIRECTORY_SIZE
	checkBmeMaxTableSize  = 0x8000000 // entries
	checkBmeMaxPhysSize   = 0x20000000
	checkBmeReservedMask  = 0xff000000000001fe
	checkBmeReservedFlags = 0xfffffffc
	checkBmeFlagInUse     = 1
	checkBmeMaxNameSize   = 1023

	// Reads at offsets this large fail in qemu's block layer
	// (BDRV_MAX_LENGTH); qemu-img check then aborts.
	checkMaxOffset = math.MaxInt64 &^ (1<<30 - 1)
)

// L2 entry types of qemu's qcow2_get_cluster_type.
type checkClusterType uint8

const (
	checkUnallocated checkClusterType = iota
	checkZeroPlain
	checkZeroAlloc
	checkNormal
	checkCompressed
)

type checkSnapshot struct {
	l1Offset uint64
	l1Size   uint32
	id, name string
}

type checkBitmap struct {
	tableOffset uint64
	tableSize   uint32
}

type checker struct {
	ra       io.ReaderAt
	fileSize int64
	hdr      *Header
	bits     uint32
	cs       int64
	order    uint32
	ext      bool
	res      *CheckResult

	// The rebuilt refcounts ("in-memory refcount table" in qemu) and the
	// stored ones, for the clusters of the file plus one. n is qemu's
	// nb_clusters: the clusters of the file, plus one if a reference ends
	// less than a cluster past its end. badBlocks marks the refcount
	// blocks, by refcount table index, that cannot be read.
	imrt, disk checkCounts
	n, nMax    int64
	badBlocks  []bool
	blockBits  uint32 // log2 of the refcounts in a refcount block

	reftable     []uint64 // the part of the refcount table inside the file
	reftableSize int64    // entries the header declares

	snapshots     []checkSnapshot
	snapshotsSize int64
	bitmapDir     struct{ offset, size uint64 }
	nbBitmaps     int // from the bitmaps extension; 0 if qemu ignores it
	bitmaps       []checkBitmap

	l2 []byte // one L2 table, reused
	// Table entries examined, and their limits: L1 and bitmap table
	// entries, and L2 entries.
	l1Work, l1Limit int64
	l2Work, l2Limit int64
	l1buf           []byte // a chunk of an L1 table, reused

	msgs      []string // findings of the refcount rebuild and comparison
	oflagMsgs []string // OFLAG_COPIED findings, which qemu reports last
	dropped   int64
}

// errCheckRefblock is a refcount block that qemu cannot read: its offset
// is not cluster aligned or beyond what its block layer can address. Each
// refcount in it is a check error.
var errCheckRefblock = errors.New("qcow2: check: refcount block cannot be read")

func (c *checker) finding(format string, args ...any) {
	if len(c.msgs)+len(c.oflagMsgs) >= MaxCheckMessages {
		c.dropped++
		return
	}
	c.msgs = append(c.msgs, fmt.Sprintf(format, args...))
}

func (c *checker) oflagFinding(format string, args ...any) {
	if len(c.msgs)+len(c.oflagMsgs) >= MaxCheckMessages {
		c.dropped++
		return
	}
	c.oflagMsgs = append(c.oflagMsgs, fmt.Sprintf(format, args...))
}

func (c *checker) corrupt(format string, args ...any) {
	c.res.Corruptions++
	c.finding(format, args...)
}

// checkPadded reads as a file of unlimited size whose bytes past size are
// zeros.
type checkPadded struct {
	ra   io.ReaderAt
	size int64
}

func (p checkPadded) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off > math.MaxInt64-int64(len(b)) {
		return 0, fmt.Errorf("qcow2: check: read at %#x: offset out of range", off)
	}
	if err := readFileAt(p.ra, b, off, p.size); err != nil {
		return 0, err
	}
	return len(b), nil
}

// readZ fills p with the file's bytes at off, and with zeros past the end
// of the file, the way qemu's block layer pads reads past EOF: metadata
// that lies past the end reads as empty tables, and the references to it
// are reported as corruptions.
func (c *checker) readZ(p []byte, off int64) error {
	if off < 0 || off > checkMaxOffset-int64(len(p)) {
		return fmt.Errorf("qcow2: check: read of %d bytes at %#x: offset out of range", len(p), uint64(off))
	}
	if err := readFileAt(c.ra, p, off, c.fileSize); err != nil {
		return fmt.Errorf("qcow2: check: %w", err)
	}
	return nil
}

func (c *checker) run() error {
	h := c.hdr
	// qemu validates these tables when it opens the image
	// (qcow2_validate_table): offsets must leave the table inside int64.
	reftableBytes := int64(h.RefcountTableClusters) << c.bits
	if h.RefcountTableOffset > uint64(math.MaxInt64-reftableBytes) {
		return corruptf("refcount table offset %#x invalid", h.RefcountTableOffset)
	}
	if h.L1TableOffset > uint64(math.MaxInt64-int64(h.L1Size)*8) {
		return corruptf("L1 table offset %#x invalid", h.L1TableOffset)
	}
	if h.SnapshotsOffset%uint64(c.cs) != 0 ||
		h.SnapshotsOffset > uint64(math.MaxInt64-int64(h.NbSnapshots)*checkSnapshotHeader) {
		return corruptf("snapshot table offset %#x invalid", h.SnapshotsOffset)
	}
	if err := c.readBitmapsExtension(); err != nil {
		return err
	}
	if err := c.readSnapshots(); err != nil {
		return err
	}
	if err := c.loadBitmaps(); err != nil {
		return err
	}

	n := (c.fileSize + c.cs - 1) >> c.bits
	if n > math.MaxInt32 {
		return fmt.Errorf("qcow2: check: file of %d bytes has more than %d clusters", c.fileSize, math.MaxInt32)
	}
	c.n, c.nMax = n, n+1
	c.imrt = newCheckCounts(c.nMax, c.order)
	c.blockBits = c.bits + 3 - c.order

	virtual := int64(h.Size &^ 511)
	c.res.TotalClusters = (virtual + c.cs - 1) >> c.bits

	c.reftableSize = reftableBytes / 8
	if err := c.readReftable(int64(h.RefcountTableOffset)); err != nil {
		return err
	}
	// L1 and bitmap tables occupy clusters of their own, so their entries
	// inside the file fit in the file once; each L2 table is referenced by
	// at most the active L1 table and each snapshot's.
	c.l1Limit = c.fileSize/8 + 1<<16
	c.l2Limit = (int64(len(c.snapshots))+1)*(c.fileSize/8) + 1<<20
	if err := c.loadStored(); err != nil {
		return err
	}
	// Only the part of an L2 table inside the file is read.
	c.l2 = make([]byte, min(c.cs, c.fileSize+16))
	c.l1buf = make([]byte, 64<<10)

	if err := c.calculate(); err != nil {
		return err
	}
	highest := c.compare()
	c.res.ImageEndOffset = (highest + 1) * c.cs
	c.res.Messages = append(c.msgs, c.oflagMsgs...)
	c.res.MessagesDropped = c.dropped
	return nil
}

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

// calculate rebuilds the refcounts from the metadata (qemu's
// calculate_refcounts), checking the OFLAG_COPIED flags of the active
// tables on the way so that each L2 table is read once.
func (c *checker) calculate() error {
	h := c.hdr
	c.inc(0, c.cs) // header, extensions and backing file name
	if err := c.checkL1(h.L1TableOffset, h.L1Size, true); err != nil {
		return err
	}
	for _, sn := range c.snapshots {
		if sn.l1Offset%uint64(c.cs) != 0 {
			c.corrupt("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot table entry corrupted",
				sn.id, sn.name, sn.l1Offset)
			continue
		}
		if uint64(sn.l1Size)*8 > maxL1Bytes {
			c.corrupt("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry corrupted",
				sn.id, sn.name, sn.l1Size)
			continue
		}
		if err := c.checkL1(sn.l1Offset, sn.l1Size, false); err != nil {
			return err
		}
	}
	c.inc(h.SnapshotsOffset, c.snapshotsSize)
	c.inc(h.RefcountTableOffset, c.reftableSize*8)
	if err := c.checkBitmaps(); err != nil {
		return err
	}
	c.checkRefblocks()
	return nil
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

// checkL1 counts an L1 table, its L2 tables and the clusters they map
// (qemu's check_refcounts_l1 and check_refcounts_l2). For the active table
// it also gathers the allocation statistics and checks the OFLAG_COPIED
// flags against the stored refcounts (qemu's check_oflag_copied).
func (c *checker) checkL1(off uint64, size uint32, active bool) error {
	if size == 0 {
		return nil
	}
	// Entries past the end of the file read as zeros, which map nothing:
	// skip them, so that the work is bounded by the file too.
	entries := c.entriesInFile(off, int64(size), 8)
	if err := c.spend(&c.l1Work, c.l1Limit, entries); err != nil {
		return err
	}
	c.inc(off, int64(size)*8)
	if off > uint64(checkMaxOffset)-uint64(size)*8 {
		// qemu's read of such a table fails and aborts the check.
		return fmt.Errorf("qcow2: check: L1 table at %#x: offset out of range", off)
	}
	for done := int64(0); done < entries; {
		n := min(entries-done, int64(len(c.l1buf))/8)
		buf := c.l1buf[:n*8]
		if err := c.readZ(buf, int64(off)+done*8); err != nil {
			return err
		}
		for i := range n {
			e := binary.BigEndian.Uint64(buf[i*8:])
			if err := c.checkL1Entry(done+i, e, active); err != nil {
				return err
			}
		}
		done += n
	}
	return nil
}

// entriesInFile returns how many of the n entries of size bytes of a
// table at off lie, at least partly, inside the file.
func (c *checker) entriesInFile(off uint64, n, size int64) int64 {
	if off >= uint64(c.fileSize) {
		return 0
	}
	return min(n, (c.fileSize-int64(off)+size-1)/size)
}

// spend adds n entries to a work counter and fails once it passes its
// limit. The limits (see run) hold for every image whose tables do not
// overlap; a file whose tables reference the same bytes over and over could
// otherwise keep the check busy for hours, as it does qemu-img.
func (c *checker) spend(work *int64, limit, n int64) error {
	*work += n
	if *work > limit {
		return corruptf("check: tables overlap: more than %d table entries to examine in a file of %d bytes", limit, c.fileSize)
	}
	return nil
}

func (c *checker) checkL1Entry(index int64, e uint64, active bool) error {
	if e == 0 {
		return nil
	}
	if e&checkL1ReservedMask != 0 {
		c.corrupt("ERROR found L1 entry with reserved bits set: %x", e)
	}
	l2off := e & offsetMask
	c.inc(l2off, c.cs)
	if l2off&uint64(c.cs-1) != 0 {
		c.corrupt("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", l2off)
	}
	// Entries past the end of the file read as zeros and map nothing.
	entrySize := c.hdr.l2EntryBytes()
	n := c.entriesInFile(l2off, c.cs/entrySize, entrySize)
	if err := c.spend(&c.l2Work, c.l2Limit, n); err != nil {
		return err
	}
	if n > 0 {
		if err := c.readZ(c.l2[:n*entrySize], int64(l2off)); err != nil {
			return err
		}
		c.checkL2(n, active)
	}
	if active && l2off != 0 {
		rc, err := c.stored(int64(l2off >> c.bits))
		switch {
		case err == errCheckRefblock:
			// Reported by the comparison; qemu skips the entry.
		case err != nil:
			return err
		case (rc == 1) != (e&flagCopied != 0):
			c.res.Corruptions++
			c.oflagFinding("ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", index, e, rc)
		}
		if n > 0 {
			if err := c.checkCopied(n); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *checker) clusterType(e uint64) checkClusterType {
	switch {
	case e&flagCompressed != 0:
		return checkCompressed
	case e&flagZero != 0 && !c.ext:
		if e&offsetMask != 0 {
			return checkZeroAlloc
		}
		return checkZeroPlain
	case e&offsetMask == 0:
		return checkUnallocated
	default:
		return checkNormal
	}
}

func (c *checker) l2Entry(i int64) (entry, bitmap uint64) {
	if c.ext {
		return binary.BigEndian.Uint64(c.l2[i*16:]), binary.BigEndian.Uint64(c.l2[i*16+8:])
	}
	return binary.BigEndian.Uint64(c.l2[i*8:]), 0
}

// checkL2 counts the clusters that the first entries of the L2 table in
// c.l2 map.
func (c *checker) checkL2(entries int64, active bool) {
	csizeShift := 62 - (c.bits - 8)
	csizeMask := uint64(1)<<(c.bits-8) - 1
	coffMask := uint64(1)<<csizeShift - 1
	var next uint64
	for i := range entries {
		e, bitmap := c.l2Entry(i)
		typ := c.clusterType(e)
		if typ != checkCompressed && e&checkL2StdReservedMask != 0 {
			c.corrupt("ERROR found l2 entry with reserved bits set: %x", e)
		}
		switch typ {
		case checkCompressed:
			if e&flagCopied != 0 {
				c.corrupt("ERROR: coffset=0x%x: copied flag must never be set for compressed clusters", e&coffMask)
				e &^= flagCopied
			}
			if bitmap != 0 {
				c.corrupt("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x", i, e)
				continue
			}
			coff := e & coffMask
			sectors := int64(e>>csizeShift&csizeMask) + 1
			c.inc(coff, sectors*512-int64(coff&511))
			if active {
				c.res.AllocatedClusters++
				c.res.CompressedClusters++
				// qemu counts every compressed cluster as fragmented.
				c.res.FragmentedClusters++
			}
		case checkZeroAlloc, checkNormal:
			off := e & offsetMask
			if bitmap>>32&bitmap != 0 {
				c.corrupt("ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", off)
			}
			if off&uint64(c.cs-1) != 0 {
				data := e&flagZero == 0
				if c.ext {
					data = bitmap&checkL2BitmapAllAlloc != 0
				}
				if data {
					c.corrupt("ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", off)
				} else {
					c.corrupt("ERROR offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", off)
				}
			}
			if active {
				c.res.AllocatedClusters++
				if next != 0 && off != next {
					c.res.FragmentedClusters++
				}
				next = off + uint64(c.cs)
			}
			c.inc(off, c.cs)
		case checkUnallocated:
			if bitmap&checkL2BitmapAllAlloc != 0 {
				c.corrupt("ERROR: Unallocated cluster has non-zero subcluster allocation map")
			}
		}
	}
}

// checkCopied compares the OFLAG_COPIED flags of the data clusters of the
// active L2 table in c.l2 with their stored refcounts: the flag must be set
// exactly when the refcount is 1.
func (c *checker) checkCopied(entries int64) error {
	for i := range entries {
		e, _ := c.l2Entry(i)
		if t := c.clusterType(e); t != checkNormal && t != checkZeroAlloc {
			continue
		}
		rc, err := c.stored(int64((e & offsetMask) >> c.bits))
		if err == errCheckRefblock {
			continue // reported by the comparison; qemu skips the entry
		}
		if err != nil {
			return err
		}
		if (rc == 1) != (e&flagCopied != 0) {
			c.res.Corruptions++
			c.oflagFinding("ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", e, rc)
		}
	}
	return nil
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

// readSnapshots reads the snapshot table the way qemu-img check does
// (qcow2_check_read_snapshot_table without repairs): a table qemu cannot
// read fails the check.
func (c *checker) readSnapshots() error {
	nb := int64(c.hdr.NbSnapshots)
	if nb == 0 {
		return nil
	}
	start := int64(c.hdr.SnapshotsOffset)
	off := start
	var length int64
	var h [checkSnapshotHeader]byte
	c.snapshots = make([]checkSnapshot, 0, nb) // nb <= 65536, checked by ReadHeader
	name := make([]byte, 1<<16)
	extras := make([]int64, 0, nb)
	for i := range nb {
		length = (length + 7) &^ 7
		off = (off + 7) &^ 7
		if err := c.readZ(h[:], off); err != nil {
			return fmt.Errorf("qcow2: check: failed to read snapshot table: %w", err)
		}
		off += checkSnapshotHeader
		be := binary.BigEndian
		sn := checkSnapshot{l1Offset: be.Uint64(h[0:]), l1Size: be.Uint32(h[8:])}
		idSize := int64(be.Uint16(h[12:]))
		nameSize := int64(be.Uint16(h[14:]))
		extra := int64(be.Uint32(h[36:]))
		if extra > checkMaxSnapshotExtra {
			return corruptf("too much extra metadata in snapshot table entry %d", i)
		}
		off += extra
		str := func(n int64) (string, error) {
			b := name[:n]
			if err := c.readZ(b, off); err != nil {
				return "", fmt.Errorf("qcow2: check: failed to read snapshot table: %w", err)
			}
			off += n
			return string(b[:min(n, checkNameKeep)]), nil
		}
		var err error
		if sn.id, err = str(idSize); err != nil {
			return err
		}
		if sn.name, err = str(nameSize); err != nil {
			return err
		}
		length += checkSnapshotHeader + extra + idSize + nameSize
		if length > checkMaxSnapshotsSize || off-start > math.MaxInt32 {
			return corruptf("snapshot table is too big")
		}
		c.snapshots = append(c.snapshots, sn)
		extras = append(extras, extra)
	}
	c.snapshotsSize = off - start
	// Version 3 requires the extra data that holds the 64-bit VM state
	// size and the disk size.
	if c.hdr.Version >= 3 {
		for i, extra := range extras {
			if extra < 16 {
				c.corrupt("ERROR snapshot table entry %d is incomplete", i)
			}
		}
	}
	return nil
}

// readBitmapsExtension finds the bitmaps extension, which qemu only heeds
// when the bitmaps autoclear bit says that it is consistent.
func (c *checker) readBitmapsExtension() error {
	h := c.hdr
	if !h.Bitmaps || h.AutoclearFeatures&AutoclearBitmaps == 0 {
		return nil
	}
	// The extensions lie in the first cluster; past the end of the file
	// it reads as zeros, which end them.
	buf := make([]byte, min(c.cs, c.fileSize))
	if err := c.readZ(buf, 0); err != nil {
		return err
	}
	end := uint64(len(buf))
	if h.BackingFileOffset != 0 && h.BackingFileOffset < end {
		end = h.BackingFileOffset
	}
	be := binary.BigEndian
	for off := uint64(h.HeaderLength); off+8 <= end; {
		typ, n := be.Uint32(buf[off:]), uint64(be.Uint32(buf[off+4:]))
		off += 8
		if typ == extEnd || n > end-off {
			return nil
		}
		if typ != extBitmaps {
			off += (n + 7) &^ 7
			continue
		}
		if n != 24 {
			return corruptf("bitmaps extension: invalid length %d", n)
		}
		d := buf[off : off+24]
		nb := be.Uint32(d[0:])
		switch {
		case be.Uint32(d[4:]) != 0:
			return corruptf("bitmaps extension: reserved field is not zero")
		case nb > checkMaxBitmaps:
			return corruptf("bitmaps extension: %d bitmaps exceed the maximum of %d", nb, checkMaxBitmaps)
		case nb == 0:
			return corruptf("bitmaps extension with zero bitmaps")
		}
		c.bitmapDir.size = be.Uint64(d[8:])
		c.bitmapDir.offset = be.Uint64(d[16:])
		if c.bitmapDir.offset%uint64(c.cs) != 0 {
			return corruptf("bitmaps extension: invalid bitmap directory offset %#x", c.bitmapDir.offset)
		}
		if c.bitmapDir.size > checkMaxBitmapDir {
			return corruptf("bitmaps extension: bitmap directory size %d exceeds %d", c.bitmapDir.size, checkMaxBitmapDir)
		}
		c.nbBitmaps = int(nb)
		return nil
	}
	return nil
}

// loadBitmaps reads the bitmap directory (qemu's bitmap_list_load). qemu
// refuses to open an image whose directory is broken, so this is an error.
func (c *checker) loadBitmaps() error {
	if c.nbBitmaps == 0 {
		return nil
	}
	want := c.nbBitmaps
	size := c.bitmapDir.size
	if size == 0 {
		return corruptf("bitmap directory size is zero")
	}
	if c.bitmapDir.offset > uint64(checkMaxOffset)-size {
		return corruptf("bitmap directory offset %#x invalid", c.bitmapDir.offset)
	}
	// The directory is at most 64 MiB; reading only what lies in the file
	// keeps memory bounded by the file as well.
	dir := make([]byte, min(size, uint64(max(0, c.fileSize-int64(c.bitmapDir.offset)))))
	if err := c.readZ(dir, int64(c.bitmapDir.offset)); err != nil {
		return err
	}
	var entry [24]byte
	at := func(off uint64) []byte { // past the end of the file: zeros
		clear(entry[:])
		if off < uint64(len(dir)) {
			copy(entry[:], dir[off:])
		}
		return entry[:]
	}
	be := binary.BigEndian
	off := uint64(0)
	for off < size {
		if off+24 > size {
			return corruptf("broken bitmap directory")
		}
		if len(c.bitmaps) == want {
			return corruptf("more bitmaps found than specified in header extension")
		}
		e := at(off)
		b := checkBitmap{tableOffset: be.Uint64(e[0:]), tableSize: be.Uint32(e[8:])}
		flags := be.Uint32(e[12:])
		typ, gran := e[16], e[17]
		nameSize := uint64(be.Uint16(e[18:]))
		extra := uint64(be.Uint32(e[20:]))
		next := off + (24+nameSize+extra+7)&^7
		if next > size {
			return corruptf("broken bitmap directory")
		}
		if extra != 0 {
			return corruptf("bitmap extra data is not supported")
		}
		phys := uint64(b.tableSize) << c.bits
		if b.tableSize == 0 || b.tableOffset == 0 || b.tableOffset%uint64(c.cs) != 0 ||
			b.tableSize > checkBmeMaxTableSize || gran > 31 || gran < 9 ||
			flags&checkBmeReservedFlags != 0 || nameSize > checkBmeMaxNameSize || typ != 1 ||
			phys > checkBmeMaxPhysSize ||
			(flags&checkBmeFlagInUse == 0 && c.hdr.Size&^511 > (phys*8)<<gran) {
			return corruptf("bitmap %d doesn't satisfy the constraints", len(c.bitmaps))
		}
		c.bitmaps = append(c.bitmaps, b)
		off = next
	}
	if len(c.bitmaps) != want {
		return corruptf("less bitmaps found than specified in header extension")
	}
	return nil
}

// checkBitmaps counts the bitmap directory, the bitmap tables and the
// bitmap data clusters (qemu's qcow2_check_bitmaps_refcounts).
func (c *checker) checkBitmaps() error {
	if c.nbBitmaps == 0 {
		return nil
	}
	c.inc(c.bitmapDir.offset, int64(c.bitmapDir.size))
	for _, b := range c.bitmaps {
		entries := c.entriesInFile(b.tableOffset, int64(b.tableSize), 8)
		if err := c.spend(&c.l1Work, c.l1Limit, entries); err != nil {
			return err
		}
		c.inc(b.tableOffset, int64(b.tableSize)*8)
		if b.tableOffset > uint64(checkMaxOffset)-uint64(b.tableSize)*8 {
			return fmt.Errorf("qcow2: check: bitmap table at %#x: offset out of range", b.tableOffset)
		}
		// qemu loads the whole table and fails on its first bad entry
		// before counting any; stream it twice to do the same in bounded
		// memory.
		for pass := 0; pass < 2; pass++ {
			for done := int64(0); done < entries; {
				n := min(entries-done, int64(len(c.l1buf))/8)
				buf := c.l1buf[:n*8]
				if err := c.readZ(buf, int64(b.tableOffset)+done*8); err != nil {
					return err
				}
				for i := range n {
					e := binary.BigEndian.Uint64(buf[i*8:])
					off := e & offsetMask
					if pass == 0 {
						if e&checkBmeReservedMask != 0 || off != 0 && (e&1 != 0 || off%uint64(c.cs) != 0) {
							return corruptf("bitmap table at %#x: invalid entry %#x", b.tableOffset, e)
						}
					} else if off != 0 {
						c.inc(off, c.cs)
					}
				}
				done += n
			}
		}
	}
	return nil
}
