package qcow2

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// panicDisk is a disk whose ReadAt panics on the byte at, as a decoder
// with a bug would on a hostile image.
type panicDisk struct {
	*Raw
	at int64
}

func (d panicDisk) ReadAt(p []byte, off int64) (int, error) {
	if off <= d.at && d.at < off+int64(len(p)) {
		var table []int
		_ = table[d.at] // index out of range
	}
	return d.Raw.ReadAt(p, off)
}

func (d panicDisk) Name() string { return "hostile.img" }

// wantInternal checks that err is the error a panic becomes: it wraps
// ErrInternal and names all of want.
func wantInternal(t *testing.T, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, ErrInternal) {
		t.Fatalf("error %v does not wrap ErrInternal", err)
	}
	t.Log(err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}

// TestWorkerPanic: a panic in a worker of Digest or Convert becomes an
// error that names the disk and the guest range, not a crash.
func TestWorkerPanic(t *testing.T) {
	const size = 12 << 20
	content := bytes.Repeat([]byte("canga "), size/6+1)[:size]
	d := panicDisk{NewRaw(bytes.NewReader(content), size), 5 << 20}
	for _, workers := range []int{1, 3} {
		_, err := Digest(t.Context(), d, ScanOptions{Workers: workers})
		wantInternal(t, err, "reading guest bytes 0x400000-0x800000 of hostile.img", "index out of range")

		for _, c := range []Compression{CompressionNone, CompressionZstd} {
			f, err := os.Create(filepath.Join(t.TempDir(), "out.qcow2"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Convert(t.Context(), f, d, ConvertOptions{Compression: c, Workers: workers})
			f.Close()
			wantInternal(t, err, "converting guest bytes 0x400000-0x800000 of hostile.img", "index out of range")
		}
	}
	// A panic in the consumer (Scan's caller) is caught too.
	err := Scan(t.Context(), NewRaw(bytes.NewReader(content), size), ScanOptions{}, func(off int64, p []byte, zero bool) error {
		if off > 0 {
			panic("consumer bug")
		}
		return nil
	})
	wantInternal(t, err, "guest bytes 0x400000-0x800000 of the disk", "consumer bug")
}

// TestDecompressPanic: a panic while decoding a compressed cluster
// becomes an error that names the image file and the cluster, for whole
// clusters, for parts of one (which go through the cluster cache, which
// must not be left waiting), and in a Digest and a Convert.
func TestDecompressPanic(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	writeSource(t, src, 1<<20, 3)
	name := filepath.Join(dir, "c.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", src, name)
	d, err := OpenFile(name)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	testHookDecompress = func() { panic("decoder bug") }
	defer func() { testHookDecompress = nil }()

	for range 2 { // the second read finds no stale cache entry
		_, err = d.ReadAt(make([]byte, 4096), 64<<10+512)
		wantInternal(t, err, name, "decompressing the cluster at guest offset 0x10000", "decoder bug")
		_, err = d.ReadAt(make([]byte, 64<<10), 0)
		wantInternal(t, err, name, "decompressing the cluster at guest offset 0x0", "decoder bug")
	}
	_, err = Digest(t.Context(), d, ScanOptions{})
	wantInternal(t, err, name, "decompressing the cluster at guest offset", "decoder bug")
	_, err = Convert(t.Context(), discardWriterAt{}, d, ConvertOptions{})
	wantInternal(t, err, name, "decompressing the cluster at guest offset", "decoder bug")

	testHookDecompress = nil
	if _, err := Digest(t.Context(), d, ScanOptions{}); err != nil {
		t.Fatalf("without the bug: %v", err)
	}
}

type discardWriterAt struct{}

func (discardWriterAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

var _ io.WriterAt = discardWriterAt{}
