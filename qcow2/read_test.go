package qcow2

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/cangallo/canga/internal/testkit"
)

// imageCase builds one image in dir and returns its path.
type imageCase struct {
	name  string
	build func(t *testing.T, dir string) string
}

// converted makes a qcow2 from a generated raw source with qemu-img convert.
func converted(size int64, args ...string) func(t *testing.T, dir string) string {
	return func(t *testing.T, dir string) string {
		src := filepath.Join(dir, "src.raw")
		writeSource(t, src, size, uint64(size))
		out := filepath.Join(dir, "img.qcow2")
		testkit.Run(t, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, args...), src, out)...)
		return out
	}
}

// written makes a qcow2 with qemu-img create and qemu-io writes.
func written(size string, opts string, cmds ...string) func(t *testing.T, dir string) string {
	return func(t *testing.T, dir string) string {
		out := filepath.Join(dir, "img.qcow2")
		args := []string{"create", "-q", "-f", "qcow2"}
		if opts != "" {
			args = append(args, "-o", opts)
		}
		testkit.Run(t, "qemu-img", append(args, out, size)...)
		testkit.QemuIO(t, "qcow2", out, cmds...)
		return out
	}
}

// someWrites puts data, zeros and discards at unaligned places.
var someWrites = []string{
	"write -P 0x11 0 100k",
	"write -P 0x22 1000k 3000k",
	"write -z 1500k 700k",
	"write -P 0x33 5123k 1k",
	"discard 2048k 512k",
	"write -z 7m 64k",
}

func TestReadMatchesQemu(t *testing.T) {
	const mib = 1 << 20
	cases := []imageCase{
		{"cluster512", converted(9*mib, "-o", "cluster_size=512")},
		{"cluster4k", converted(17*mib, "-o", "cluster_size=4k")},
		{"cluster64k", converted(33*mib, "-o", "cluster_size=64k")},
		{"cluster2m", converted(40*mib, "-o", "cluster_size=2M")},
		{"compat0.10", converted(20*mib, "-o", "compat=0.10")},
		{"compat0.10-zero-writes", written("12M", "compat=0.10", someWrites...)},
		{"compat1.1", converted(20*mib, "-o", "compat=1.1")},
		{"refcount1", converted(20*mib, "-o", "refcount_bits=1")},
		{"refcount64", converted(20*mib, "-o", "refcount_bits=64")},
		{"prealloc-metadata", written("12M", "preallocation=metadata", someWrites...)},
		{"prealloc-metadata-2m", written("12M", "preallocation=metadata,cluster_size=2M", someWrites...)},
		{"lazy-refcounts", written("12M", "lazy_refcounts=on", someWrites...)},
		{"extended-l2", written("12M", "extended_l2=on", append(someWrites, "write -P 0x44 8193k 3k", "write -z 8197k 2k")...)},
		{"extended-l2-2m", written("12M", "extended_l2=on,cluster_size=2M", someWrites...)},
		{"extended-l2-16k", converted(20*mib, "-o", "extended_l2=on,cluster_size=16k")},
		{"zlib", converted(30*mib, "-c")},
		{"zlib-4k", converted(20*mib, "-c", "-o", "cluster_size=4k")},
		{"zlib-2m", converted(30*mib, "-c", "-o", "cluster_size=2M")},
		{"zlib-512", converted(5*mib, "-c", "-o", "cluster_size=512")},
		{"zlib-extended-l2", converted(20*mib, "-c", "-o", "extended_l2=on")},
		{"zlib-compat0.10", converted(20*mib, "-c", "-o", "compat=0.10")},
		{"zstd", converted(30*mib, "-c", "-o", "compression_type=zstd")},
		{"zstd-4k", converted(20*mib, "-c", "-o", "compression_type=zstd,cluster_size=4k")},
		{"zstd-2m", converted(30*mib, "-c", "-o", "compression_type=zstd,cluster_size=2M")},
		{"zstd-extended-l2", converted(20*mib, "-c", "-o", "compression_type=zstd,extended_l2=on")},
		{"compressed-writes", written("8M", "", "write -c -P 0x55 0 64k", "write -c -P 0x66 128k 64k", "write -P 0x77 1m 100k", "write -c -P 0x88 2m 64k")},
		{"odd-size", converted(5*mib + 12345)},
		{"odd-size-zlib", converted(3*mib+777, "-c", "-o", "cluster_size=4k")},
		{"odd-size-created", written("1000001", "", "write -P 0x99 975k 1k")},
		{"empty", written("0", "")},
		{"tiny", written("512", "", "write -P 1 0 512")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			checkAgainstQemu(t, c.build(t, t.TempDir()))
		})
	}
}

