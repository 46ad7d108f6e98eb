package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/qcow2"
)

// qemu's NBD client is the oracle here: qemu-img and qemu-io read the
// export of a qcow2 chain made by qemu-img and opened with canga's reader,
// and what they read must be what qemu-img convert makes of the chain.

// testImage makes a 64 MiB qcow2 chain with data in both layers, a
// compressed cluster and a zeroed one, and returns the top image, opened,
// and the raw file qemu-img convert makes of it.
func testImage(t *testing.T) (qcow2.Disk, string) {
	t.Helper()
	testkit.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	base := testkit.QemuCreate(t, filepath.Join(dir, "base.qcow2"), "64M")
	testkit.QemuIO(t, "qcow2", base, "write -P 0x11 0 1M", "write -P 0x22 10M 2M", "write -c -P 0x33 20M 64k", "write -P 0x55 63M 1M")
	top := testkit.QemuCreate(t, filepath.Join(dir, "top.qcow2"), "", "-b", "base.qcow2", "-F", "qcow2")
	testkit.QemuIO(t, "qcow2", top, "write -P 0x44 10752k 256k", "write -z 0 64k", "write -P 0x66 30M 3")
	d, err := qcow2.OpenFile(top)
	must(t, err)
	t.Cleanup(func() { d.Close() })
	return d, testkit.QemuRaw(t, top)
}

// uri is how qemu names the export of a test server.
func (ts *testServer) uri() string {
	if ts.network == "unix" {
		return "nbd+unix:///?socket=" + ts.addr
	}
	return "nbd://" + ts.addr
}

// sameFiles requires two files to hold the same bytes.
func sameFiles(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(ba)) {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("%s and %s differ in the MiB at %d", a, b, off)
		}
		if ea != nil || eb != nil {
			if ea == io.EOF || ea == io.ErrUnexpectedEOF {
				return nil
			}
			return fmt.Errorf("%v, %v", ea, eb)
		}
	}
}

// qemu runs a qemu tool from any goroutine: an error carries its output.
func qemu(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func TestQemuImg(t *testing.T) {
	d, raw := testImage(t)
	top := d.(*qcow2.Image).Name()
	for _, network := range []string{"unix", "tcp"} {
		for _, alloc := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/allocation=%v", network, alloc), func(t *testing.T) {
				var opts []Option
				if alloc {
					opts = append(opts, WithAllocation(diskAllocation(d)))
				}
				ts := serve(t, network, d, d.Size(), opts...)
				info := testkit.QemuInfo(t, ts.uri())
				if info.VirtualSize != d.Size() || info.Format != "raw" {
					t.Errorf("qemu-img info: %+v", info)
				}
				out := filepath.Join(t.TempDir(), "out.raw")
				testkit.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", ts.uri(), out)
				must(t, sameFiles(out, raw))
				st := ts.Stats()
				switch {
				case st.ReadErrors != 0,
					!alloc && st.BytesRead < d.Size(),
					// Told where the holes are, qemu-img reads the data only.
					alloc && (st.BlockStatus == 0 || st.BytesRead >= 16<<20):
					t.Errorf("stats %+v", st)
				}
				if alloc {
					// qemu-img map sees through the export what it sees in the chain.
					if got, want := zeroMap(t, "raw", ts.uri()), zeroMap(t, "qcow2", top); got != want {
						t.Errorf("qemu-img map of the export:\n%s\nof the image:\n%s", got, want)
					}
				}
			})
		}
	}
}

// diskAllocation answers block status from a chain's extents, as canga
// nbd does.
func diskAllocation(d qcow2.Disk) AllocationFunc {
	return func(off, length int64) (int64, bool, error) {
		e, err := d.Extent(off, length)
		return e.Length, e.ReadsZero(), err
	}
}

// zeroMap is qemu-img map's view of an image as the ranges that read as
// zeros without data, merged, one per line.
func zeroMap(t *testing.T, format, image string) string {
	out := testkit.Run(t, "qemu-img", "map", "--output=json", "-f", format, image)
	var m []struct {
		Start, Length int64
		Zero, Data    bool
	}
	must(t, json.Unmarshal([]byte(out), &m))
	var b strings.Builder
	var start, end int64 = -1, -1
	for _, e := range m {
		if e.Zero && !e.Data {
			if e.Start != end {
				if start >= 0 {
					fmt.Fprintf(&b, "%d+%d\n", start, end-start)
				}
				start = e.Start
			}
			end = e.Start + e.Length
		}
	}
	if start >= 0 {
		fmt.Fprintf(&b, "%d+%d\n", start, end-start)
	}
	return b.String()
}

