//go:build linux

package qcow2

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	kflate "github.com/klauspost/compress/flate"
	"golang.org/x/sys/unix"
)

// benchCache is where bench/mkimage.sh keeps its tree, and where the
// benchmarks keep the images they make from it.
func benchCache(b *testing.B) string {
	dir := os.Getenv("CANGA_BENCH_CACHE")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			b.Fatal(err)
		}
		dir = filepath.Join(home, ".cache", "canga-bench")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

// realClusters returns the compressed clusters of the benchmark disk of
// bench/mkimage.sh (an ext4 file system holding a Debian tree and the Go
// toolchain) as `qemu-img convert -c` writes it: 64 KiB zlib clusters.
// The image is made once and kept in the cache; the clusters are read
// into memory, so that the benchmark measures decoding only.
func realClusters(b *testing.B) (srcs [][]byte, clusterSize int64) {
	b.Helper()
	dir := benchCache(b)
	name := filepath.Join(dir, "inflate-zlib-64k.qcow2")
	if _, err := os.Stat(name); err != nil {
		raw := filepath.Join(b.TempDir(), "bench.raw")
		testkit.Run(b, "sh", "../bench/mkimage.sh", raw)
		testkit.Run(b, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "cluster_size=64k", raw, name+".tmp")
		if err := os.Rename(name+".tmp", name); err != nil {
			b.Fatal(err)
		}
	}
	f, err := os.Open(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	img, err := Open(f, fi.Size())
	if err != nil {
		b.Fatal(err)
	}
	err = img.walk(0, img.Size(), func(s segment) error {
		if s.kind != segCompressed {
			return nil
		}
		off, n := s.entry.compressedRange(img.clusterBits)
		p := make([]byte, n)
		if err := readFileAt(f, p, off, fi.Size()); err != nil {
			return err
		}
		srcs = append(srcs, p)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if len(srcs) == 0 {
		b.Fatal("no compressed clusters")
	}
	return srcs, img.clusterSize
}

// kflateReader is a klauspost/compress/flate reader kept for reuse, with
// the bytes.Reader it reads from: reset, not rebuilt, for each cluster.
type kflateReader struct {
	src bytes.Reader
	r   io.ReadCloser
}

var kflatePool = sync.Pool{New: func() any {
	k := &kflateReader{}
	k.r = kflate.NewReader(&k.src)
	return k
}}

// kflateCluster decodes one cluster with a pooled klauspost reader,
// reading exactly len(dst) bytes.
func kflateCluster(dst, src []byte) error {
	k := kflatePool.Get().(*kflateReader)
	defer kflatePool.Put(k)
	k.src.Reset(src)
	if err := k.r.(kflate.Resetter).Reset(&k.src, nil); err != nil {
		return err
	}
	_, err := io.ReadFull(k.r, dst)
	return err
}

// BenchmarkInflateClusters decodes every compressed cluster of the
// benchmark disk, once per iteration, with each decoder. Besides the usual
// figures it reports cpu-MB/s: the throughput in the CPU time of the
// decoding thread, which other processes on a busy machine disturb far
// less than the wall clock.
func BenchmarkInflateClusters(b *testing.B) {
	srcs, cs := realClusters(b)
	for _, d := range []struct {
		name   string
		decode func(dst, src []byte) error
	}{
		{"canga", inflateCluster},
		{"klauspost", kflateCluster},
	} {
		b.Run(d.name, func(b *testing.B) {
			dst := make([]byte, cs)
			total := int64(len(srcs)) * cs
			b.SetBytes(total)
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			start := threadCPU(b)
			n := 0
			for b.Loop() {
				for _, src := range srcs {
					if err := d.decode(dst, src); err != nil {
						b.Fatal(errors.Join(errors.New(d.name), err))
					}
				}
				n++
			}
			cpu := threadCPU(b) - start
			b.ReportMetric(float64(total)*float64(n)/cpu.Seconds()/1e6, "cpu-MB/s")
		})
	}
}

// threadCPU is the CPU time the calling thread has used.
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
