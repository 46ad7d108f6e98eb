package qcow2

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// benchImage makes (once per process) a qcow2 image of size bytes whose
// clusters are fill percent allocated with half-compressible data.
func benchImage(b *testing.B, fill int, args ...string) string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), "canga-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	name := filepath.Join(dir, fmt.Sprintf("fill%d%v.qcow2", fill, args))
	if _, err := os.Stat(name); err == nil {
		return name
	}
	const size = 256 << 20
	raw := name + ".raw"
	f, err := os.Create(raw)
	if err != nil {
		b.Fatal(err)
	}
	f.Truncate(size)
	rng := rand.New(rand.NewPCG(uint64(fill), 1))
	buf := make([]byte, 64<<10)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if rng.IntN(100) >= fill {
			continue
		}
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			if i%16 == 0 {
				v &= 0x0f0f0f0f0f0f0f0f // compressible half
			}
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		f.WriteAt(buf, off)
	}
	f.Close()
	testkit.Run(b, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, args...), raw, name)...)
	os.Remove(raw)
	return name
}

func BenchmarkDigest(b *testing.B) {
	for _, c := range []struct {
		name string
		args []string
	}{
		{"plain", nil},
		{"zlib", []string{"-c"}},
		{"zstd", []string{"-c", "-o", "compression_type=zstd"}},
	} {
		for _, fill := range []int{0, 50, 100} {
			b.Run(fmt.Sprintf("%s/fill%d", c.name, fill), func(b *testing.B) {
				name := benchImage(b, fill, c.args...)
				d, err := OpenFile(name)
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				b.SetBytes(d.Size())
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Digest(b.Context(), d, ScanOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkReadAt(b *testing.B) {
	name := benchImage(b, 50, "-c")
	d, err := OpenFile(name)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	for _, n := range []int{4 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			buf := make([]byte, n)
			rng := rand.New(rand.NewPCG(1, 2))
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				off := rng.Int64N(d.Size()-int64(n)) &^ 511
				if _, err := d.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
