package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cangallo/canga/internal/panics"
)

// defaultCacheBytes bounds the L2 table cache of one image or chain: enough
// for 256 GiB of guest data at 64 KiB clusters.
const defaultCacheBytes = 32 << 20

// Image is an open qcow2 image. It implements [Disk] and is safe for
// concurrent use. Reads of ranges that no layer allocates go to the
// backing [Disk], or read as zeros when there is none.
type Image struct {
	ra       io.ReaderAt
	fileSize int64
	hdr      *Header

	size        int64
	clusterBits uint32
	clusterSize int64
	l2Bits      uint32 // log2 of entries per L2 table
	extendedL2  bool
	subBits     uint32 // log2 of the subcluster size
	l1          []l1Entry

	name    string // for errors; set by OpenFile
	backing Disk
	tables  *cache    // L2 tables
	inflate *cache    // decompressed clusters read partially
	srcBufs sync.Pool // *[]byte of compressed bytes, up to two clusters
	closer  io.Closer
}

// Option configures [Open] and [OpenFile].
type Option func(*options)

type options struct {
	backing  Disk
	tables   *cache
	clusters *cache
	format   string
	maxDepth int
	resolve  BackingResolver
}

// WithBacking makes reads of unallocated ranges go to d. [Open] does not
// open backing files by itself; [OpenFile] does.
func WithBacking(d Disk) Option { return func(o *options) { o.backing = d } }

// Open opens the qcow2 image in ra, a file of size bytes. Without
// [WithBacking], ranges the image does not allocate read as zeros even if
// the header names a backing file.
//
// Open refuses every image that qemu refuses to open (qemu's qcow2_do_open:
// the header and its extensions, see [ReadHeader]; the reference count
// table, the snapshot table, the persistent bitmaps), and a few more,
// listed in docs/qemu-differences.md: canga never reads past the end of
// the file, where qemu reads zeros.
func Open(ra io.ReaderAt, size int64, opts ...Option) (*Image, error) {
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	hdr, err := ReadHeader(ra, size)
	if err != nil {
		return nil, err
	}
	if err := ValidateTables(ra, size, hdr); err != nil {
		return nil, err
	}
	return openWithHeader(ra, size, hdr, &o)
}

func openWithHeader(ra io.ReaderAt, fileSize int64, hdr *Header, o *options) (*Image, error) {
	img := &Image{
		ra:          ra,
		fileSize:    fileSize,
		hdr:         hdr,
		size:        hdr.VirtualSize(),
		clusterBits: hdr.ClusterBits,
		clusterSize: hdr.ClusterSize(),
		l2Bits:      hdr.l2Bits(),
		extendedL2:  hdr.ExtendedL2(),
		backing:     o.backing,
		tables:      o.tables,
		inflate:     o.clusters,
	}
	if img.extendedL2 {
		img.subBits = hdr.ClusterBits - 5
	} else {
		img.subBits = hdr.ClusterBits
	}
	if img.tables == nil {
		img.tables = newCache(defaultCacheBytes, 4)
	}
	if img.inflate == nil {
		img.inflate = newCache(8*img.clusterSize, 2)
	}
	// Only the entries that map the virtual disk are read: the rest of a
	// larger L1 table can only describe VM state, which is not guest data.
	n := hdr.l1EntriesFor(hdr.Size)
	buf := make([]byte, n*8) // bounded by maxL1Bytes and the file size in validate
	if _, err := ra.ReadAt(buf, int64(hdr.L1TableOffset)); err != nil && !(errors.Is(err, io.EOF) && n == 0) {
		return nil, fmt.Errorf("qcow2: read L1 table: %w", err)
	}
	img.l1 = make([]l1Entry, n)
	for i := range img.l1 {
		img.l1[i] = l1Entry(binary.BigEndian.Uint64(buf[i*8:]))
	}
	return img, nil
}

// Header returns the image's parsed header. The caller must not modify it.
func (img *Image) Header() *Header { return img.hdr }

