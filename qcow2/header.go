package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// Magic is the first four bytes of every qcow2 file.
const Magic = "QFI\xfb"

// Limits that qemu enforces as well; images beyond them cannot be opened by
// qemu either, so refusing them costs nothing and bounds our memory.
const (
	MinClusterBits = 9  // 512 bytes
	MaxClusterBits = 21 // 2 MiB

	maxL1Bytes          = 32 << 20 // QCOW_MAX_L1_SIZE
	maxRefcountTable    = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	maxBackingNameLen   = 1023
	maxBackingFormatLen = 15 // qemu keeps it in a 16-byte buffer
	maxSnapshots        = 65536
	snapshotHeaderSize  = 40                // sizeof(QCowSnapshotHeader)
	maxBitmaps          = 65535             // QCOW2_MAX_BITMAPS
	maxBitmapDirectory  = 1024 * maxBitmaps // QCOW2_MAX_BITMAP_DIRECTORY_SIZE
	cryptAES            = 1
	cryptLUKS           = 2
	v2HeaderLength      = 72
	v3MinHeaderLength   = 104
	maxVirtualSize      = 1 << 62 // keeps every offset computation inside int64
	extendedL2MinBits   = 14
	subclustersPerClust = 32
)

// Incompatible feature bits.
const (
	IncompatDirty        = 1 << 0
	IncompatCorrupt      = 1 << 1
	IncompatDataFile     = 1 << 2
	IncompatCompression  = 1 << 3
	IncompatExtendedL2   = 1 << 4
	knownIncompatMask    = IncompatDirty | IncompatCorrupt | IncompatDataFile | IncompatCompression | IncompatExtendedL2
	CompatLazyRefcounts  = 1 << 0
	AutoclearBitmaps     = 1 << 0
	AutoclearRawDataFile = 1 << 1
)

// Header extension types.
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extFeatureTable  = 0x6803f857
	extBitmaps       = 0x23852875
	extCrypto        = 0x0537be77
	extDataFile      = 0x44415441
)

// Errors callers can branch on with [errors.Is].
var (
	// ErrNotQcow2 means the file does not start with the qcow2 magic.
	ErrNotQcow2 = errors.New("qcow2: not a qcow2 image")
	// ErrUnsupported means a valid image uses a feature canga does not
	// implement (encryption, external data files, unknown feature bits).
	ErrUnsupported = errors.New("qcow2: unsupported")
	// ErrCorrupt means the image contradicts the format.
	ErrCorrupt = errors.New("qcow2: corrupt image")
	// ErrInternal means canga met a bug of its own, such as a panic while
	// it decoded an image; the error names the image and the guest
	// offset where it could.
	ErrInternal = errors.New("qcow2: internal error")
)

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, args...))
}

// FeatureName is one entry of the feature name table extension.
type FeatureName struct {
	Type uint8 // 0 incompatible, 1 compatible, 2 autoclear
	Bit  uint8
	Name string
}

// Extension is a header extension canga does not interpret, kept so that a
// header rewrite can preserve it.
type Extension struct {
	Type uint32
	Data []byte
}

// Header is a parsed and validated qcow2 header with its extensions.
type Header struct {
	Version               uint32
	BackingFileOffset     uint64
	BackingFileSize       uint32
	ClusterBits           uint32
	Size                  uint64 // virtual size in bytes
	CryptMethod           uint32
	L1Size                uint32
	L1TableOffset         uint64
	RefcountTableOffset   uint64
	RefcountTableClusters uint32
	NbSnapshots           uint32
	SnapshotsOffset       uint64
	IncompatibleFeatures  uint64
	CompatibleFeatures    uint64
	AutoclearFeatures     uint64
	RefcountOrder         uint32
	HeaderLength          uint32
	CompressionType       uint8

	BackingFile   string // as stored: may be relative to the image's directory
	BackingFormat string // from the backing format extension; "" if absent
	FeatureNames  []FeatureName
	// Bitmaps is set when a bitmaps extension is present. Bitmaps do not
	// change guest-visible content, so they are kept but not interpreted.
	Bitmaps bool
	// Unknown holds extensions canga does not know, in file order.
	Unknown []Extension
	// ExtensionsEnd is the offset just past the end-of-extensions marker.
	ExtensionsEnd uint64

	bitmaps bitmapsExt // set when qemu heeds the bitmaps extension
}

