package qcow2_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/qcow2"
)

// The open-time refusals of qemu (qcow2_do_open and what it calls): every
// image that qemu-img refuses to open, canga refuses too, with qemu's
// words or clearer ones, and canga check exits as qemu-img check does.
// Each image is made by qemu-img and qemu-io, then a few bytes are poked.

// Header field offsets (docs/interop/qcow2.rst).
const (
	hVersion      = 4
	hBackingOff   = 8
	hBackingSize  = 16
	hClusterBits  = 20
	hSize         = 24
	hCryptMethod  = 32
	hL1Size       = 36
	hL1Offset     = 40
	hReftableOff  = 48
	hReftableClus = 56
	hNbSnapshots  = 60
	hSnapshotsOff = 64
	hIncompatible = 72
	hAutoclear    = 88
	hRefcountOrd  = 96
	hHeaderLength = 100
	hCompression  = 104
	hExtensions   = 112 // qemu 7.2 writes a header of 112 bytes

	extBitmaps   = 0x23852875
	extCrypto    = 0x0537be77
	extBackingFm = 0xe2792aca
	extDataFile  = 0x44415441
)

// openImage is a base image of 4 KiB clusters for the cases.
type openImage struct {
	path string
	snap int64 // offset of the snapshot table
	dir  int64 // offset of the bitmap directory
}

var (
	openBasesOnce sync.Once
	openBases     map[string]openImage
	openBasesErr  error
)

// openBase returns a fresh copy of a base image: "plain" (1 MiB, 64 KiB
// written), "snap" (plus a snapshot) or "bitmaps" (plus bitmaps b1, b2).
func openBase(t *testing.T, kind string) (*chkFile, openImage) {
	t.Helper()
	openBasesOnce.Do(func() {
		dir, err := os.MkdirTemp("", "canga-open-bases-")
		if err != nil {
			openBasesErr = err
			return
		}
		openBases = map[string]openImage{}
		run := func(args ...string) {
			if openBasesErr == nil {
				if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
					openBasesErr = errors.New(strings.Join(args, " ") + ": " + err.Error() + "\n" + string(out))
				}
			}
		}
		for _, k := range []string{"plain", "snap", "bitmaps"} {
			p := filepath.Join(dir, k+".qcow2")
			run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", p, "1M")
			run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", p)
			switch k {
			case "snap":
				run("qemu-img", "snapshot", "-c", "s1", p)
				run("qemu-io", "-f", "qcow2", "-c", "write -P 2 0 8k", p)
			case "bitmaps":
				run("qemu-img", "bitmap", "--add", p, "b1")
				run("qemu-img", "bitmap", "--add", p, "b2")
				run("qemu-io", "-f", "qcow2", "-c", "write -P 3 0 4k", p)
			}
			openBases[k] = openImage{path: p}
		}
	})
	if openBasesErr != nil {
		t.Fatal(openBasesErr)
	}
	b := openBases[kind]
	data, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), kind+".qcow2")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f := chkOpen(t, p)
	img := openImage{path: p, snap: int64(f.hdr.SnapshotsOffset)}
	if kind == "bitmaps" {
		img.dir = f.bitmapDir()
	}
	return f, img
}

func (f *chkFile) putU32(off int64, v uint32) { f.write(off, binary.BigEndian.AppendUint32(nil, v)) }
func (f *chkFile) putU16(off int64, v uint16) { f.write(off, binary.BigEndian.AppendUint16(nil, v)) }