// Size is the virtual size in bytes.
func (img *Image) Size() int64 { return img.size }

// Name is the file name [OpenFile] opened the image by, or "".
func (img *Image) Name() string { return img.name }

// Backing returns the backing disk, or nil.
func (img *Image) Backing() Disk { return img.backing }

// Close closes the image's file, if [OpenFile] opened it, and its backing
// chain.
func (img *Image) Close() error {
	var errs []error
	if img.closer != nil {
		errs = append(errs, img.closer.Close())
	}
	if img.backing != nil {
		errs = append(errs, img.backing.Close())
	}
	return errors.Join(errs...)
}

// segKind classifies a guest range of one layer.
type segKind uint8

const (
	segUnallocated segKind = iota // read from the backing file
	segZero
	segData       // host bytes at segment.host
	segCompressed // one whole cluster, described by segment.entry
)

// segment is a guest range of one layer with one kind. Adjacent ranges of
// data clusters are merged when their host clusters are adjacent too, so
// that a run of them is one read.
type segment struct {
	off, n int64
	kind   segKind
	host   int64   // segData: host offset of off
	entry  l2Entry // segCompressed: the L2 entry
}

func (s *segment) extend(t segment) bool {
	if s.kind != t.kind || s.off+s.n != t.off || s.kind == segCompressed {
		return false
	}
	if s.kind == segData && s.host+s.n != t.host {
		return false
	}
	s.n += t.n
	return true
}

var errStopWalk = errors.New("stop walk")

// walk calls fn, in order, for the segments of this layer that cover
// [off, off+n), which must lie inside the virtual disk.
func (img *Image) walk(off, n int64, fn func(segment) error) error {
	var pending segment
	have := false
	emit := func(s segment) error {
		if have && pending.extend(s) {
			return nil
		}
		if have {
			if err := fn(pending); err != nil {
				return err
			}
		}
		pending, have = s, true
		return nil
	}
	end := off + n
	tableShift := img.clusterBits + img.l2Bits
	for off < end {
		l1Index := off >> tableShift
		stop := min(end, (l1Index+1)<<tableShift)
		table, err := img.l2Table(l1Index)
		if err != nil {
			return err
		}
		if table == nil {
			if err := emit(segment{off: off, n: stop - off, kind: segUnallocated}); err != nil {
				return err
			}
			off = stop
			continue
		}
		for off < stop {
			clusterEnd := min(stop, (off>>img.clusterBits+1)<<img.clusterBits)
			i := (off >> img.clusterBits) & (1<<img.l2Bits - 1)
			if err := img.classify(table, i, off, clusterEnd, emit); err != nil {
				return err
			}
			off = clusterEnd
		}
	}
	if have {
		return fn(pending)
	}
	return nil
}

// classify emits the segments of [off, end), a range inside the cluster
// described by entry i of table.
func (img *Image) classify(table []byte, i, off, end int64, emit func(segment) error) error {
	entry, bitmap := readL2(table, i, img.extendedL2)
	kind := entry.kind(img.extendedL2)
	if kind == clusterCompressed {
		return emit(segment{off: off, n: end - off, kind: segCompressed, entry: entry})
	}
	host := entry.hostOffset()
	if host&(img.clusterSize-1) != 0 {
		return corruptf("data cluster offset %#x of guest offset %#x is not cluster aligned", host, off)
	}
	if !img.extendedL2 {
		switch kind {
		case clusterZeroPlain, clusterZeroAlloc:
			return emit(segment{off: off, n: end - off, kind: segZero})
		case clusterUnallocated:
			return emit(segment{off: off, n: end - off, kind: segUnallocated})
		}
		return emit(segment{off: off, n: end - off, kind: segData, host: host + off&(img.clusterSize-1)})
	}
	if bitmap.alloc()&bitmap.zeros() != 0 {
		return corruptf("subcluster of guest offset %#x is both allocated and zero", off)
	}
	if kind == clusterUnallocated && bitmap.alloc() != 0 {
		return corruptf("subclusters of guest offset %#x are allocated in an unallocated cluster", off)
	}
	subSize := int64(1) << img.subBits
	for off < end {
		sc := (off >> img.subBits) & (subclustersPerClust - 1)
		subEnd := min(end, (off>>img.subBits+1)<<img.subBits)
		s := segment{off: off, n: subEnd - off, kind: segUnallocated}
		switch bitmap.subclusterKind(sc) {
		case clusterNormal:
			s.kind, s.host = segData, host+sc*subSize+off&(subSize-1)
		case clusterZeroPlain:
			s.kind = segZero
		}
		if err := emit(s); err != nil {
			return err
		}
		off = subEnd
	}
	return nil
}

