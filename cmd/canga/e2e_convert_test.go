package main_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// canga create makes the image qemu-img create would: same virtual size
// for the same SIZE argument, and clean by qemu-img check.
func TestCreateSizes(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []string{"512", "1000", "1K", "64k", "100M", "1.5G", "1G", "10G", "2T"} {
		t.Run(size, func(t *testing.T) {
			q := filepath.Join(dir, "q-"+size)
			c := filepath.Join(dir, "c-"+size)
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", q, size)
			ok(t, "", "create", c, size)
			want, got := testkit.QemuInfo(t, q), testkit.QemuInfo(t, c)
			if got.Format != "qcow2" || got.VirtualSize != want.VirtualSize || got.ClusterSize != 65536 {
				t.Errorf("canga create %s: format %s, virtual size %d, cluster size %d; qemu-img create: virtual size %d",
					size, got.Format, got.VirtualSize, got.ClusterSize, want.VirtualSize)
			}
			if got.FormatSpecific == nil || got.FormatSpecific.Data.Compat != "1.1" {
				t.Errorf("not a qcow2 v3 image: %+v", got.FormatSpecific)
			}
			testkit.QemuCheck(t, c)
			testkit.QemuCompare(t, q, c)
		})
	}
}

func TestCreateClusterSize(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		arg  string
		want int64
	}{{"512", 512}, {"4K", 4096}, {"64K", 65536}, {"2M", 2 << 20}, {"65536", 65536}} {
		t.Run(tc.arg, func(t *testing.T) {
			p := filepath.Join(dir, "c"+tc.arg)
			ok(t, "", "create", p, "5G", "--cluster-size", tc.arg)
			if got := testkit.QemuInfo(t, p); got.ClusterSize != tc.want || got.VirtualSize != 5<<30 {
				t.Errorf("cluster size %d, virtual size %d; want %d, %d", got.ClusterSize, got.VirtualSize, tc.want, int64(5<<30))
			}
			testkit.QemuCheck(t, p)
			// qemu can write into it and it stays clean.
			testkit.QemuIO(t, "qcow2", p, "write -P 0x7 1M 300k", "write -P 0x8 4G 1M")
			testkit.QemuCheck(t, p)
		})
	}
}

func TestCreateBacking(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, baseQcow2(t), filepath.Join(dir, "base.qcow2"))
	copyFile(t, baseRaw(t), filepath.Join(dir, "base.raw"))
	home := t.TempDir()
	id := addID(t, home, filepath.Join(dir, "base.qcow2"), "--tag", "base")
	var blob string
	for _, it := range listJSON(t, home) {
		if it.ID == id {
			blob = blobPath(home, it.Blob)
		}
	}

	tests := []struct {
		name, backing, size string
		wantName, wantFmt   string
		wantSize            int64
		same                string // the image it must read as, by qemu-img compare
	}{
		{"qcow2-size-omitted", "base.qcow2", "", "base.qcow2", "qcow2", 64 << 20, "base.qcow2"},
		{"qcow2-larger", "base.qcow2", "1G", "base.qcow2", "qcow2", 1 << 30, ""},
		{"raw", "base.raw", "", "base.raw", "raw", 64 << 20, "base.raw"},
		{"absolute", filepath.Join(dir, "base.qcow2"), "", filepath.Join(dir, "base.qcow2"), "qcow2", 64 << 20, "base.qcow2"},
		{"repository-image", "base", "", blob, "qcow2", 64 << 20, "base.qcow2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".qcow2")
			args := []string{"create", p}
			if tc.size != "" {
				args = append(args, tc.size)
			}
			ok(t, home, append(args, "--backing", tc.backing)...)
			got := testkit.QemuInfo(t, p)
			if got.BackingFilename != tc.wantName || got.BackingFormat != tc.wantFmt || got.VirtualSize != tc.wantSize {
				t.Errorf("backing %q (%s), virtual size %d; want %q (%s), %d",
					got.BackingFilename, got.BackingFormat, got.VirtualSize, tc.wantName, tc.wantFmt, tc.wantSize)
			}
			testkit.QemuCheck(t, p)
			if tc.same != "" {
				testkit.QemuCompare(t, p, filepath.Join(dir, tc.same))
			}
		})
	}
}