// ext encodes one header extension, padded to 8 bytes.
func ext(typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

// setExts replaces the header extensions with exts and the end marker.
func (f *chkFile) setExts(exts ...[]byte) {
	var b []byte
	for _, e := range exts {
		b = append(b, e...)
	}
	f.write(hExtensions, append(b, make([]byte, 8)...))
}

// bitmapsExt returns the offset of the data of the bitmaps extension.
func (f *chkFile) bitmapsExt() int64 {
	f.t.Helper()
	hdr := f.read(0, int(f.hdr.ClusterSize()))
	for off := int(f.hdr.HeaderLength); off+8 <= len(hdr); {
		typ, n := binary.BigEndian.Uint32(hdr[off:]), int(binary.BigEndian.Uint32(hdr[off+4:]))
		if typ == extBitmaps {
			return int64(off + 8)
		}
		off += 8 + (n+7)&^7
	}
	f.t.Fatal("no bitmaps extension")
	return 0
}

// qemuConvert converts an image to raw with qemu-img, which opens it as a
// reader of its content does; it returns the output file or qemu-img's
// error message.
func qemuConvert(t *testing.T, path string) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.raw")
	if _, code, stderr := testkit.RunCode(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, out); code != 0 {
		if stderr == "" {
			t.Fatalf("qemu-img convert: exit %d", code)
		}
		return "", stderr
	}
	return out, ""
}

// cangaRead opens an image as canga does and digests it: the error of
// whichever fails.
func cangaRead(t *testing.T, path string) (string, error) {
	d, err := qcow2.OpenFile(path)
	if err != nil {
		return "", err
	}
	defer d.Close()
	id, err := qcow2.Digest(t.Context(), d, qcow2.ScanOptions{})
	return string(id), err
}

// openRefusal is one of qemu's open-time checks.
type openRefusal struct {
	name  string
	base  string
	poke  func(f *chkFile, img openImage)
	qemu  string // in qemu-img's message
	canga string // in canga's error
}