// l2Table returns the L2 table of an L1 index, or nil if it has none.
func (img *Image) l2Table(l1Index int64) ([]byte, error) {
	off := img.l1[l1Index].tableOffset()
	if off == 0 {
		return nil, nil
	}
	if off&uint64(img.clusterSize-1) != 0 {
		return nil, corruptf("L2 table offset %#x (L1 index %d) is not cluster aligned", off, l1Index)
	}
	if off > uint64(img.fileSize) || uint64(img.clusterSize) > uint64(img.fileSize)-off {
		return nil, corruptf("L2 table at %#x (L1 index %d) lies past the end of the file (%d bytes)", off, l1Index, img.fileSize)
	}
	return img.tables.get(cacheKey{img, off}, func() ([]byte, error) {
		b := make([]byte, img.clusterSize)
		if _, err := img.ra.ReadAt(b, int64(off)); err != nil {
			return nil, fmt.Errorf("qcow2: read L2 table at %#x: %w", off, err)
		}
		return b, nil
	})
}

// ReadAt implements [io.ReaderAt] over the guest-visible content.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(len(p), off, img.size)
	if n == 0 {
		return 0, eof
	}
	err := img.walk(off, int64(n), func(s segment) error {
		dst := p[s.off-off : s.off-off+s.n]
		switch s.kind {
		case segZero:
			clear(dst)
		case segUnallocated:
			if img.backing == nil {
				clear(dst)
				return nil
			}
			return readDiskAt(img.backing, dst, s.off)
		case segData:
			if s.host >= img.fileSize {
				return corruptf("data cluster at %#x (guest offset %#x) lies past the end of the file (%d bytes): the image is truncated", s.host, s.off, img.fileSize)
			}
			return readFileAt(img.ra, dst, s.host, img.fileSize)
		case segCompressed:
			return img.readCompressed(dst, s)
		}
		return nil
	})
	if err != nil {
		return 0, img.wrap(err)
	}
	return n, eof
}

// LayerError is an error of one image file of a chain.
type LayerError struct {
	Name string
	Err  error
}

func (e *LayerError) Error() string { return e.Name + ": " + e.Err.Error() }
func (e *LayerError) Unwrap() error { return e.Err }

// wrap names the image file in err, once: errors of a backing file already
// carry the backing file's name.
func (img *Image) wrap(err error) error {
	var le *LayerError
	if img.name == "" || errors.As(err, &le) {
		return err
	}
	return &LayerError{Name: img.name, Err: err}
}

func (img *Image) readCompressed(dst []byte, s segment) error {
	guest := s.off &^ (img.clusterSize - 1)
	if int64(len(dst)) == img.clusterSize {
		return img.decompress(dst, s.entry, guest)
	}
	// A partial read: keep the cluster for the reads of its other parts.
	data, err := img.inflate.get(cacheKey{img, uint64(s.entry)}, func() ([]byte, error) {
		b := make([]byte, img.clusterSize)
		return b, img.decompress(b, s.entry, guest)
	})
	if err != nil {
		return err
	}
	copy(dst, data[s.off&(img.clusterSize-1):])
	return nil
}

// testHookDecompress, when set by a test, runs before each cluster is
// decompressed: a panic there stands for a decoder bug.
var testHookDecompress func()

