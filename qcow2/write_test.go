package qcow2

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/opencontainers/go-digest"
)

// qemuCheckClean requires qemu-img check and canga's Check to find an
// image we wrote clean: no errors and no leaks.
func qemuCheckClean(t *testing.T, image string) {
	t.Helper()
	testkit.QemuCheck(t, image)
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	r, err := Check(f, fi.Size())
	if err != nil || !r.Clean() {
		t.Fatalf("canga check: %+v, %v", r, err)
	}
}

// convertFile converts the image at src to dst with canga.
func convertFile(t *testing.T, src, dst string, opt ConvertOptions) ConvertStats {
	t.Helper()
	d, err := OpenFile(src)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The content hash of the same pass must be the image ID.
	h := sha256.New()
	opt.Hash = h
	st, err := Convert(t.Context(), f, d, opt)
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	want, err := Digest(t.Context(), d, ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != want {
		t.Fatalf("Convert's hash is %s, the image ID is %s", got, want)
	}
	if fi, _ := f.Stat(); fi.Size() != st.FileSize {
		t.Fatalf("file is %d bytes, stats say %d", fi.Size(), st.FileSize)
	}
	return st
}

func TestConvertMatrix(t *testing.T) {
	const mib = 1 << 20
	sources := []imageCase{
		{"raw", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "src.raw")
			writeSource(t, p, 21*mib+4096, 11)
			return p
		}},
		{"qcow2", converted(19*mib, "-o", "cluster_size=4k")},
		{"compressed", converted(19*mib, "-c", "-o", "compression_type=zstd")},
		{"chain", func(t *testing.T, dir string) string {
			converted(17*mib, "-c")(t, dir)
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "img.qcow2", "-F", "qcow2", top, "20M")
			testkit.QemuIO(t, "qcow2", top, "write -P 0x31 1m 2m", "write -z 5m 3m", "discard 9m 1m", "write -P 0x32 18m 1m")
			return top
		}},
	}
	for _, s := range sources {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			src := s.build(t, dir)
			want := testkit.Sha256sum(t, testkit.QemuRaw(t, src)).String()
			for _, cs := range []int64{0, 4 << 10, 64 << 10, 2 << 20} { // 0: the default of each compression
				for _, comp := range []Compression{CompressionNone, CompressionZlib, CompressionZstd} {
					name := fmt.Sprintf("cs%d-%s", cs, comp)
					out := filepath.Join(dir, name+".qcow2")
					convertFile(t, src, out, ConvertOptions{ClusterSize: cs, Compression: comp})
					qemuCheckClean(t, out)
					testkit.QemuCompare(t, src, out)
					if got := testkit.Sha256sum(t, testkit.QemuRaw(t, out)).String(); got != want {
						t.Fatalf("%s: content %s, want %s", name, got, want)
					}
					info := testkit.Run(t, "qemu-img", "info", "--output=json", out)
					if comp == CompressionZstd && !strings.Contains(info, `"compression-type": "zstd"`) {
						t.Fatalf("%s: not zstd: %s", name, info)
					}
					if want := fmt.Sprintf(`"cluster-size": %d`, cmp.Or(cs, DefaultClusterSizeFor(comp))); !strings.Contains(info, want) {
						t.Fatalf("%s: qemu-img info lacks %s: %s", name, want, info)
					}
					os.Remove(out)
				}
			}
			raw := filepath.Join(dir, "out.raw")
			d, err := OpenFile(src)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Create(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := ConvertRaw(t.Context(), f, d, ScanOptions{}); err != nil {
				t.Fatal(err)
			}
			f.Close()
			d.Close()
			if got := testkit.Sha256sum(t, raw).String(); got != want {
				t.Fatalf("raw: %s, want %s", got, want)
			}
		})
	}
}