// openRefusals are the checks of qemu 7.2's qcow2_do_open and the functions
// it calls, in their order.
var openRefusals = []openRefusal{
	// The header (qcow2_do_open).
	{"version-1", "plain", func(f *chkFile, _ openImage) { f.putU32(hVersion, 1) },
		"Unsupported qcow2 version 1", "version 1"},
	{"version-4", "plain", func(f *chkFile, _ openImage) { f.putU32(hVersion, 4) },
		"Unsupported qcow2 version 4", "version 4"},
	{"cluster-bits-8", "plain", func(f *chkFile, _ openImage) { f.putU32(hClusterBits, 8) },
		"Unsupported cluster size: 2^8", "cluster_bits 8 out of range"},
	{"cluster-bits-22", "plain", func(f *chkFile, _ openImage) { f.putU32(hClusterBits, 22) },
		"Unsupported cluster size: 2^22", "cluster_bits 22 out of range"},
	{"header-length-100", "plain", func(f *chkFile, _ openImage) { f.putU32(hHeaderLength, 100) },
		"qcow2 header too short", "qcow2 header too short"},
	{"header-length-past-cluster", "plain", func(f *chkFile, _ openImage) { f.putU32(hHeaderLength, 8192) },
		"qcow2 header exceeds cluster size", "exceeds the cluster size"},
	{"backing-offset-past-cluster", "plain", func(f *chkFile, _ openImage) { f.putU64(hBackingOff, 8192) },
		"Invalid backing file offset", "invalid backing file offset"},
	{"compression-type-unknown", "plain", func(f *chkFile, _ openImage) { f.write(hCompression, []byte{5}) },
		"unknown compression type: 5", "unknown compression type 5"},
	{"compression-bit-with-zlib", "plain", func(f *chkFile, _ openImage) { f.putU64(hIncompatible, 1<<3) },
		"Compression type incompatible feature bit must not be set", "feature bit must not be set"},
	{"compression-bit-without-field", "plain", func(f *chkFile, _ openImage) {
		f.putU32(hHeaderLength, 104)
		f.putU64(hIncompatible, 1<<3)
	}, "Compression type incompatible feature bit must not be set", "feature bit must not be set"},
	{"zstd-without-bit", "plain", func(f *chkFile, _ openImage) { f.write(hCompression, []byte{1}) },
		"Compression type incompatible feature bit must be set", "feature bit must be set"},
	{"unknown-incompatible-feature", "plain", func(f *chkFile, _ openImage) { f.putU64(hIncompatible, 1<<5) },
		"Unsupported qcow2 feature(s): Unknown incompatible feature: 20", "unknown incompatible features: bit 5"},
	{"subclusters-too-small", "plain", func(f *chkFile, _ openImage) { f.putU64(hIncompatible, 1<<4) },
		"Unsupported subcluster size: 128", "unsupported subcluster size 128"},
	{"refcount-order-7", "plain", func(f *chkFile, _ openImage) { f.putU32(hRefcountOrd, 7) },
		"Reference count entry width too large; may not exceed 64 bits", "reference count entry width too large; may not exceed 64 bits"},
	{"crypt-method-aes", "plain", func(f *chkFile, _ openImage) { f.putU32(hCryptMethod, 1) },
		"Parameter 'encrypt.key-secret' is required", "encryption (crypt_method 1)"},
	{"crypt-method-luks-without-header", "plain", func(f *chkFile, _ openImage) { f.putU32(hCryptMethod, 2) },
		"Missing CRYPTO header for crypt method 2", "encryption (crypt_method 2)"},
	{"crypt-method-7", "plain", func(f *chkFile, _ openImage) { f.putU32(hCryptMethod, 7) },
		"Unsupported encryption method 7", "unsupported encryption method 7"},
	{"external-data-file", "plain", func(f *chkFile, _ openImage) { f.putU64(hIncompatible, 1<<2) },
		"'data-file' is required for this image", "unsupported: external data file"},
	{"data-file-raw-without-data-file", "plain", func(f *chkFile, _ openImage) { f.putU64(hAutoclear, 1<<1) },
		"data-file-raw requires a data file", "data-file-raw requires a data file"},

	// The reference count table (qcow2_validate_table, qcow2_refcount_init).
	{"refcount-table-size-0", "plain", func(f *chkFile, _ openImage) { f.putU32(hReftableClus, 0) },
		"Image does not contain a reference count table", "image does not contain a reference count table"},
	{"refcount-table-too-large", "plain", func(f *chkFile, _ openImage) { f.putU32(hReftableClus, 2049) },
		"Reference count table too large", "refcount table too large"},
	{"refcount-table-unaligned", "plain", func(f *chkFile, _ openImage) { f.putU64(hReftableOff, 0x3008) },
		"Reference count table offset invalid", "refcount table offset 0x3008 invalid: not cluster aligned"},
	{"refcount-table-past-2^63", "plain", func(f *chkFile, _ openImage) { f.putU64(hReftableOff, 0x7fff_ffff_ffff_f000) },
		"Reference count table offset invalid", "refcount table offset 0x7ffffffffffff000 invalid"},
	{"refcount-table-unreadable", "plain", func(f *chkFile, _ openImage) { f.putU64(hReftableOff, 0x7fff_ffff_ffff_0000) },
		"Could not initialize refcount handling: Input/output error", "refcount table at 0x7fffffffffff0000 cannot be read"},

	// The snapshot table's place (qcow2_validate_table), checked even
	// when there are no snapshots.
	{"snapshots-too-many", "plain", func(f *chkFile, _ openImage) { f.putU32(hNbSnapshots, 65537) },
		"Snapshot table too large", "snapshot table too large"},
	{"snapshot-table-unaligned-no-snapshots", "plain", func(f *chkFile, _ openImage) { f.putU64(hSnapshotsOff, 0x1008) },
		"Snapshot table offset invalid", "snapshot table offset 0x1008 invalid: not cluster aligned"},
	{"snapshot-table-past-2^63-no-snapshots", "plain", func(f *chkFile, _ openImage) { f.putU64(hSnapshotsOff, 1<<63) },
		"Snapshot table offset invalid", "snapshot table offset 0x8000000000000000 invalid"},
	{"snapshot-table-unaligned", "snap", func(f *chkFile, img openImage) { f.putU64(hSnapshotsOff, uint64(img.snap)+8) },
		"Snapshot table offset invalid", "not cluster aligned"},

	// The active L1 table (qcow2_validate_table and its read).
	{"l1-too-large", "plain", func(f *chkFile, _ openImage) { f.putU32(hL1Size, 4<<20+1) },
		"Active L1 table too large", "active L1 table too large"},
	{"l1-unaligned", "plain", func(f *chkFile, _ openImage) { f.putU64(hL1Offset, f.hdr.L1TableOffset+8) },
		"Active L1 table offset invalid", "not cluster aligned"},
	{"l1-unaligned-empty", "plain", func(f *chkFile, _ openImage) {
		f.putU64(hSize, 0)
		f.putU32(hL1Size, 0)
		f.putU64(hL1Offset, 0x1008)
	}, "Active L1 table offset invalid", "active L1 table offset 0x1008 invalid: not cluster aligned"},
	{"l1-past-2^63", "plain", func(f *chkFile, _ openImage) { f.putU64(hL1Offset, 1<<63) },
		"Active L1 table offset invalid", "active L1 table offset 0x8000000000000000 invalid"},
	{"l1-too-small", "plain", func(f *chkFile, _ openImage) { f.putU64(hSize, 4<<30) },
		"L1 table is too small", "L1 table too small"},
	{"l1-unreadable", "plain", func(f *chkFile, _ openImage) {
		f.putU64(hSize, 0)
		f.putU64(hL1Offset, 0x7fff_ffff_ffff_0000)
	}, "Could not read L1 table: Input/output error", "could not read L1 table"},

	// The header extensions (qcow2_read_extensions).
	{"extension-too-large", "plain", func(f *chkFile, _ openImage) {
		f.write(hExtensions, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0x12345678), 4000))
	}, "Header extension too large", "is too large"},
	{"extension-end-marker-cut", "plain", func(f *chkFile, _ openImage) {
		// The backing file name begins 4 bytes after the header: no
		// room for even the end marker.
		f.putU64(hBackingOff, hExtensions+4)
		f.putU32(hBackingSize, 3)
		f.write(hExtensions, []byte{0, 0, 0, 0, 'a', 'b', 'c', 0})
	}, "Header extension too large", "is too large"},
	{"backing-format-too-long", "plain", func(f *chkFile, _ openImage) {
		f.setExts(ext(extBackingFm, []byte("qcow2qcow2qcow2q")))
	}, "ext_backing_format: len=16 too large (>=16)", "backing format name of 16 bytes is too long"},
	{"crypto-extension-without-luks", "plain", func(f *chkFile, _ openImage) {
		f.setExts(ext(extCrypto, make([]byte, 16)))
	}, "CRYPTO header extension only expected with LUKS encryption method", "crypto header extension only expected with LUKS encryption method"},
	{"crypto-extension-size", "plain", func(f *chkFile, _ openImage) {
		f.putU32(hCryptMethod, 2)
		f.setExts(ext(extCrypto, make([]byte, 8)))
	}, "CRYPTO header extension size 8, but expected size 16", "crypto header extension size 8, but expected size 16"},
	{"crypto-extension-unaligned", "plain", func(f *chkFile, _ openImage) {
		f.putU32(hCryptMethod, 2)
		f.setExts(ext(extCrypto, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 0x1008), 4096)))
	}, "Encryption header offset '4104' is not a multiple of cluster size '4096'", "encryption header offset 0x1008 is not a multiple of the cluster size"},
	{"bitmaps-extension-length", "plain", func(f *chkFile, _ openImage) {
		// Refused even without the bitmaps autoclear bit.
		f.setExts(ext(extBitmaps, make([]byte, 16)))
	}, "bitmaps_ext: Invalid extension length", "bitmaps extension: invalid extension length 16"},
	{"bitmaps-extension-reserved", "bitmaps", func(f *chkFile, _ openImage) { f.putU32(f.bitmapsExt()+4, 1) },
		"bitmaps_ext: Reserved field is not zero", "bitmaps extension: reserved field is not zero"},
	{"bitmaps-extension-too-many", "bitmaps", func(f *chkFile, _ openImage) { f.putU32(f.bitmapsExt(), 65536) },
		"bitmaps_ext: Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535", "image has 65536 bitmaps, exceeding qemu's maximum of 65535"},
	{"bitmaps-extension-zero-bitmaps", "bitmaps", func(f *chkFile, _ openImage) { f.putU32(f.bitmapsExt(), 0) },
		"found bitmaps extension with zero bitmaps", "bitmaps extension with zero bitmaps"},
	{"bitmaps-directory-unaligned", "bitmaps", func(f *chkFile, img openImage) { f.putU64(f.bitmapsExt()+16, uint64(img.dir)+8) },
		"bitmaps_ext: invalid bitmap directory offset", "invalid bitmap directory offset"},
	{"bitmaps-directory-too-big", "bitmaps", func(f *chkFile, _ openImage) { f.putU64(f.bitmapsExt()+8, 1024*65535+1) },
		"bitmap directory size (67107841) exceeds the maximum supported size (67107840)", "bitmap directory size 67107841 exceeds the maximum of 67107840"},

	// The backing file name.
	{"backing-name-too-long", "plain", func(f *chkFile, _ openImage) {
		f.putU64(hBackingOff, 512)
		f.putU32(hBackingSize, 1024)
	}, "Backing file name too long", "backing file name too long"},
	{"backing-name-past-cluster", "plain", func(f *chkFile, _ openImage) {
		f.putU64(hBackingOff, 4000)
		f.putU32(hBackingSize, 200)
	}, "Backing file name too long", "backing file name too long"},

	// The snapshot table's entries (qcow2_read_snapshots).
	{"snapshot-extra-data-too-large", "snap", func(f *chkFile, img openImage) { f.putU32(img.snap+36, 1025) },
		"Too much extra metadata in snapshot table entry 0", "too much extra metadata in snapshot table entry 0"},
	{"snapshot-table-too-big", "snap", func(f *chkFile, _ openImage) {
		// 600 entries of 1 KiB of extra data and IDs and names of 64 KiB
		// each: more than 64 MiB, in a sparse file.
		end := (f.size() + 4095) &^ 4095
		var e [40]byte
		binary.BigEndian.PutUint16(e[12:], 0xffff)
		binary.BigEndian.PutUint16(e[14:], 0xffff)
		binary.BigEndian.PutUint32(e[36:], 1024)
		off := end
		for range 600 {
			f.write(off, e[:])
			off = (off + 40 + 1024 + 2*0xffff + 7) &^ 7
		}
		f.write(off, make([]byte, 8))
		f.putU32(hNbSnapshots, 600)
		f.putU64(hSnapshotsOff, uint64(end))
	}, "Snapshot table is too big", "snapshot table is too big"},

	// The persistent bitmaps (qcow2_load_dirty_bitmaps, bitmap_list_load,
	// load_bitmap).
	{"bitmap-directory-size-0", "bitmaps", func(f *chkFile, _ openImage) { f.putU64(f.bitmapsExt()+8, 0) },
		"Requested bitmap directory size is zero", "bitmap directory size is zero"},
	{"bitmap-directory-broken", "bitmaps", func(f *chkFile, _ openImage) { f.putU64(f.bitmapsExt()+8, 0x30) },
		"Broken bitmap directory", "broken bitmap directory"},
	{"bitmaps-more-than-extension", "bitmaps", func(f *chkFile, _ openImage) { f.putU32(f.bitmapsExt(), 1) },
		"More bitmaps found than specified in header extension", "more bitmaps found than specified in header extension"},
	{"bitmaps-less-than-extension", "bitmaps", func(f *chkFile, _ openImage) { f.putU32(f.bitmapsExt(), 3) },
		"Less bitmaps found than specified in header extension", "less bitmaps found than specified in header extension"},
	{"bitmap-extra-data", "bitmaps", func(f *chkFile, img openImage) { f.putU32(img.dir+20, 8) },
		"Bitmap extra data is not supported", "bitmap extra data is not supported"},
	{"bitmap-granularity-256", "bitmaps", func(f *chkFile, img openImage) { f.write(img.dir+17, []byte{8}) },
		"Bitmap 'b1' doesn't satisfy the constraints", `bitmap 0 ("b1") doesn't satisfy the constraints`},
	{"bitmap-table-unaligned", "bitmaps", func(f *chkFile, img openImage) { f.putU64(img.dir, f.u64(img.dir)+8) },
		"Bitmap 'b1' doesn't satisfy the constraints", `bitmap 0 ("b1") doesn't satisfy the constraints`},
	{"bitmap-table-too-small", "bitmaps", func(f *chkFile, img openImage) {
		// 256 MiB: one cluster of bitmap table covers 128 MiB at 4 KiB
		// granularity. A larger L1 table at the end of the file.
		end := (f.size() + 4095) &^ 4095
		f.write(end, append(f.read(int64(f.hdr.L1TableOffset), 8), make([]byte, 4088)...))
		f.putU64(hSize, 256<<20)
		f.putU32(hL1Size, 128)
		f.putU64(hL1Offset, uint64(end))
	}, "Bitmap 'b1' doesn't satisfy the constraints", `bitmap 0 ("b1") doesn't satisfy the constraints`},
	{"bitmap-name-twice", "bitmaps", func(f *chkFile, img openImage) { f.write(img.dir+32+24+1, []byte{'1'}) },
		"Bitmap already exists: b1", `bitmap already exists: "b1"`},
	{"bitmap-table-entry-reserved", "bitmaps", func(f *chkFile, img openImage) { f.putU64(int64(f.u64(img.dir)), 2) },
		"Could not read bitmap_table table from image for bitmap 'b1': Invalid argument", `could not read the table of bitmap "b1": invalid entry 0x2`},
	{"bitmap-table-entry-unaligned", "bitmaps", func(f *chkFile, img openImage) { f.putU64(int64(f.u64(img.dir)), 0x1200) },
		"Could not read bitmap_table table from image for bitmap 'b1': Invalid argument", `could not read the table of bitmap "b1": invalid entry 0x1200`},
	{"bitmap-table-size-wrong", "bitmaps", func(f *chkFile, img openImage) {
		f.putU32(img.dir+8, 2)
		f.putU64(int64(f.u64(img.dir))+8, 0)
	}, "Could not read bitmap 'b1' from image: Invalid argument", `could not read bitmap "b1": its table has 2 entries`},
}

