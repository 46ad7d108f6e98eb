package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
// bytes. It reads at most one cluster.
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
		return nil, corruptf("cluster_bits %d out of range %d..%d", h.ClusterBits, MinClusterBits, MaxClusterBits)
	}
	clusterSize := uint64(1) << h.ClusterBits
	if h.Version == 3 {
		if h.HeaderLength < v3MinHeaderLength || h.HeaderLength%8 != 0 {
			return nil, corruptf("header_length %d: must be a multiple of 8 and at least %d", h.HeaderLength, v3MinHeaderLength)
		}
		if uint64(h.HeaderLength) > clusterSize {
			return nil, corruptf("header_length %d exceeds the cluster size %d", h.HeaderLength, clusterSize)
		}
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

func (h *Header) validate(fileSize int64) error {
	clusterSize := uint64(1) << h.ClusterBits
	if unknown := h.IncompatibleFeatures &^ knownIncompatMask; unknown != 0 {
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
	if h.IncompatibleFeatures&IncompatDataFile != 0 {
		return unsupportedf("external data file")
	}
	if h.CryptMethod != 0 {
		return unsupportedf("encryption (crypt_method %d)", h.CryptMethod)
	}
	if h.RefcountOrder > 6 {
		return corruptf("refcount_order %d exceeds 6", h.RefcountOrder)
	}
	if h.IncompatibleFeatures&IncompatCompression != 0 {
		if h.HeaderLength <= 104 {
			return corruptf("compression type bit set but header has no compression_type field")
		}
		if h.CompressionType != headerCompressionZstd {
			return unsupportedf("compression type %d", h.CompressionType)
		}
	} else if h.CompressionType != headerCompressionZlib {
		return corruptf("compression_type %d without the compression type feature bit", h.CompressionType)
	}
	if h.ExtendedL2() && h.ClusterBits < extendedL2MinBits {
		return corruptf("extended L2 entries need clusters of at least 16 KiB, have %d bytes", clusterSize)
	}
	if h.Size > maxVirtualSize {
		return corruptf("virtual size %d is absurd", h.Size)
	}
	needL1 := h.l1EntriesFor(h.Size)
	if needL1*8 > maxL1Bytes {
		return unsupportedf("virtual size %d needs an L1 table of %d bytes, more than qemu's limit of %d", h.Size, needL1*8, maxL1Bytes)
	}
	if uint64(h.L1Size)*8 > maxL1Bytes {
		return corruptf("l1_size %d exceeds qemu's limit of %d entries", h.L1Size, maxL1Bytes/8)
	}
	if uint64(h.L1Size) < needL1 {
		return corruptf("L1 table too small: %d entries for a virtual size of %d bytes (need %d)", h.L1Size, h.Size, needL1)
	}
	if err := checkTable("L1 table", h.L1TableOffset, needL1*8, clusterSize, fileSize); err != nil {
		return err
	}
	if uint64(h.RefcountTableClusters) > maxRefcountTable>>h.ClusterBits {
		return corruptf("refcount table of %d clusters exceeds qemu's limit of %d bytes", h.RefcountTableClusters, maxRefcountTable)
	}
	if h.RefcountTableOffset%clusterSize != 0 {
		return corruptf("refcount table offset %#x is not cluster aligned", h.RefcountTableOffset)
	}
	if h.NbSnapshots > maxSnapshots {
		return corruptf("%d snapshots exceed qemu's limit of %d", h.NbSnapshots, maxSnapshots)
	}
	if h.NbSnapshots > 0 && h.SnapshotsOffset%clusterSize != 0 {
		return corruptf("snapshot table offset %#x is not cluster aligned", h.SnapshotsOffset)
	}
	return nil
}

// checkTable checks that a table of n bytes at off is cluster aligned and
// lies inside the file.
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

func (h *Header) parseExtensions(buf []byte, full int) error {
	short := len(buf) < full
	if h.Version == 2 && h.BackingFileOffset != 0 && h.BackingFileOffset < v2HeaderLength {
		return corruptf("backing file name overlaps the header")
	}
	be := binary.BigEndian
	off := uint64(h.HeaderLength)
	end := uint64(len(buf))
	// In a version 2 image without extensions the backing file name may
	// follow the header directly; extensions end where it starts.
	if h.BackingFileOffset != 0 && h.BackingFileOffset < end {
		end = h.BackingFileOffset
	}
	seen := map[uint32]bool{}
	// Running into the end of a part of the cluster is not the end of
	// the area.
	cut := short && end == uint64(len(buf))
	for {
		if off+8 > end {
			if cut {
				return errShortPrefix
			}
			// qemu stops quietly when the area is exhausted.
			h.ExtensionsEnd = off
			return nil
		}
		typ := be.Uint32(buf[off:])
		length := uint64(be.Uint32(buf[off+4:]))
		off += 8
		if typ == extEnd {
			h.ExtensionsEnd = off
			return nil
		}
		if length > end-off {
			if cut {
				return errShortPrefix
			}
			return corruptf("header extension %#x of %d bytes runs past the header area", typ, length)
		}
		data := buf[off : off+length]
		if typ != extFeatureTable && seen[typ] {
			return corruptf("header extension %#x appears twice", typ)
		}
		seen[typ] = true
		switch typ {
		case extBackingFormat:
			if length > maxBackingFormatLen {
				return corruptf("backing format name of %d bytes is too long", length)
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
		case extCrypto:
			return unsupportedf("encryption header extension")
		case extDataFile:
			return unsupportedf("external data file %q", string(data))
		default:
			h.Unknown = append(h.Unknown, Extension{Type: typ, Data: append([]byte(nil), data...)})
		}
		off += (length + 7) &^ 7
	}
}

func (h *Header) parseBackingName(buf []byte, full int) error {
	if h.BackingFileOffset == 0 {
		if h.BackingFormat != "" {
			return corruptf("backing format %q without a backing file", h.BackingFormat)
		}
		return nil
	}
	if h.BackingFileSize == 0 {
		return corruptf("backing file name is empty")
	}
	if h.BackingFileSize > maxBackingNameLen {
		return corruptf("backing file name of %d bytes is longer than %d", h.BackingFileSize, maxBackingNameLen)
	}
	end := h.BackingFileOffset + uint64(h.BackingFileSize)
	if end > uint64(1)<<h.ClusterBits {
		return corruptf("backing file name runs past the first cluster")
	}
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