// A create that fails leaves nothing behind.
func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, baseQcow2(t), filepath.Join(dir, "base.qcow2"))
	home := t.TempDir()
	for _, args := range [][]string{
		{"x.qcow2", "12X"},
		{"x.qcow2", "-1"},
		{"x.qcow2", "G"},
		{"x.qcow2", "1e400"},
		{"x.qcow2"},
		{"x.qcow2", "1G", "--cluster-size", "3K"},
		{"x.qcow2", "1G", "--cluster-size", "4M"},
		{"x.qcow2", "1G", "--cluster-size", "256"},
		{"x.qcow2", "1G", "--cluster-size", "big"},
		{"x.qcow2", "--backing", "missing.qcow2"},
		{"x.qcow2", "--backing", "no-such-image:1.0"},
		{"no/such/dir/x.qcow2", "1G"},
	} {
		before := dirNames(t, dir)
		r := cangaIn(t, home, dir, cangaTimeout, append([]string{"create"}, args...)...)
		requireCleanFailure(t, r)
		if after := dirNames(t, dir); !slices.Equal(before, after) {
			t.Errorf("canga create %v left files: %v -> %v", args, before, after)
		}
	}
}

// convertSource is a two-layer chain over the ext4 disk with data, zero
// writes and a discard in the top layer.
func convertSource(t *testing.T, dir string) string {
	t.Helper()
	copyFile(t, baseQcow2(t), filepath.Join(dir, "base.qcow2"))
	data := dataClusters(t, baseRaw(t))
	top := filepath.Join(dir, "top.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	testkit.QemuIO(t, "qcow2", top, "write -P 0x5c 3M 200k", "write -z "+itoa(data[3])+" 64k",
		"discard "+itoa(data[7])+" 128k", "write -P 0x77 63M 1M")
	return top
}

func TestConvert(t *testing.T) {
	dir := t.TempDir()
	src := convertSource(t, dir)
	tests := []struct {
		name       string
		args       []string
		raw        bool
		cluster    int64
		compressed string // compression type that must be used
	}{
		{"qcow2", []string{"-O", "qcow2"}, false, 65536, ""},
		{"default", nil, false, 65536, ""},
		{"raw", []string{"-O", "raw"}, true, 0, ""},
		{"zlib", []string{"-c"}, false, 65536, "zlib"},
		// zstd images default to 256 KiB clusters (qcow2.ZstdClusterSize).
		{"zstd", []string{"--compression", "zstd"}, false, 256 << 10, "zstd"},
		{"zstd-c", []string{"-c", "--compression", "zstd"}, false, 256 << 10, "zstd"},
		{"zstd-64k", []string{"--compression", "zstd", "--cluster-size", "64K"}, false, 65536, "zstd"},
		{"cluster-4k", []string{"--cluster-size", "4K"}, false, 4096, ""},
		{"cluster-64k", []string{"--cluster-size", "64K"}, false, 65536, ""},
		{"cluster-2m", []string{"--cluster-size", "2M"}, false, 2 << 20, ""},
		{"zlib-4k", []string{"-c", "--cluster-size", "4K"}, false, 4096, "zlib"},
		{"zstd-2m", []string{"--compression", "zstd", "--cluster-size", "2M"}, false, 2 << 20, "zstd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			ok(t, "", append([]string{"convert", src, out}, tc.args...)...)
			testkit.QemuCompare(t, src, out)
			info := testkit.QemuInfo(t, out)
			if tc.raw {
				if info.Format != "raw" || fileSize(t, out) != 64<<20 {
					t.Errorf("-O raw: format %s, %d bytes", info.Format, fileSize(t, out))
				}
				if testkit.RawDigest(t, out).String() != testkit.Sha256sum(t, out).String() {
					t.Errorf("raw output differs from qemu-img's raw output")
				}
				return
			}
			if info.Format != "qcow2" || info.ClusterSize != tc.cluster || info.BackingFilename != "" {
				t.Errorf("format %s, cluster size %d, backing %q; want qcow2, %d, none", info.Format, info.ClusterSize, info.BackingFilename, tc.cluster)
			}
			code, counts, stderr := testkit.QemuCheckReport(t, out)
			if code != 0 || counts.Corruptions+counts.Leaks+counts.CheckErrors != 0 {
				t.Errorf("qemu-img check: exit %d %+v\n%s", code, counts, stderr)
			}
			if tc.compressed != "" {
				if counts.CompressedClusters == 0 {
					t.Errorf("no compressed clusters: %+v", counts)
				}
				if ct := info.FormatSpecific.Data.CompressionType; ct != tc.compressed {
					t.Errorf("compression type %s, want %s", ct, tc.compressed)
				}
			} else if counts.CompressedClusters != 0 {
				t.Errorf("%d compressed clusters without -c", counts.CompressedClusters)
			}
			// canga's own check agrees.
			if r := canga(t, "", "check", out); r.code != 0 {
				t.Errorf("%v", r)
			}
		})
	}
}