func TestConvertDelta(t *testing.T) {
	const mib = 1 << 20
	dir := t.TempDir()
	base := converted(64*mib)(t, dir)
	top := filepath.Join(dir, "top.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "img.qcow2", "-F", "qcow2", top)
	// About 1% of the disk changes: new data, zeros over data, a discard.
	testkit.QemuIO(t, "qcow2", top, "write -P 0x41 3m 256k", "write -z 20m 192k", "discard 40m 128k", "write -P 0x42 63m 64k")

	full := filepath.Join(dir, "full.qcow2")
	fullStats := convertFile(t, top, full, ConvertOptions{Compression: CompressionZlib})

	for _, known := range []bool{false, true} {
		t.Run(fmt.Sprintf("SameAsBase=%v", known), func(t *testing.T) {
			src, err := OpenFile(top)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			b, err := OpenFile(base)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			opt := ConvertOptions{Compression: CompressionZlib, Base: b, BackingFile: "img.qcow2", BackingFormat: "qcow2"}
			if known {
				// The top's own layer tells what differs from its backing.
				img := src.(*Image)
				opt.SameAsBase = img.Layer
			}
			delta := filepath.Join(dir, fmt.Sprintf("delta-%v.qcow2", known))
			f, err := os.Create(delta)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			opt.Hash = h
			st, err := Convert(t.Context(), f, src, opt)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if got := digest.NewDigest(digest.SHA256, h); string(got) != testkit.Sha256sum(t, testkit.QemuRaw(t, top)).String() {
				t.Errorf("content hash %s is not the image ID", got)
			}
			qemuCheckClean(t, delta)
			testkit.QemuCompare(t, top, delta)
			if st.FileSize*20 > fullStats.FileSize {
				t.Errorf("delta is %d bytes, full copy %d: more than 5%%", st.FileSize, fullStats.FileSize)
			}
			if st.ZeroClusters == 0 {
				t.Errorf("no zero clusters hide the base's data")
			}
			t.Logf("delta %d bytes (%+v), full %d bytes", st.FileSize, st, fullStats.FileSize)
		})
	}

	// A copy written as a delta against an identical base is nearly empty.
	b, err := OpenFile(base)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	same := filepath.Join(dir, "same.qcow2")
	f, err := os.Create(same)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Convert(t.Context(), f, b, ConvertOptions{Compression: CompressionZlib, Base: b, BackingFile: "img.qcow2", BackingFormat: "qcow2"})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.DataClusters+st.CompressedClusters+st.ZeroClusters != 0 || st.FileSize > 8*DefaultClusterSize {
		t.Errorf("delta against itself: %+v", st)
	}
	qemuCheckClean(t, same)
	testkit.QemuCompare(t, base, same)
}

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		size int64
		cs   int64
	}{{0, 65536}, {512, 512}, {1 << 30, 65536}, {100<<30 + 512, 2 << 20}, {1<<30 + 3, 4096}, {40 << 30, 512}} {
		name := filepath.Join(dir, fmt.Sprintf("c-%d-%d.qcow2", c.size, c.cs))
		f, err := os.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := Create(f, c.size, ConvertOptions{ClusterSize: c.cs}); err != nil {
			t.Fatal(err)
		}
		f.Close()
		qemuCheckClean(t, name)
		var info struct {
			VirtualSize int64 `json:"virtual-size"`
			ClusterSize int64 `json:"cluster-size"`
		}
		json.Unmarshal([]byte(testkit.Run(t, "qemu-img", "info", "--output=json", name)), &info)
		if info.VirtualSize != (c.size+511)&^511 || info.ClusterSize != c.cs {
			t.Errorf("%s: qemu-img info says %+v", name, info)
		}
		// qemu can write to what we create.
		if c.size >= 1<<20 {
			testkit.QemuIO(t, "qcow2", name, "write -P 7 0 64k")
			qemuCheckClean(t, name)
		}
	}
	// With a backing file.
	base := converted(3<<20)(t, dir)
	top := filepath.Join(dir, "top.qcow2")
	f, _ := os.Create(top)
	if err := Create(f, 3<<20, ConvertOptions{BackingFile: filepath.Base(base), BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	qemuCheckClean(t, top)
	testkit.QemuCompare(t, base, top)
}
