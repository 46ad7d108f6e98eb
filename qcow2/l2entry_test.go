package qcow2

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// TestL2EntryCodec decodes every L2 entry of images qemu wrote and encodes
// it again: the codec must read qemu's entries as qemu means them and
// write the very same bits.
func TestL2EntryCodec(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	writeSource(t, src, 6<<20, 11)
	for _, cs := range []string{"512", "4k", "64k", "2M"} {
		t.Run(cs, func(t *testing.T) {
			name := filepath.Join(dir, "c"+cs+".qcow2")
			testkit.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "cluster_size="+cs, src, name)
			// A zero cluster, and data that replaces a compressed one.
			testkit.QemuIO(t, "qcow2", name, "write -z 0 "+cs, "write -P 7 4M 64k")
			kinds := map[clusterKind]int{}
			walkL2(t, name, func(img *Image, e l2Entry, b l2Bitmap) {
				k := e.kind(img.extendedL2)
				kinds[k]++
				switch k {
				case clusterCompressed:
					off, n := e.compressedRange(img.clusterBits)
					if n <= 0 || n > 2*img.clusterSize || off != e.compressedOffset(img.clusterBits) {
						t.Fatalf("entry %#x: range %#x+%d", uint64(e), off, n)
					}
					if got := compressedEntry(off, n, img.clusterBits); got != e {
						t.Fatalf("entry %#x: re-encoded as %#x", uint64(e), uint64(got))
					}
					// The last byte of the range is the last of its sector.
					if (off+n)%512 != 0 {
						t.Fatalf("entry %#x: range %#x+%d does not end a sector", uint64(e), off, n)
					}
				case clusterNormal:
					if got := normalEntry(e.hostOffset()); got != e {
						t.Fatalf("entry %#x: re-encoded as %#x", uint64(e), uint64(got))
					}
				case clusterZeroPlain:
					if e != zeroEntry() {
						t.Fatalf("zero entry %#x", uint64(e))
					}
				}
			})
			if kinds[clusterCompressed] == 0 || kinds[clusterNormal] == 0 || kinds[clusterZeroPlain]+kinds[clusterZeroAlloc] == 0 {
				t.Fatalf("kinds %v: want compressed, normal and zero clusters", kinds)
			}
		})
	}
}

// TestL2EntrySubclusters reads the subcluster bitmaps qemu writes.
func TestL2EntrySubclusters(t *testing.T) {
	name := filepath.Join(t.TempDir(), "ext.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k,extended_l2=on", name, "1M")
	// Subcluster size 2 KiB: subclusters 1 and 2 data, 4 zero.
	testkit.QemuIO(t, "qcow2", name, "write -P 1 2k 4k", "write -z 8k 2k")
	var seen int
	walkL2(t, name, func(img *Image, e l2Entry, b l2Bitmap) {
		if e == 0 && b == 0 {
			return
		}
		seen++
		if k := e.kind(true); k != clusterNormal {
			t.Fatalf("entry %#x: kind %d", uint64(e), k)
		}
		want := []clusterKind{clusterUnallocated, clusterNormal, clusterNormal, clusterUnallocated, clusterZeroPlain}
		for sc, k := range want {
			if got := b.subclusterKind(int64(sc)); got != k {
				t.Errorf("bitmap %#x: subcluster %d is %d, want %d", uint64(b), sc, got, k)
			}
		}
	})
	if seen != 1 {
		t.Fatalf("%d allocated entries, want 1", seen)
	}
}

// walkL2 calls fn for every entry of every L2 table of the active L1
// table.
func walkL2(t *testing.T, name string, fn func(*Image, l2Entry, l2Bitmap)) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	img, err := Open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	for i := range img.l1 {
		table, err := img.l2Table(int64(i))
		if err != nil {
			t.Fatal(err)
		}
		for j := range int64(1) << img.l2Bits {
			if table != nil {
				e, b := readL2(table, j, img.extendedL2)
				fn(img, e, b)
			}
		}
	}
}