// convert --backing writes a delta: it reads as the source, names the
// backing file as given, and holds little when little changed.
func TestConvertBacking(t *testing.T) {
	dir := t.TempDir()
	top := convertSource(t, dir)
	full := filepath.Join(dir, "full.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-O", "qcow2", top, full) // standalone: no backing file
	copyFile(t, baseRaw(t), filepath.Join(dir, "base.raw"))

	for _, tc := range []struct {
		name, backing, format string
		args                  []string
	}{
		{"qcow2", "base.qcow2", "qcow2", nil},
		{"raw", "base.raw", "raw", nil},
		{"absolute", filepath.Join(dir, "base.qcow2"), "qcow2", nil},
		{"compressed", "base.qcow2", "qcow2", []string{"-c"}},
		{"cluster-4k", "base.qcow2", "qcow2", []string{"--cluster-size", "4K"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			delta := filepath.Join(dir, "delta-"+tc.name+".qcow2")
			ok(t, "", append([]string{"convert", full, delta, "--backing", tc.backing}, tc.args...)...)
			testkit.QemuCompare(t, full, delta)
			testkit.QemuCompare(t, top, delta)
			testkit.QemuCheck(t, delta)
			info := testkit.QemuInfo(t, delta)
			if info.BackingFilename != tc.backing || info.BackingFormat != tc.format {
				t.Errorf("backing %q (%s), want %q (%s)", info.BackingFilename, info.BackingFormat, tc.backing, tc.format)
			}
			// About 1.3 MiB differs out of 64 MiB of which ~25 are data.
			if n, whole := fileSize(t, delta), fileSize(t, full); n > whole/8 || n > 4<<20 {
				t.Errorf("delta is %d bytes, the whole image %d: not a delta", n, whole)
			}
		})
	}
}

