package qcow2

// The checks of qemu's qcow2_do_open that read more than the header: the
// reference count table's place, the snapshot table (qcow2_read_snapshots)
// and the persistent bitmaps (qcow2_load_dirty_bitmaps). [ReadHeader] makes
// the checks of the header and its extensions.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Limits of qemu's block/qcow2.h and block/qcow2-bitmap.c.
const (
	maxSnapshotExtra     = 1024     // QCOW_MAX_SNAPSHOT_EXTRA_DATA
	maxSnapshotsSize     = 64 << 20 // QCOW_MAX_SNAPSHOTS_SIZE
	bmeMaxTableSize      = 0x8000000
	bmeMaxPhysSize       = 0x20000000
	bmeMaxNameSize       = 1023
	bmeReservedFlags     = 0xfffffffc
	bmeFlagInUse         = 1
	bmeEntryReservedMask = 0xff000000000001fe
	bmeEntryAllOnes      = 1
	bmeDirEntrySize      = 24
)

// ValidateTables makes the open-time checks of qemu that read the tables
// the header h of the file ra of fileSize bytes points to. [Open] and
// [OpenFile] make them; a caller that reads the header alone, with
// [ReadHeader], calls it to refuse what qemu refuses to open. qemu-img
// check opens images without some of them (a refcount table of size 0,
// the snapshot table), so [Check] does not call it; it makes the bitmap
// checks itself.
//
// canga is stricter than qemu in one way here, as everywhere: the tables
// it reads must lie in the file, where qemu would read zeros past its end.
func ValidateTables(ra io.ReaderAt, fileSize int64, h *Header) error {
	cs := uint64(h.ClusterSize())
	if h.RefcountTableClusters == 0 {
		return corruptf("image does not contain a reference count table (refcount_table_clusters is 0)")
	}
	if err := checkTable("refcount table", h.RefcountTableOffset, uint64(h.RefcountTableClusters)<<h.ClusterBits, cs, fileSize); err != nil {
		return err
	}
	if err := validateSnapshots(ra, fileSize, h); err != nil {
		return err
	}
	return validateBitmaps(ra, fileSize, h)
}

// validateSnapshots walks the snapshot table as qcow2_read_snapshots does:
// each entry's extra data is at most 1 KiB, and the whole table at most 64
// MiB. The snapshots' own L1 tables are not checked: qemu checks them only
// when a snapshot is used, and qemu-img check reports them.
func validateSnapshots(ra io.ReaderAt, fileSize int64, h *Header) error {
	nb := int64(h.NbSnapshots)
	if nb == 0 {
		return nil
	}
	start := int64(h.SnapshotsOffset) // < 2^63, checked by ReadHeader
	if start >= fileSize {
		return corruptf("snapshot table at %#x (%d snapshots) lies past the end of the file (%d bytes)", start, nb, fileSize)
	}
	// The entries are read in order; only their fixed parts matter.
	br := bufio.NewReaderSize(io.NewSectionReader(ra, start, fileSize-start), 64<<10)
	pos := int64(0) // of br, from start
	var length int64
	var e [snapshotHeaderSize]byte
	be := binary.BigEndian
	for i := range nb {
		length = (length + 7) &^ 7
		at := (pos + 7) &^ 7
		if _, err := br.Discard(int(at - pos)); err != nil {
			return snapshotReadError(i, start+at, fileSize, err)
		}
		if _, err := io.ReadFull(br, e[:]); err != nil {
			return snapshotReadError(i, start+at, fileSize, err)
		}
		pos = at + snapshotHeaderSize
		extra := int64(be.Uint32(e[36:]))
		if extra > maxSnapshotExtra {
			return corruptf("too much extra metadata in snapshot table entry %d: %d bytes (at most %d)", i, extra, maxSnapshotExtra)
		}
		rest := extra + int64(be.Uint16(e[12:])) + int64(be.Uint16(e[14:]))
		length += snapshotHeaderSize + rest
		if length > maxSnapshotsSize || pos+rest > math.MaxInt32 {
			return corruptf("snapshot table is too big: more than %d bytes by entry %d", maxSnapshotsSize, i)
		}
		if start+pos+rest > fileSize {
			return corruptf("snapshot table entry %d at %#x lies past the end of the file (%d bytes)", i, start+at, fileSize)
		}
		if _, err := br.Discard(int(rest)); err != nil {
			return snapshotReadError(i, start+at, fileSize, err)
		}
		pos += rest
	}
	return nil
}

func snapshotReadError(i, off, fileSize int64, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return corruptf("snapshot table entry %d at %#x lies past the end of the file (%d bytes)", i, off, fileSize)
	}
	return fmt.Errorf("qcow2: read snapshot table entry %d: %w", i, err)
}

// bitmapEntry is an entry of the bitmap directory.
type bitmapEntry struct {
	tableOffset uint64
	tableSize   uint32
	flags       uint32
	granBits    uint8
	name        string
}

func (b *bitmapEntry) inUse() bool { return b.flags&bmeFlagInUse != 0 }