func TestChainsMatchQemu(t *testing.T) {
	const mib = 1 << 20
	cases := []imageCase{
		{"chain3-hide-parent-data", func(t *testing.T, dir string) string {
			base := converted(24*mib)(t, dir)
			mid := filepath.Join(dir, "mid.qcow2")
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "img.qcow2", "-F", "qcow2", mid)
			testkit.QemuIO(t, "qcow2", mid, "write -P 0xa1 100k 2m", "write -z 4m 3m", "discard 10m 1m")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top)
			testkit.QemuIO(t, "qcow2", top, "write -z 0 512k", "write -P 0xa2 5m 100k", "discard 12m 2m", "write -z 16m 4m")
			_ = base
			return top
		}},
		{"top-larger-than-base", func(t *testing.T, dir string) string {
			converted(6*mib)(t, dir)
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "img.qcow2", "-F", "qcow2", top, "20M")
			testkit.QemuIO(t, "qcow2", top, "write -P 0xb1 5m 2m", "write -P 0xb2 15m 64k")
			return top
		}},
		{"top-smaller-than-base", func(t *testing.T, dir string) string {
			converted(20*mib)(t, dir)
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "img.qcow2", "-F", "qcow2", top, "7M")
			testkit.QemuIO(t, "qcow2", top, "write -P 0xb1 1m 64k")
			return top
		}},
		{"raw-base", func(t *testing.T, dir string) string {
			base := filepath.Join(dir, "base.raw")
			writeSource(t, base, 9*mib+1000, 7)
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top, "12M")
			testkit.QemuIO(t, "qcow2", top, "write -P 0xc1 100k 200k", "write -z 3m 1m")
			return top
		}},
		{"compressed-base-extended-top", func(t *testing.T, dir string) string {
			converted(16*mib, "-c", "-o", "compression_type=zstd")(t, dir)
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-b", "img.qcow2", "-F", "qcow2", top)
			testkit.QemuIO(t, "qcow2", top, "write -P 0xd1 3k 5k", "write -z 70k 2k", "discard 1m 64k")
			return top
		}},
		{"absolute-backing-name", func(t *testing.T, dir string) string {
			base := converted(4*mib)(t, dir)
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
			testkit.QemuIO(t, "qcow2", top, "write -P 0xe1 0 64k")
			return top
		}},
		{"backing-without-format", func(t *testing.T, dir string) string {
			converted(8*mib)(t, dir)
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "img.qcow2", "-F", "qcow2", top)
			testkit.QemuIO(t, "qcow2", top, "write -P 0xf1 1m 1m")
			dropBackingFormat(t, top)
			return top
		}},
		{"raw-backing-without-format", func(t *testing.T, dir string) string {
			base := filepath.Join(dir, "base.raw")
			writeSource(t, base, 4*mib, 9)
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top)
			testkit.QemuIO(t, "qcow2", top, "write -P 0xf2 1m 1m")
			dropBackingFormat(t, top)
			return top
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			checkAgainstQemu(t, c.build(t, t.TempDir()))
		})
	}
}

// dropBackingFormat turns the backing format extension of a qemu-made
// image into an unknown extension, which readers must ignore: the image
// then names its backing file without a format, as images made by old
// qemu versions do.
func dropBackingFormat(t *testing.T, name string) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var ext [4]byte
	binary.BigEndian.PutUint32(ext[:], extBackingFormat)
	i := bytes.Index(b[:4096], ext[:])
	if i < 0 {
		t.Fatal("no backing format extension")
	}
	binary.BigEndian.PutUint32(b[i:], 0x7e57da7a)
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(bytes.NewReader(b), int64(len(b)))
	if err != nil || h.BackingFormat != "" || h.BackingFile == "" {
		t.Fatalf("after dropping the format: %+v, %v", h, err)
	}
}

func TestRawFilesAreImages(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.raw")
	writeSource(t, src, 10<<20+3, 3)
	d, err := OpenFile(src)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, ok := d.(*Raw); !ok {
		t.Fatalf("OpenFile gave %T for a raw file", d)
	}
	checkAgainstQemu(t, src)
	// A raw file whose first bytes are the qcow2 magic is still raw when
	// the caller says so.
	fake := filepath.Join(dir, "fake.raw")
	if err := os.WriteFile(fake, []byte(Magic+"not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(fake); err == nil {
		t.Fatal("probing a truncated qcow2 magic file succeeded")
	}
	r, err := OpenFile(fake, WithFormat(FormatRaw))
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

// TestReaderContract runs the standard library's reader checks over an
// image with every kind of cluster.
func TestReaderContract(t *testing.T) {
	dir := t.TempDir()
	img := converted(3<<20, "-c", "-o", "cluster_size=4k")(t, dir)
	testkit.QemuIO(t, "qcow2", img, "write -P 0x12 100k 50k", "write -z 1m 100k")
	want, err := os.ReadFile(testkit.QemuRaw(t, img))
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := iotest.TestReader(io.NewSectionReader(d, 0, d.Size()), want); err != nil {
		t.Fatal(err)
	}
}

func TestLayerDescribesOnlyTheTop(t *testing.T) {
	dir := t.TempDir()
	converted(4<<20)(t, dir)
	top := filepath.Join(dir, "top.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "img.qcow2", "-F", "qcow2", top)
	testkit.QemuIO(t, "qcow2", top, "write -P 1 64k 64k", "write -z 256k 64k")
	d, err := OpenFile(top)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	img := d.(*Image)
	for _, want := range []Extent{
		{0, 64 << 10, Unallocated},
		{64 << 10, 64 << 10, Data},
		{128 << 10, 128 << 10, Unallocated},
		{256 << 10, 64 << 10, Zero},
		{320 << 10, 4<<20 - 320<<10, Unallocated},
	} {
		got, err := img.Layer(want.Offset, 4<<20)
		if err != nil || got != want {
			t.Errorf("Layer(%d) = %+v, %v; want %+v", want.Offset, got, err, want)
		}
	}
}
