package qcow2

// Check: the orchestration, the result and the reads every table uses.
// The tables are checked in check_refcount.go, check_l1l2.go,
// check_snapshot.go and check_bitmap.go.

import (
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

// Reads at offsets this large fail in qemu's block layer
// (BDRV_MAX_LENGTH); qemu-img check then aborts.
const checkMaxOffset = math.MaxInt64 &^ (1<<30 - 1)

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
	// ReadHeader made the checks of qemu's open (qcow2_validate_table and
	// the bitmaps extension); the bitmaps are loaded next, as qemu-img
	// check's opening does, then the snapshot table is read.
	reftableBytes := int64(h.RefcountTableClusters) << c.bits
	if err := c.loadBitmaps(); err != nil {
		return err
	}
	if err := c.readSnapshots(); err != nil {
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