// bitmapsExt is the bitmaps extension, when the bitmaps autoclear bit says
// that it is consistent (qemu's s->nb_bitmaps and bitmap_directory_*).
type bitmapsExt struct {
	nb                 uint32 // 0: no bitmaps qemu would load
	dirSize, dirOffset uint64
}

// VirtualSize is the size of the guest disk in bytes. qemu counts whole
// 512-byte sectors and drops a partial one, and so does canga: the image ID
// must equal the digest of qemu-img's raw output.
func (h *Header) VirtualSize() int64 { return int64(h.Size &^ 511) }

// ClusterSize is the cluster size in bytes.
func (h *Header) ClusterSize() int64 { return 1 << h.ClusterBits }

// ExtendedL2 reports whether L2 entries carry subcluster bitmaps.
func (h *Header) ExtendedL2() bool { return h.IncompatibleFeatures&IncompatExtendedL2 != 0 }

// RefcountBits is the width of one refcount entry.
func (h *Header) RefcountBits() int { return 1 << h.RefcountOrder }

// Compression is the algorithm of the image's compressed clusters:
// [CompressionZlib] or [CompressionZstd], whether or not any cluster is
// compressed.
func (h *Header) Compression() Compression {
	if h.CompressionType == headerCompressionZstd {
		return CompressionZstd
	}
	return CompressionZlib
}

// l2EntryBytes is the size of one L2 entry: 8, or 16 with extended L2.
func (h *Header) l2EntryBytes() int64 {
	if h.ExtendedL2() {
		return 16
	}
	return 8
}

// l2Bits is log2 of the number of entries in one L2 table.
func (h *Header) l2Bits() uint32 {
	if h.ExtendedL2() {
		return h.ClusterBits - 4
	}
	return h.ClusterBits - 3
}

// l1EntriesFor is the number of L1 entries needed to map size bytes.
func (h *Header) l1EntriesFor(size uint64) uint64 {
	shift := h.ClusterBits + h.l2Bits()
	return (size + (1 << shift) - 1) >> shift
}

