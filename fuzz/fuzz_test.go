package fuzz

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/qcow2"
)

// fuzzDir is a directory for the files of a fuzz target: in memory
// (/dev/shm) where the machine has it, so that writing an input each
// execution costs no disk.
func fuzzDir(f *testing.F) string {
	if dir, err := os.MkdirTemp("/dev/shm", "canga-fuzz-"); err == nil {
		f.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return f.TempDir()
}

// FuzzOpenFile writes arbitrary bytes as an image file beside a valid
// backing file and runs what `canga digest`, `info` and `check` run on it:
// open with the chain, digest, header, check, the backing chain as check
// opens it. Nothing may panic or hang. The seeds are a few KiB, of 512-byte
// clusters, and disks over 1 MiB are sampled rather than digested whole, so
// that an execution takes about a millisecond.
func FuzzOpenFile(f *testing.F) {
	dir := fuzzDir(f)
	base := filepath.Join(dir, "base.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	testkit.QemuCreate(f, base, "64K", "-o", "cluster_size=512")
	testkit.QemuIO(f, "qcow2", base, "write -P 1 0 2k")
	testkit.QemuCreate(f, top, "", "-o", "cluster_size=512", "-b", "base.qcow2", "-F", "qcow2")
	testkit.QemuIO(f, "qcow2", top, "write -P 3 1k 2k")
	f.Add(testkit.ReadFile(f, top))
	// A snapshot and a bitmap: the tables that open checks besides L1.
	testkit.Run(f, "qemu-img", "snapshot", "-c", "s1", top)
	testkit.Run(f, "qemu-img", "bitmap", "--add", top, "b0")
	testkit.QemuIO(f, "qcow2", top, "write -P 4 0 512")
	f.Add(testkit.ReadFile(f, top))
	f.Add(testkit.ReadFile(f, base))
	name := filepath.Join(dir, "fuzz.qcow2")
	scan := qcow2.ScanOptions{ChunkSize: 64 << 10, Workers: 2}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if d, err := qcow2.OpenFile(name); err == nil {
			if d.Size() <= 1<<20 {
				qcow2.Digest(t.Context(), d, scan)
			} else {
				buf := make([]byte, 4096)
				for _, off := range []int64{0, d.Size() / 2, d.Size() - 1} {
					d.ReadAt(buf, off)
				}
			}
			d.Close()
		}
		fh, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if h, err := qcow2.ReadHeader(fh, int64(len(data))); err == nil {
			qcow2.ValidateTables(fh, int64(len(data)), h)
		}
		if _, err := qcow2.Check(fh, int64(len(data))); err == nil {
			qcow2.CheckChain(name)
		}
	})
}