// TestOpenRefusesWhatQemuRefuses runs every case of openRefusals: qemu-img
// must refuse the image with its message, canga with its own, and canga
// check must exit as qemu-img check does.
func TestOpenRefusesWhatQemuRefuses(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	for _, c := range openRefusals {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f, img := openBase(t, c.base)
			c.poke(f, img)
			_, msg := qemuConvert(t, f.path)
			if msg == "" {
				t.Fatalf("qemu-img opens the image: the case does not test what it says")
			} else if !strings.Contains(msg, c.qemu) {
				t.Errorf("qemu-img says %q, want %q", msg, c.qemu)
			}
			_, err := cangaRead(t, f.path)
			if err == nil {
				t.Fatalf("canga reads the image that qemu refuses")
			}
			_, qemuSays, _ := strings.Cut(strings.TrimSpace(msg), "': ")
			t.Logf("qemu: %s | canga: %s", qemuSays, strings.TrimPrefix(err.Error(), f.path+": "))
			if !strings.Contains(err.Error(), c.canga) {
				t.Errorf("canga says %q, want %q", err, c.canga)
			}
			// The image in memory, without a file name: the same refusal.
			data, rerr := os.ReadFile(f.path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if _, err := qcow2.Open(bytes.NewReader(data), int64(len(data))); err == nil {
				t.Errorf("Open accepts what OpenFile refuses")
			}
			q := chkQemuCheck(t, f.path, "-f", "qcow2")
			_, exit, cerr := chkCheck(t, f.path)
			if exit != q.Exit {
				t.Errorf("check exit status: canga %d (%v), qemu-img %d\nqemu-img: %s", exit, cerr, q.Exit, q.Stderr)
			}
		})
	}
}

