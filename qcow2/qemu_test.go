package qcow2

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// Test images are made by qemu-img and qemu-io at test time; qemu is the
// oracle every result is compared with.

// writeSource writes a raw disk of size bytes that looks like a used disk:
// runs of random bytes, of compressible text, of zeros, and holes. The same
// seed gives the same file.
func writeSource(t testing.TB, name string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	words := strings.Fields("the quick brown fox jumps over lazy dog canga qcow2 cluster image layer block device kernel init etc usr lib")
	const unit = 8 << 10
	buf := make([]byte, unit)
	for off := int64(0); off < size; off += unit {
		n := min(unit, size-off)
		switch r := rng.IntN(10); {
		case r < 2:
			for i := range buf[:n] {
				buf[i] = byte(rng.Uint32())
			}
		case r < 5:
			var b bytes.Buffer
			for int64(b.Len()) < n {
				b.WriteString(words[rng.IntN(len(words))])
				b.WriteByte(" \n"[rng.IntN(2)])
			}
			copy(buf, b.Bytes())
		case r < 6:
			clear(buf)
		default:
			continue // a hole
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
	}
}

// checkAgainstQemu compares everything canga reads from image with what
// qemu-img reads: the digest, random ReadAt ranges, and the extent map.
func checkAgainstQemu(t *testing.T, image string, opts ...Option) {
	t.Helper()
	ref := testkit.QemuRaw(t, image)
	want := testkit.Sha256sum(t, ref).String()
	refBytes, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(image, opts...)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	defer d.Close()
	if d.Size() != int64(len(refBytes)) {
		t.Fatalf("size %d, qemu-img says %d", d.Size(), len(refBytes))
	}
	got, err := Digest(t.Context(), d, ScanOptions{})
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	if string(got) != want {
		t.Fatalf("digest %s, sha256sum of qemu-img's raw output is %s", got, want)
	}
	// Small chunks and many workers exercise ordering and unaligned ends.
	got, err = Digest(t.Context(), d, ScanOptions{ChunkSize: 3 << 19, Workers: 5})
	if err != nil || string(got) != want {
		t.Fatalf("Digest with odd chunks: %s, %v; want %s", got, err, want)
	}
	compareReads(t, d, refBytes)
	compareExtents(t, d, refBytes)
}

// compareReads reads random ranges, from several goroutines at once.
func compareReads(t *testing.T, d Disk, ref []byte) {
	t.Helper()
	size := int64(len(ref))
	if size == 0 {
		return
	}
	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			buf := make([]byte, 3<<20)
			for range 150 {
				off := rng.Int64N(size)
				var n int64
				switch rng.IntN(3) {
				case 0:
					n = rng.Int64N(4096) + 1
				case 1:
					n = rng.Int64N(256<<10) + 1
				default:
					n = rng.Int64N(3<<20) + 1
				}
				p := buf[:n]
				m, err := d.ReadAt(p, off)
				wantN := min(n, size-off)
				if int64(m) != wantN || (err != nil && err != io.EOF) || (wantN < n && err != io.EOF) {
					errs <- fmt.Errorf("ReadAt(%d bytes at %d) = %d, %v; want %d", n, off, m, err, wantN)
					return
				}
				if !bytes.Equal(p[:m], ref[off:off+wantN]) {
					errs <- fmt.Errorf("ReadAt(%d bytes at %#x) differs from qemu-img's bytes", n, off)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if _, err := d.ReadAt(make([]byte, 1), size); err != io.EOF {
		t.Errorf("ReadAt at the end: %v, want io.EOF", err)
	}
	if _, err := d.ReadAt(make([]byte, 1), -1); err == nil {
		t.Errorf("ReadAt at -1 succeeded")
	}
}

// compareExtents walks the extent map: it must tile the disk, and every
// range it says reads as zeros must be zeros in qemu's output.
func compareExtents(t *testing.T, d Disk, ref []byte) {
	t.Helper()
	size := int64(len(ref))
	for off := int64(0); off < size; {
		e, err := d.Extent(off, size-off)
		if err != nil {
			t.Fatalf("Extent(%d): %v", off, err)
		}
		if e.Offset != off || e.Length <= 0 || e.Offset+e.Length > size {
			t.Fatalf("Extent(%d) = %+v does not tile the disk", off, e)
		}
		if e.ReadsZero() {
			for i, b := range ref[e.Offset : e.Offset+e.Length] {
				if b != 0 {
					t.Fatalf("extent %+v is %s but byte %#x is %#x", e, e.Kind, e.Offset+int64(i), b)
				}
			}
		}
		off += e.Length
	}
}
