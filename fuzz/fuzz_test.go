package fuzz

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/qcow2"
)

// FuzzOpenFile writes arbitrary bytes as an image file beside a valid
// backing file and runs what `canga digest`, `info` and `check` run on it:
// open with the chain, digest, header, check. Nothing may panic or hang.
func FuzzOpenFile(f *testing.F) {
	dir := f.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	testkit.QemuCreate(f, base, "64K", "-o", "cluster_size=512")
	testkit.QemuCreate(f, top, "", "-o", "cluster_size=512", "-b", "base.qcow2", "-F", "qcow2")
	testkit.QemuIO(f, "qcow2", top, "write -P 3 1k 2k")
	f.Add(testkit.ReadFile(f, top))
	f.Fuzz(func(t *testing.T, data []byte) {
		name := filepath.Join(dir, "fuzz.qcow2")
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if d, err := qcow2.OpenFile(name); err == nil {
			if d.Size() <= 16<<20 {
				qcow2.Digest(t.Context(), d, qcow2.ScanOptions{})
			} else {
				d.ReadAt(make([]byte, 4096), d.Size()/2)
			}
			d.Close()
		}
		fh, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if _, err := qcow2.ReadHeader(fh, int64(len(data))); err == nil {
			qcow2.Check(fh, int64(len(data)))
		}
	})
}