// decompress fills dst with the compressed cluster of entry, the one at
// guest offset guest.
func (img *Image) decompress(dst []byte, entry l2Entry, guest int64) (err error) {
	off, n := entry.compressedRange(img.clusterBits)
	// A decoder bug that a hostile cluster reaches must not take the
	// process down; say which cluster it was.
	defer panics.Recover(&err, ErrInternal, func() string {
		return fmt.Sprintf("decompressing the cluster at guest offset %#x (%d bytes at %#x in the file)", guest, n, off)
	})
	if testHookDecompress != nil {
		testHookDecompress()
	}
	if off >= img.fileSize {
		// qemu would read zeros and fail to decompress them; say why.
		return corruptf("compressed cluster at %#x lies past the end of the file (%d bytes): the image is truncated", off, img.fileSize)
	}
	// n is at most two clusters: the sector count is bounded by cluster_bits.
	bp, _ := img.srcBufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 2*img.clusterSize)
		bp = &b
	}
	defer img.srcBufs.Put(bp)
	src := (*bp)[:n]
	if err := readFileAt(img.ra, src, off, img.fileSize); err != nil {
		return fmt.Errorf("qcow2: read compressed cluster at %#x: %w", off, err)
	}
	if err := decompressCluster(img.hdr.CompressionType, dst, src); err != nil {
		return corruptf("compressed cluster at %#x does not decompress to %d bytes: %v", off, len(dst), err)
	}
	return nil
}

// Extent implements [Disk.Extent], resolving unallocated ranges through the
// backing chain.
func (img *Image) Extent(off, length int64) (Extent, error) {
	n, _ := clampRead(int(min(length, img.size)), off, img.size)
	if n <= 0 {
		return Extent{Offset: off}, nil
	}
	var ext Extent
	started := false
	err := img.walk(off, int64(n), func(s segment) error {
		kind, runLen, err := img.resolve(s)
		if err != nil {
			return err
		}
		if !started {
			ext, started = Extent{Offset: s.off, Length: runLen, Kind: kind}, true
		} else if kind == ext.Kind {
			ext.Length += runLen
		} else {
			return errStopWalk
		}
		if runLen < s.n {
			return errStopWalk
		}
		return nil
	})
	if err != nil && err != errStopWalk {
		return Extent{}, img.wrap(err)
	}
	return ext, nil
}

// resolve returns the kind of the start of segment s and how long that
// kind lasts within s.
func (img *Image) resolve(s segment) (ExtentKind, int64, error) {
	switch s.kind {
	case segData, segCompressed:
		return Data, s.n, nil
	case segZero:
		return Zero, s.n, nil
	}
	if img.backing == nil {
		return Unallocated, s.n, nil
	}
	bsize := img.backing.Size()
	if s.off >= bsize {
		return Zero, s.n, nil
	}
	e, err := img.backing.Extent(s.off, min(s.n, bsize-s.off))
	if err != nil {
		return 0, 0, err
	}
	if e.Length <= 0 {
		return 0, 0, fmt.Errorf("qcow2: backing file reports an empty extent at %#x", s.off)
	}
	return e.Kind, e.Length, nil
}

// Layer describes this image's own allocation, without the backing chain:
// [Unallocated] means "read from the backing file".
func (img *Image) Layer(off, length int64) (Extent, error) {
	n, _ := clampRead(int(min(length, img.size)), off, img.size)
	if n <= 0 {
		return Extent{Offset: off}, nil
	}
	var ext Extent
	started := false
	err := img.walk(off, int64(n), func(s segment) error {
		kind := Data
		switch s.kind {
		case segZero:
			kind = Zero
		case segUnallocated:
			kind = Unallocated
		}
		if !started {
			ext, started = Extent{Offset: s.off, Length: s.n, Kind: kind}, true
			return nil
		}
		if kind != ext.Kind {
			return errStopWalk
		}
		ext.Length += s.n
		return nil
	})
	if err != nil && err != errStopWalk {
		return Extent{}, img.wrap(err)
	}
	return ext, nil
}