// parseBitmapDirectory decodes the bitmap directory of size bytes, of
// which dir holds the first ones and the rest reads as zeros (qemu's
// bitmap_list_load and check_dir_entry); want is the number of bitmaps of
// the extension, virtualSize the disk size qemu compares bitmaps with.
func parseBitmapDirectory(dir []byte, size uint64, want int, clusterBits uint32, virtualSize uint64) ([]bitmapEntry, error) {
	be := binary.BigEndian
	// get returns n bytes at off, zeros past the end of dir.
	get := func(off, n uint64) []byte {
		b := make([]byte, n)
		if off < uint64(len(dir)) {
			copy(b, dir[off:])
		}
		return b
	}
	var out []bitmapEntry
	off := uint64(0)
	for off < size {
		if off+bmeDirEntrySize > size {
			return nil, corruptf("broken bitmap directory")
		}
		if len(out) == want {
			return nil, corruptf("more bitmaps found than specified in header extension")
		}
		e := get(off, bmeDirEntrySize)
		nameSize := uint64(be.Uint16(e[18:]))
		extra := uint64(be.Uint32(e[20:]))
		next := off + (bmeDirEntrySize+nameSize+extra+7)&^7
		if next > size {
			return nil, corruptf("broken bitmap directory")
		}
		if extra != 0 {
			return nil, corruptf("bitmap extra data is not supported")
		}
		b := bitmapEntry{
			tableOffset: be.Uint64(e[0:]),
			tableSize:   be.Uint32(e[8:]),
			flags:       be.Uint32(e[12:]),
			granBits:    e[17],
			name:        string(get(off+bmeDirEntrySize, nameSize)),
		}
		typ := e[16]
		cs := uint64(1) << clusterBits
		phys := uint64(b.tableSize) << clusterBits
		if b.tableSize == 0 || b.tableOffset == 0 || b.tableOffset%cs != 0 ||
			b.tableSize > bmeMaxTableSize || b.granBits > 31 || b.granBits < 9 ||
			b.flags&bmeReservedFlags != 0 || nameSize > bmeMaxNameSize || typ != 1 ||
			phys > bmeMaxPhysSize ||
			(!b.inUse() && virtualSize > (phys*8)<<b.granBits) {
			return nil, corruptf("bitmap %d (%q) doesn't satisfy the constraints", len(out), b.name)
		}
		out = append(out, b)
		off = next
	}
	if len(out) != want {
		return nil, corruptf("less bitmaps found than specified in header extension")
	}
	return out, nil
}

// checkBitmapNames refuses what qemu's bdrv_create_dirty_bitmap refuses
// when it loads the bitmaps: a second bitmap of a name. qemu skips, rather
// than creates, a bitmap in use whose name it has seen.
func checkBitmapNames(bms []bitmapEntry) error {
	seen := make(map[string]bool, len(bms))
	for _, b := range bms {
		if seen[b.name] && !b.inUse() {
			return corruptf("bitmap already exists: %q is the name of two bitmaps", b.name)
		}
		seen[b.name] = true
	}
	return nil
}

// bitmapTableEntryValid is qemu's check_table_entry.
func bitmapTableEntryValid(e uint64, clusterSize uint64) bool {
	if e&bmeEntryReservedMask != 0 {
		return false
	}
	off := e & offsetMask
	return off == 0 || e&bmeEntryAllOnes == 0 && off%clusterSize == 0
}

// bitmapTableSizeValid tells whether the table of a bitmap that is not in
// use has the number of entries its data needs (qemu's load_bitmap_data:
// the bitmap serialised in 64-bit words, in clusters).
func bitmapTableSizeValid(b *bitmapEntry, clusterBits uint32, virtualSize uint64) bool {
	var bytes uint64
	if virtualSize > 0 {
		bytes = ((virtualSize-1)>>b.granBits>>6 + 1) * 8
	}
	clusters := (bytes + uint64(1)<<clusterBits - 1) >> clusterBits
	return clusters == uint64(b.tableSize) && clusters <= bmeMaxTableSize
}

// validateBitmaps loads the bitmap directory and the tables of the bitmaps
// that are not in use, with qemu's checks.
func validateBitmaps(ra io.ReaderAt, fileSize int64, h *Header) error {
	ext := h.bitmaps
	if ext.nb == 0 {
		return nil
	}
	if ext.dirSize == 0 {
		return corruptf("bitmap directory size is zero")
	}
	cs := uint64(h.ClusterSize())
	if err := checkTable("bitmap directory", ext.dirOffset, ext.dirSize, cs, fileSize); err != nil {
		return err
	}
	dir := make([]byte, ext.dirSize) // at most 64 MiB, and inside the file
	if err := readFileAt(ra, dir, int64(ext.dirOffset), fileSize); err != nil {
		return fmt.Errorf("qcow2: read bitmap directory: %w", err)
	}
	virtual := h.Size &^ 511
	bms, err := parseBitmapDirectory(dir, ext.dirSize, int(ext.nb), h.ClusterBits, virtual)
	if err != nil {
		return err
	}
	if err := checkBitmapNames(bms); err != nil {
		return err
	}
	buf := make([]byte, 0, 64<<10)
	for i := range bms {
		b := &bms[i]
		if b.inUse() {
			continue // qemu does not load its data
		}
		n := uint64(b.tableSize) * 8
		if err := checkTable(fmt.Sprintf("table of bitmap %q", b.name), b.tableOffset, n, cs, fileSize); err != nil {
			return err
		}
		for done := uint64(0); done < n; {
			p := buf[:min(n-done, uint64(cap(buf)))]
			if err := readFileAt(ra, p, int64(b.tableOffset+done), fileSize); err != nil {
				return fmt.Errorf("qcow2: read the table of bitmap %q: %w", b.name, err)
			}
			for j := 0; j < len(p); j += 8 {
				if e := binary.BigEndian.Uint64(p[j:]); !bitmapTableEntryValid(e, cs) {
					return corruptf("could not read the table of bitmap %q: invalid entry %#x at %#x", b.name, e, b.tableOffset+done+uint64(j))
				}
			}
			done += uint64(len(p))
		}
		if !bitmapTableSizeValid(b, h.ClusterBits, virtual) {
			return corruptf("could not read bitmap %q: its table has %d entries, not the number its size and granularity need", b.name, b.tableSize)
		}
	}
	return nil
}