// Images that qemu opens and that canga opened wrongly once, or might:
// canga must read them too, to the same bytes.
func TestOpenAcceptsWhatQemuAccepts(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	tests := []struct {
		name string
		base string
		poke func(f *chkFile, img openImage)
	}{
		{"snapshot-table-far-no-snapshots", "plain", func(f *chkFile, _ openImage) { f.putU64(hSnapshotsOff, 1<<40) }},
		{"snapshot-extra-data-1024", "snap", func(f *chkFile, img openImage) { f.putU32(img.snap+36, 1024) }},
		{"snapshot-l1-unaligned", "snap", func(f *chkFile, img openImage) { f.putU64(img.snap, 0x1008) }},
		{"snapshot-l1-too-large", "snap", func(f *chkFile, img openImage) { f.putU32(img.snap+8, 1<<24) }},
		{"backing-name-empty", "plain", func(f *chkFile, _ openImage) { f.putU64(hBackingOff, 512) }},
		{"backing-format-without-backing-file", "plain", func(f *chkFile, _ openImage) {
			f.setExts(ext(extBackingFm, []byte("qcow2")))
		}},
		{"data-file-name-without-data-file", "plain", func(f *chkFile, _ openImage) {
			f.setExts(ext(extDataFile, []byte("data.raw")))
		}},
		{"bitmaps-extension-without-autoclear", "bitmaps", func(f *chkFile, _ openImage) {
			f.putU64(hAutoclear, 0)
			f.putU32(f.bitmapsExt(), 0) // ignored, however wrong
		}},
		{"bitmap-in-use-bad-table", "bitmaps", func(f *chkFile, img openImage) {
			f.putU32(img.dir+12, 3) // in use: qemu does not load its table
			f.putU64(int64(f.u64(img.dir)), 2)
		}},
		{"unknown-autoclear-bits", "plain", func(f *chkFile, _ openImage) { f.putU64(hAutoclear, 0xf0) }},
		{"unknown-compatible-bits", "plain", func(f *chkFile, _ openImage) { f.putU64(80, 0xf0) }},
		{"corrupt-bit", "plain", func(f *chkFile, _ openImage) { f.putU64(hIncompatible, 1<<1) }},
		{"l1-larger-than-needed", "plain", func(f *chkFile, _ openImage) { f.putU32(hL1Size, 3) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, img := openBase(t, tt.base)
			tt.poke(f, img)
			out, msg := qemuConvert(t, f.path)
			if msg != "" {
				t.Fatalf("qemu-img refuses the image: %s", msg)
			}
			got, err := cangaRead(t, f.path)
			if err != nil {
				t.Fatalf("canga refuses what qemu reads: %v", err)
			}
			if want := chkSHA256(t, out); got != want {
				t.Errorf("digest %s, qemu-img's content %s", got, want)
			}
		})
	}
}

