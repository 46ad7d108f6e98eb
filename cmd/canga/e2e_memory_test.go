package main_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// TestMemoryBoundedOnHugeImages converts and exports a sparse 8 TiB image:
// canga's memory must not grow with the virtual size (issue: peak memory
// under 128 MiB for any image size), and holes must cost no I/O, so this
// takes seconds.
func TestMemoryBoundedOnHugeImages(t *testing.T) {
	const limit = 128 << 10 // KiB
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	huge := filepath.Join(dir, "huge.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", huge, "8T")
	testkit.QemuIO(t, "qcow2", huge, "write -P 0x11 0 4M", "write -P 0x22 3T 4M", "write -P 0x33 8191G 4M")
	for _, args := range [][]string{
		{"convert", "-c", huge, filepath.Join(dir, "zlib.qcow2")},
		{"convert", "--compression", "zstd", huge, filepath.Join(dir, "zstd.qcow2")},
		{"convert", huge, filepath.Join(dir, "plain.qcow2")},
		{"convert", "-O", "raw", huge, filepath.Join(dir, "sparse.raw")},
		{"check", huge},
		{"info", huge},
	} {
		r := cangaMeasured(t, home, dir, 2*time.Minute, append([]string{"-q"}, args...)...)
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		t.Logf("canga %s: %v, max RSS %d MiB", args[0], r.elapsed.Round(time.Millisecond), r.maxRSS>>10)
		if r.maxRSS >= limit {
			t.Errorf("canga %v: max RSS %d KiB, want < %d", args, r.maxRSS, limit)
		}
	}
	for _, out := range []string{"zlib.qcow2", "zstd.qcow2", "plain.qcow2"} {
		testkit.QemuCheck(t, filepath.Join(dir, out))
	}
	testkit.QemuCompare(t, huge, filepath.Join(dir, "zstd.qcow2"))
	testkit.QemuCompare(t, huge, filepath.Join(dir, "sparse.raw"))
	if got := fileSize(t, filepath.Join(dir, "plain.qcow2")); got > 64<<20 {
		t.Errorf("plain copy of 12 MiB of data is %d bytes", got)
	}
}