// A convert that fails leaves no output and no temp file, and an existing
// output file stays as it was.
func TestConvertFailureLeavesNothing(t *testing.T) {
	junk := make([]byte, 1<<20)
	for i := range junk {
		junk[i] = byte(i*7 + i>>9)
	}
	copy(junk, "QFI\xfb\x00\x00\x00\x03")
	hostile := filepath.Join(t.TempDir(), "hostile.qcow2")
	if err := os.WriteFile(hostile, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	good := baseRaw(t)

	t.Run("hostile source", func(t *testing.T) {
		dir := t.TempDir()
		fails(t, "", "convert", hostile, filepath.Join(dir, "out.qcow2"))
		fails(t, "", "convert", "-O", "raw", hostile, filepath.Join(dir, "out.raw"))
		if names := dirNames(t, dir); len(names) != 0 {
			t.Errorf("left %v", names)
		}
	})
	t.Run("existing output kept", func(t *testing.T) {
		dir := t.TempDir()
		out := filepath.Join(dir, "out.qcow2")
		if err := os.WriteFile(out, []byte("precious"), 0o644); err != nil {
			t.Fatal(err)
		}
		fails(t, "", "convert", hostile, out)
		if b, _ := os.ReadFile(out); string(b) != "precious" {
			t.Errorf("failed convert changed the existing output: %q", b)
		}
		if names := dirNames(t, dir); !slices.Equal(names, []string{"out.qcow2"}) {
			t.Errorf("left %v", names)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		dir := t.TempDir()
		r := fails(t, "", "convert", good, filepath.Join(dir, "no", "such", "out.qcow2"))
		if !strings.Contains(r.stderr, "no such file or directory") {
			t.Errorf("stderr should say why\n%v", r)
		}
		if names := dirNames(t, dir); len(names) != 0 {
			t.Errorf("left %v", names)
		}
	})
	t.Run("read-only directory", func(t *testing.T) {
		mnt := testkit.Tmpfs(t, "4m")
		testkit.RemountReadOnly(t, mnt)
		r := fails(t, "", "convert", good, filepath.Join(mnt, "out.qcow2"))
		if !strings.Contains(r.stderr, "read-only") {
			t.Errorf("stderr should say the file system is read-only\n%v", r)
		}
	})
	t.Run("full disk", func(t *testing.T) {
		mnt := testkit.Tmpfs(t, "2m")
		for _, args := range [][]string{
			{"convert", good, filepath.Join(mnt, "out.qcow2")},
			{"convert", "-O", "raw", good, filepath.Join(mnt, "out.raw")},
		} {
			r := fails(t, "", args...)
			if !strings.Contains(r.stderr, "no space left on device") {
				t.Errorf("stderr should say the disk is full\n%v", r)
			}
			if names := dirNames(t, mnt); len(names) != 0 {
				t.Errorf("canga %v left %v", args, names)
			}
		}
	})
	t.Run("bad options", func(t *testing.T) {
		dir := t.TempDir()
		for _, args := range [][]string{
			{"-O", "raw", "-c"},
			{"-O", "raw", "--compression", "zstd"},
			{"-O", "raw", "--backing", good},
			{"--cluster-size", "3K"},
			{"--backing", filepath.Join(dir, "missing.qcow2")},
		} {
			fails(t, "", append([]string{"convert", good, filepath.Join(dir, "out")}, args...)...)
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("convert %v left %v", args, names)
			}
		}
	})
	t.Run("missing source", func(t *testing.T) {
		dir := t.TempDir()
		fails(t, "", "convert", filepath.Join(dir, "nope.qcow2"), filepath.Join(dir, "out"))
		if names := dirNames(t, dir); len(names) != 0 {
			t.Errorf("left %v", names)
		}
	})
}

// -O raw writes what qemu-img convert -O raw writes, byte for byte, for a
// file whose size is not a multiple of 512 too.
func TestConvertRawBytes(t *testing.T) {
	dir := t.TempDir()
	odd := filepath.Join(dir, "odd")
	b := bytes.Repeat([]byte("canga!"), 1000) // 6000 bytes
	if err := os.WriteFile(odd, b, 0o644); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "q.raw")
	testkit.Run(t, "qemu-img", "convert", "-O", "raw", odd, q)
	for _, src := range []string{odd, convertSource(t, dir)} {
		c := filepath.Join(dir, "c.raw")
		testkit.Run(t, "qemu-img", "convert", "-O", "raw", src, q)
		ok(t, "", "convert", "-O", "raw", src, c)
		if testkit.Sha256sum(t, c).String() != testkit.Sha256sum(t, q).String() || fileSize(t, c) != fileSize(t, q) {
			t.Errorf("%s: canga's raw output (%d bytes) differs from qemu-img's (%d bytes)", src, fileSize(t, c), fileSize(t, q))
		}
	}
}