// Where canga is stricter than qemu, on purpose (docs/qemu-differences.md):
// qemu reads these images, canga refuses them with a clear error, when it
// opens them or when it reads the part that is broken.
func TestOpenStricterThanQemu(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	tests := []struct {
		name  string
		base  string
		poke  func(f *chkFile, img openImage)
		canga string
	}{
		{"refcount-table-past-eof", "plain", func(f *chkFile, _ openImage) { f.putU64(hReftableOff, 1<<40) },
			"refcount table at 0x10000000000 (4096 bytes) lies past the end of the file"},
		{"refcount-table-over-header", "plain", func(f *chkFile, _ openImage) { f.putU64(hReftableOff, 0) },
			"refcount table overlaps the header"},
		{"l1-past-eof", "plain", func(f *chkFile, _ openImage) { f.putU64(hL1Offset, 1<<40) },
			"L1 table at 0x10000000000 (8 bytes) lies past the end of the file"},
		{"snapshot-table-past-eof", "snap", func(f *chkFile, _ openImage) { f.putU64(hSnapshotsOff, 1<<40) },
			"snapshot table at 0x10000000000 (1 snapshots) lies past the end of the file"},
		{"snapshot-entry-past-eof", "snap", func(f *chkFile, img openImage) { f.putU16(img.snap+14, 0xffff) },
			"lies past the end of the file"},
		{"bitmap-table-past-eof", "bitmaps", func(f *chkFile, img openImage) { f.putU64(img.dir, 1<<40) },
			`table of bitmap "b1" at 0x10000000000 (8 bytes) lies past the end of the file`},
		{"l2-table-overlaps-eof", "plain", func(f *chkFile, _ openImage) {
			// The L2 table moves to the end of the file, and loses
			// its last 8 bytes, which map nothing: qemu reads them as
			// zeros.
			l2 := int64(f.u64(f.l1(0)) & chkOffsetMask)
			table := f.read(l2, 4096)
			end := (f.size() + 4095) &^ 4095
			f.write(end, table[:4096-8])
			f.putU64(f.l1(0), 1<<63|uint64(end))
		}, "lies past the end of the file"},
		{"data-cluster-past-eof", "plain", func(f *chkFile, _ openImage) { f.putU64(f.l2(0), 1<<63|1<<40) },
			"data cluster at 0x10000000000 (guest offset 0x0) lies past the end of the file"},
		{"header-length-not-multiple-of-8", "plain", func(f *chkFile, _ openImage) { f.putU32(hHeaderLength, 108) },
			"header_length 108: must be a multiple of 8"},
		{"backing-name-with-nul", "plain", func(f *chkFile, _ openImage) {
			f.putU64(hBackingOff, 512)
			f.putU32(hBackingSize, 4)
			f.write(512, []byte("b\x00cd"))
			base := filepath.Join(filepath.Dir(f.path), "b")
			if err := os.WriteFile(base, make([]byte, 1<<20), 0o644); err != nil {
				f.t.Fatal(err)
			}
		}, "backing file name contains a NUL byte"},
		{"backing-name-over-header", "plain", func(f *chkFile, _ openImage) {
			// The name is byte 64, a zero: qemu finds no backing file.
			f.putU64(hBackingOff, 64)
			f.putU32(hBackingSize, 1)
		}, "backing file name overlaps the header"},
		{"extension-twice", "plain", func(f *chkFile, _ openImage) {
			f.setExts(ext(0x12345678, []byte("a")), ext(0x12345678, []byte("b")))
		}, "header extension 0x12345678 appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, img := openBase(t, tt.base)
			tt.poke(f, img)
			if _, msg := qemuConvert(t, f.path); msg != "" {
				t.Fatalf("qemu-img refuses the image too: %s", msg)
			}
			_, err := cangaRead(t, f.path)
			if err == nil {
				t.Fatalf("canga reads the image")
			}
			if !strings.Contains(err.Error(), tt.canga) {
				t.Errorf("canga says %q, want %q", err, tt.canga)
			}
		})
	}
}

func chkSHA256(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256(data))
}