// ReadHeader reads and validates the header of the qcow2 file ra of fileSize
// bytes: every check that qemu's qcow2_do_open makes on the header and its
// extensions, in qemu's order where it matters, with qemu's limits. It reads
// at most one cluster. The checks that need the tables the header points to
// (the snapshot table, the bitmap directory) are made by [Open] and
// [OpenFile], not here.
func ReadHeader(ra io.ReaderAt, fileSize int64) (*Header, error) {
	var fixed [v3MinHeaderLength + 8]byte
	n, err := ra.ReadAt(fixed[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("qcow2: read header: %w", err)
	}
	if n < 4 || string(fixed[:4]) != Magic {
		return nil, ErrNotQcow2
	}
	if n < v2HeaderLength {
		return nil, corruptf("header truncated: file has %d bytes", n)
	}
	be := binary.BigEndian
	h := &Header{
		Version:               be.Uint32(fixed[4:]),
		BackingFileOffset:     be.Uint64(fixed[8:]),
		BackingFileSize:       be.Uint32(fixed[16:]),
		ClusterBits:           be.Uint32(fixed[20:]),
		Size:                  be.Uint64(fixed[24:]),
		CryptMethod:           be.Uint32(fixed[32:]),
		L1Size:                be.Uint32(fixed[36:]),
		L1TableOffset:         be.Uint64(fixed[40:]),
		RefcountTableOffset:   be.Uint64(fixed[48:]),
		RefcountTableClusters: be.Uint32(fixed[56:]),
		NbSnapshots:           be.Uint32(fixed[60:]),
		SnapshotsOffset:       be.Uint64(fixed[64:]),
	}
	switch h.Version {
	case 2:
		h.RefcountOrder = 4
		h.HeaderLength = v2HeaderLength
	case 3:
		if n < v3MinHeaderLength {
			return nil, corruptf("version 3 header truncated: file has %d bytes", n)
		}
		h.IncompatibleFeatures = be.Uint64(fixed[72:])
		h.CompatibleFeatures = be.Uint64(fixed[80:])
		h.AutoclearFeatures = be.Uint64(fixed[88:])
		h.RefcountOrder = be.Uint32(fixed[96:])
		h.HeaderLength = be.Uint32(fixed[100:])
	default:
		return nil, unsupportedf("version %d (only 2 and 3 exist)", h.Version)
	}
	if h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits {
		return nil, corruptf("cluster_bits %d out of range %d..%d (unsupported cluster size)", h.ClusterBits, MinClusterBits, MaxClusterBits)
	}
	clusterSize := uint64(1) << h.ClusterBits
	if h.Version == 3 {
		// qemu only asks for 104 bytes; the format's "multiple of 8" is a
		// rule canga keeps (docs/qemu-differences.md).
		if h.HeaderLength < v3MinHeaderLength || h.HeaderLength%8 != 0 {
			return nil, corruptf("header_length %d: must be a multiple of 8 and at least %d (qcow2 header too short)", h.HeaderLength, v3MinHeaderLength)
		}
		if uint64(h.HeaderLength) > clusterSize {
			return nil, corruptf("header_length %d exceeds the cluster size %d", h.HeaderLength, clusterSize)
		}
	}
	if h.BackingFileOffset > clusterSize {
		return nil, corruptf("invalid backing file offset %#x: past the first cluster", h.BackingFileOffset)
	}

	// Everything else the header describes lives in the first cluster; read
	// it whole (at most 2 MiB, bounded by cluster_bits above).
	first := min(int64(clusterSize), fileSize)
	if first < int64(h.HeaderLength) {
		return nil, corruptf("header truncated: %d of %d bytes", first, h.HeaderLength)
	}
	// The header, its extensions and the backing file name nearly always
	// fit in the first kilobytes: read those, and the whole cluster only
	// when they run further (fsck reads the headers of 100,000 blobs whose
	// clusters are 64 KiB). What is parsed is the same either way.
	fixedHeader := *h
	for read := min(first, headPrefix); ; read = first {
		*h = fixedHeader
		buf := make([]byte, read)
		if _, err := ra.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("qcow2: read header cluster: %w", err)
		}
		err := h.parseCluster(buf, int(first), fileSize)
		if errors.Is(err, errShortPrefix) && read < first {
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	return h, nil
}

// headPrefix is how much of the first cluster ReadHeader reads first.
const headPrefix = 4096

// errShortPrefix: the part of the first cluster read is not enough.
var errShortPrefix = errors.New("qcow2: header runs past the part read")

// parseCluster parses what the header describes in buf, the first
// len(buf) bytes of the first cluster, which has full bytes in the file.
// A buf shorter than full that does not hold it all is errShortPrefix.
func (h *Header) parseCluster(buf []byte, full int, fileSize int64) error {
	if h.Version == 3 && h.HeaderLength > v3MinHeaderLength {
		h.CompressionType = buf[104]
	}
	if err := h.parseExtensions(buf, full); err != nil {
		return err
	}
	if err := h.validate(fileSize); err != nil {
		return err
	}
	return h.parseBackingName(buf, full)
}

// bdrvMaxLength is the largest offset qemu's block layer reads at
// (BDRV_MAX_LENGTH): a table that ends beyond it makes qemu's open fail
// with an I/O error, whatever the size of the file.
const bdrvMaxLength = math.MaxInt64 &^ (1<<30 - 1)

// validate makes qcow2_do_open's checks of the fixed header fields, and
// canga's own: tables that must lie inside the file do (see
// docs/qemu-differences.md).
func (h *Header) validate(fileSize int64) error {
	clusterSize := uint64(1) << h.ClusterBits
	// validate_compression_type: an unknown type first, then the feature
	// bit, which must be set exactly when the type is not zlib.
	switch h.CompressionType {
	case headerCompressionZlib:
		if h.IncompatibleFeatures&IncompatCompression != 0 {
			return corruptf("compression type incompatible feature bit must not be set: the compression type is zlib")
		}
	case headerCompressionZstd:
		if h.IncompatibleFeatures&IncompatCompression == 0 {
			return corruptf("compression type incompatible feature bit must be set: compression_type is %d (zstd)", h.CompressionType)
		}
	default:
		return unsupportedf("unknown compression type %d", h.CompressionType)
	}
	if unknown := h.IncompatibleFeatures &^ knownIncompatMask; unknown != 0 {
		// Named from the image's feature name table, as qemu does.
		var names []string
		for bit := range 64 {
			if unknown&(1<<bit) != 0 {
				if name := h.FeatureNameOf(0, uint8(bit)); name != "" {
					names = append(names, name)
				} else {
					names = append(names, fmt.Sprintf("bit %d", bit))
				}
			}
		}
		return unsupportedf("unknown incompatible features: %s", strings.Join(names, ", "))
	}
	if h.ExtendedL2() && h.ClusterBits < extendedL2MinBits {
		return corruptf("unsupported subcluster size %d: extended L2 entries need clusters of at least 16 KiB, have %d bytes", clusterSize/subclustersPerClust, clusterSize)
	}
	if h.RefcountOrder > 6 {
		return corruptf("refcount_order %d exceeds 6: reference count entry width too large; may not exceed 64 bits", h.RefcountOrder)
	}
	switch h.CryptMethod {
	case 0:
	case cryptAES, cryptLUKS:
		return unsupportedf("encryption (crypt_method %d): canga reads unencrypted images only", h.CryptMethod)
	default:
		return unsupportedf("encryption: unsupported encryption method %d", h.CryptMethod)
	}
	if h.IncompatibleFeatures&IncompatDataFile != 0 {
		return unsupportedf("external data file")
	}
	if h.AutoclearFeatures&AutoclearRawDataFile != 0 {
		return corruptf("data-file-raw requires a data file: the raw external data bit is set without an external data file")
	}

	// The reference count table (qcow2_validate_table, then the read of
	// qcow2_refcount_init). Its size of 0 is refused by Open, not here:
	// qemu-img check accepts it and reports what it finds.
	reftableBytes := uint64(h.RefcountTableClusters) << h.ClusterBits
	if uint64(h.RefcountTableClusters) > maxRefcountTable>>h.ClusterBits {
		return corruptf("refcount table too large: %d clusters exceed qemu's limit of %d bytes", h.RefcountTableClusters, maxRefcountTable)
	}
	if h.RefcountTableOffset%clusterSize != 0 {
		return corruptf("refcount table offset %#x invalid: not cluster aligned", h.RefcountTableOffset)
	}
	if h.RefcountTableOffset > math.MaxInt64-reftableBytes {
		return corruptf("refcount table offset %#x invalid: the table ends past 2^63", h.RefcountTableOffset)
	}
	if reftableBytes > 0 && h.RefcountTableOffset+reftableBytes > bdrvMaxLength {
		return corruptf("refcount table at %#x cannot be read: it ends past qemu's largest file offset %#x", h.RefcountTableOffset, uint64(bdrvMaxLength))
	}

	// The snapshot table: qemu checks its offset even when there are no
	// snapshots. The entries are read by Open.
	if h.NbSnapshots > maxSnapshots {
		return corruptf("snapshot table too large: %d snapshots exceed qemu's limit of %d", h.NbSnapshots, maxSnapshots)
	}
	if h.SnapshotsOffset%clusterSize != 0 {
		return corruptf("snapshot table offset %#x invalid: not cluster aligned", h.SnapshotsOffset)
	}
	if h.SnapshotsOffset > math.MaxInt64-uint64(h.NbSnapshots)*snapshotHeaderSize {
		return corruptf("snapshot table offset %#x invalid: the table ends past 2^63", h.SnapshotsOffset)
	}

	// The active L1 table.
	if h.Size > maxVirtualSize {
		return corruptf("virtual size %d is absurd", h.Size)
	}
	needL1 := h.l1EntriesFor(h.Size)
	if needL1*8 > maxL1Bytes {
		return unsupportedf("virtual size %d needs an L1 table of %d bytes, more than qemu's limit of %d (image is too big)", h.Size, needL1*8, maxL1Bytes)
	}
	l1Bytes := uint64(h.L1Size) * 8
	if l1Bytes > maxL1Bytes {
		return corruptf("l1_size %d exceeds qemu's limit of %d entries: active L1 table too large", h.L1Size, maxL1Bytes/8)
	}
	if h.L1TableOffset%clusterSize != 0 {
		return corruptf("active L1 table offset %#x invalid: not cluster aligned", h.L1TableOffset)
	}
	if h.L1TableOffset > math.MaxInt64-l1Bytes {
		return corruptf("active L1 table offset %#x invalid: the table ends past 2^63", h.L1TableOffset)
	}
	if uint64(h.L1Size) < needL1 {
		return corruptf("L1 table too small: %d entries for a virtual size of %d bytes (need %d)", h.L1Size, h.Size, needL1)
	}
	if l1Bytes > 0 && h.L1TableOffset+l1Bytes > bdrvMaxLength {
		return corruptf("could not read L1 table: it ends past qemu's largest file offset %#x", uint64(bdrvMaxLength))
	}
	// canga reads only the entries that map the virtual disk, and they
	// must lie in the file.
	return checkTable("L1 table", h.L1TableOffset, needL1*8, clusterSize, fileSize)
}

// checkTable checks that a table of n bytes at off is cluster aligned and
// lies inside the file, and not over the header.
func checkTable(what string, off, n, clusterSize uint64, fileSize int64) error {
	if n == 0 {
		return nil
	}
	if off%clusterSize != 0 {
		return corruptf("%s offset %#x is not cluster aligned", what, off)
	}
	if off == 0 {
		return corruptf("%s overlaps the header", what)
	}
	if off > uint64(fileSize) || n > uint64(fileSize)-off {
		return corruptf("%s at %#x (%d bytes) lies past the end of the file (%d bytes)", what, off, n, fileSize)
	}
	return nil
}

// parseExtensions reads the header extensions as qcow2_read_extensions
// does: from the end of the header to the backing file name, or to the end
// of the first cluster. Bytes past the end of the file read as zeros, as
// in qemu, so that a file that ends after its header has no extensions;
// but an extension whose data would lie there is an error.
func (h *Header) parseExtensions(buf []byte, full int) error {
	short := len(buf) < full
	if h.Version == 2 && h.BackingFileOffset != 0 && h.BackingFileOffset < v2HeaderLength {
		return corruptf("backing file name overlaps the header")
	}
	be := binary.BigEndian
	off := uint64(h.HeaderLength)
	end := uint64(1) << h.ClusterBits
	if h.BackingFileOffset != 0 {
		end = h.BackingFileOffset
	}
	var word [8]byte
	seen := map[uint32]bool{}
	for off < end {
		if short && off+8 > uint64(len(buf)) {
			return errShortPrefix
		}
		clear(word[:])
		if off < uint64(len(buf)) {
			copy(word[:], buf[off:])
		}
		typ := be.Uint32(word[:])
		length := uint64(be.Uint32(word[4:]))
		off += 8
		// qemu tests the room left before it looks at the type: even the
		// end marker must fit.
		if off > end {
			return corruptf("header extension at %#x is too large: %d bytes are left before the end of the header area at %#x, not even room for its type and length", off-8, end-(off-8), end)
		}
		if length > end-off {
			return corruptf("header extension %#x of %d bytes at %#x is too large: it runs past the header area (%d bytes)", typ, length, off-8, end)
		}
		if typ == extEnd {
			h.ExtensionsEnd = off
			return nil
		}
		if off+length > uint64(len(buf)) {
			if short {
				return errShortPrefix
			}
			return corruptf("header extension %#x of %d bytes at %#x runs past the end of the file", typ, length, off-8)
		}
		data := buf[off : off+length]
		if typ != extFeatureTable && seen[typ] {
			return corruptf("header extension %#x appears twice", typ)
		}
		seen[typ] = true
		if err := h.extension(typ, data); err != nil {
			return err
		}
		off += (length + 7) &^ 7
	}
	h.ExtensionsEnd = off
	return nil
}

// extension interprets one header extension.
func (h *Header) extension(typ uint32, data []byte) error {
	be := binary.BigEndian
	switch typ {
	case extBackingFormat:
		if len(data) > maxBackingFormatLen {
			return corruptf("backing format name of %d bytes is too long (at most %d)", len(data), maxBackingFormatLen)
		}
		h.BackingFormat = string(data)
	case extFeatureTable:
		for i := 0; i+48 <= len(data); i += 48 {
			name := string(data[i+2 : i+48])
			if j := strings.IndexByte(name, 0); j >= 0 {
				name = name[:j]
			}
			h.FeatureNames = append(h.FeatureNames, FeatureName{Type: data[i], Bit: data[i+1], Name: name})
		}
	case extBitmaps:
		h.Bitmaps = true
		if len(data) != 24 {
			return corruptf("bitmaps extension: invalid extension length %d (want 24)", len(data))
		}
		// Without the autoclear bit, a program that does not know bitmaps
		// wrote the image last: qemu ignores the extension.
		if h.AutoclearFeatures&AutoclearBitmaps == 0 {
			return nil
		}
		nb := be.Uint32(data[0:])
		dirSize, dirOffset := be.Uint64(data[8:]), be.Uint64(data[16:])
		switch {
		case be.Uint32(data[4:]) != 0:
			return corruptf("bitmaps extension: reserved field is not zero")
		case nb > maxBitmaps:
			return corruptf("bitmaps extension: image has %d bitmaps, exceeding qemu's maximum of %d", nb, maxBitmaps)
		case nb == 0:
			return corruptf("bitmaps extension with zero bitmaps")
		case dirOffset&(uint64(1)<<h.ClusterBits-1) != 0:
			return corruptf("bitmaps extension: invalid bitmap directory offset %#x: not cluster aligned", dirOffset)
		case dirSize > maxBitmapDirectory:
			return corruptf("bitmaps extension: bitmap directory size %d exceeds the maximum of %d", dirSize, maxBitmapDirectory)
		}
		h.bitmaps = bitmapsExt{nb: nb, dirSize: dirSize, dirOffset: dirOffset}
	case extCrypto:
		if h.CryptMethod != cryptLUKS {
			return corruptf("crypto header extension only expected with LUKS encryption method (crypt_method is %d)", h.CryptMethod)
		}
		if len(data) != 16 {
			return corruptf("crypto header extension size %d, but expected size 16", len(data))
		}
		if off := be.Uint64(data); off&(uint64(1)<<h.ClusterBits-1) != 0 {
			return corruptf("encryption header offset %#x is not a multiple of the cluster size", off)
		}
		return unsupportedf("encryption (LUKS): canga reads unencrypted images only")
	default:
		// An external data file name (extDataFile) matters only with the
		// external data file bit, which validate refuses; without it qemu
		// ignores the name, and so does canga. Kept for header rewrites,
		// like the extensions canga does not know.
		h.Unknown = append(h.Unknown, Extension{Type: typ, Data: append([]byte(nil), data...)})
	}
	return nil
}

// parseBackingName reads the backing file name. A name of 0 bytes is no
// backing file, as in qemu.
func (h *Header) parseBackingName(buf []byte, full int) error {
	if h.BackingFileOffset == 0 || h.BackingFileSize == 0 {
		return nil
	}
	clusterSize := uint64(1) << h.ClusterBits
	if h.BackingFileSize > maxBackingNameLen || uint64(h.BackingFileSize) > clusterSize-h.BackingFileOffset {
		return corruptf("backing file name too long: %d bytes at %#x (at most %d, inside the first cluster of %d bytes)",
			h.BackingFileSize, h.BackingFileOffset, maxBackingNameLen, clusterSize)
	}
	end := h.BackingFileOffset + uint64(h.BackingFileSize)
	if end > uint64(len(buf)) {
		if len(buf) < full {
			return errShortPrefix
		}
		return corruptf("backing file name runs past the end of the file")
	}
	if h.BackingFileOffset < uint64(h.HeaderLength) {
		return corruptf("backing file name overlaps the header")
	}
	name := buf[h.BackingFileOffset:end]
	for _, c := range name {
		if c == 0 {
			return corruptf("backing file name contains a NUL byte")
		}
	}
	h.BackingFile = string(name)
	return nil
}

// FeatureNameOf returns the name of a feature bit from the image's feature
// name table, or "" if the table does not name it.
func (h *Header) FeatureNameOf(typ, bit uint8) string {
	for _, f := range h.FeatureNames {
		if f.Type == typ && f.Bit == bit {
			return f.Name
		}
	}
	return ""
}