// TestQemuConcurrentClients: qemu-img convert four times at once, and
// qemu-io reading patterns meanwhile.
func TestQemuConcurrentClients(t *testing.T) {
	d, raw := testImage(t)
	ts := serve(t, "unix", d, d.Size())
	dir := t.TempDir()
	errs := make(chan error, 6)
	for i := range 4 {
		go func() {
			out := filepath.Join(dir, fmt.Sprintf("out%d.raw", i))
			_, err := qemu("qemu-img", "convert", "-f", "raw", "-O", "raw", ts.uri(), out)
			if err == nil {
				err = sameFiles(out, raw)
			}
			errs <- err
		}()
	}
	for range 2 {
		go func() {
			out, err := qemu("qemu-io", "-r", "-f", "raw", ts.uri(),
				"-c", "read -P 0x00 0 64k", "-c", "read -P 0x11 64k 960k", "-c", "read -P 0x22 10M 512k",
				"-c", "read -P 0x44 10752k 256k", "-c", "read -P 0x33 20M 64k", "-c", "read -P 0x66 30M 3",
				"-c", "read -P 0x55 63M 1M", "-c", "read -P 0x00 40M 1M")
			if err == nil && (strings.Contains(out, "failed") || strings.Count(out, "read ") != 8) {
				err = fmt.Errorf("qemu-io:\n%s", out)
			}
			errs <- err
		}()
	}
	for range 6 {
		must(t, <-errs)
	}
	if st := ts.Stats(); st.Connections != 6 {
		t.Errorf("stats %+v", st)
	}
}

// TestQemuIOReadError: a read that fails on the server is an I/O error in
// qemu-io for that read only; the reads before and after it succeed on
// the same connection.
func TestQemuIOReadError(t *testing.T) {
	d, _ := testImage(t)
	ts := serve(t, "unix", faulty{ReaderAt: d, from: 10<<20 + 4096, to: 10<<20 + 8192}, d.Size())
	out, _ := qemu("qemu-io", "-r", "-f", "raw", ts.uri(),
		"-c", "read -P 0x22 10M 4k", "-c", "read 10M 64k", "-c", "read -P 0x22 10M 4k", "-c", "read -P 0x22 10248k 4k")
	if !strings.Contains(out, "read failed: Input/output error") || strings.Count(out, "read 4096/4096 bytes") != 3 || strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	if st := ts.Stats(); st.Connections != 1 || st.ReadErrors != 1 {
		t.Errorf("stats %+v", st)
	}
	if err := ts.errs.find(errFault); err == nil {
		t.Errorf("reported %v", ts.errs.all())
	}
}

// BenchmarkQemuConvert measures qemu-img convert of a 256 MiB qcow2 image
// of random data to raw: from the export (canga's qcow2 reader behind this
// server), from an export of the same content as a raw file (the server's
// own cost), and from the qcow2 file (qemu's own reader).
func BenchmarkQemuConvert(b *testing.B) {
	testkit.Need(b, "qemu-img")
	dir := b.TempDir()
	raw := filepath.Join(dir, "random.raw")
	f, err := os.Create(raw)
	must(b, err)
	_, err = io.CopyN(f, rand.NewChaCha8([32]byte{3}), 256<<20)
	must(b, err)
	must(b, f.Close())
	image := filepath.Join(dir, "random.qcow2")
	testkit.Run(b, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image)
	d, err := qcow2.OpenFile(image)
	must(b, err)
	defer d.Close()
	ts := serve(b, "unix", d, d.Size())
	rf, err := os.Open(raw)
	must(b, err)
	defer rf.Close()
	tsRaw := serve(b, "unix", rf, d.Size())
	out := filepath.Join(dir, "out.raw")
	for _, bc := range []struct{ name, format, src string }{
		{"nbd-qcow2", "raw", ts.uri()}, {"nbd-rawfile", "raw", tsRaw.uri()}, {"qcow2", "qcow2", image},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(d.Size())
			for b.Loop() {
				testkit.Run(b, "qemu-img", "convert", "-U", "-f", bc.format, "-O", "raw", bc.src, out)
				os.Remove(out)
			}
		})
	}
}
