package remote

import (
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cangallo/canga/cas"
)

// benchBlobSize is the size of the random data in the benchmark blob; the
// qcow2 file is a little larger.
const benchBlobSize = 256 << 20

// benchRepo makes a repository with one qcow2 blob of 256 MiB of random
// data (incompressible, so the file is that big).
func benchRepo(b *testing.B) (string, Item) {
	b.Helper()
	need(b, "qemu-img", "head")
	r := newRepo(b)
	raw := filepath.Join(b.TempDir(), "random.raw")
	run(b, "sh", "-c", "head -c "+strconv.Itoa(benchBlobSize)+" /dev/urandom > "+raw)
	p := filepath.Join(r.blobDir(), "new.qcow2")
	run(b, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, p)
	im := &image{vsize: benchBlobSize, id: fakeID(1)}
	im.blob = sha256File(b, p)
	fi, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	im.size = fi.Size()
	if err := os.Rename(p, filepath.Join(r.blobDir(), im.hex())); err != nil {
		b.Fatal(err)
	}
	r.images = append(r.images, im)
	r.writeIndex()
	items, err := PlanChain(parseIndex(b, r.dir), im.id)
	if err != nil {
		b.Fatal(err)
	}
	return r.dir, items[0]
}

// BenchmarkPull pulls a 256 MiB blob over loopback from Handler and from
// python's http.server, with digest and header verification, into a store
// on tmpfs (where fsync costs nothing) and on the disk of the test's temp
// dir. The yardsticks are curl on the same URLs, to /dev/null (the target
// was 0.8x of it) and to a file on tmpfs (curl, too, storing the bytes),
// and a Go GET that only hashes. On a 2-core machine that also runs the
// server, storing the bytes alone costs curl well over half its /dev/null
// speed, so the fair comparison is with curl-to-tmpfs.
func BenchmarkPull(b *testing.B) {
	need(b, "curl", "python3")
	dir, it := benchRepo(b)
	urls := []struct{ name, url string }{
		{"handler", ourServer(b, dir)},
		{"python", pythonServer(b, dir)},
	}
	shm := "/dev/shm"
	if fi, err := os.Stat(shm); err != nil || !fi.IsDir() {
		b.Fatalf("no %s for the tmpfs store", shm)
	}
	for _, u := range urls {
		blobURL := u.url + it.Path
		b.Run("curl/"+u.name, func(b *testing.B) {
			b.SetBytes(it.Size)
			for b.Loop() {
				if out, err := exec.Command("curl", "-sSf", "-o", "/dev/null", blobURL).CombinedOutput(); err != nil {
					b.Fatalf("curl: %v: %s", err, out)
				}
			}
		})
		// References: what the same download costs with only one of the
		// two things a pull must do with each byte, write it or hash it.
		b.Run("ref/"+u.name+"/curl-to-tmpfs", func(b *testing.B) {
			out := filepath.Join(shmDir(b, shm), "blob")
			b.SetBytes(it.Size)
			for b.Loop() {
				if o, err := exec.Command("curl", "-sSf", "-o", out, blobURL).CombinedOutput(); err != nil {
					b.Fatalf("curl: %v: %s", err, o)
				}
			}
		})
		b.Run("ref/"+u.name+"/get-hash-only", func(b *testing.B) {
			b.SetBytes(it.Size)
			buf := make([]byte, 1<<20)
			for b.Loop() {
				resp, err := http.Get(blobURL)
				if err != nil {
					b.Fatal(err)
				}
				h := sha256.New()
				_, err = io.CopyBuffer(h, struct{ io.Reader }{resp.Body}, buf)
				resp.Body.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		for _, st := range []struct{ name, dir string }{{"tmpfs", shm}, {"disk", ""}} {
			b.Run("canga/"+u.name+"/"+st.name, func(b *testing.B) {
				root := b.TempDir()
				if st.dir != "" {
					root = shmDir(b, st.dir)
				}
				store, err := cas.Init(root)
				if err != nil {
					b.Fatal(err)
				}
				c := NewClient("bench")
				b.SetBytes(it.Size)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.PullBlob(context.Background(), store, u.url, it, nil); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := store.Remove(it.Blob); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		}
	}
}

// shmDir is a temp dir under the tmpfs dir, removed after the benchmark.
func shmDir(b *testing.B, dir string) string {
	root, err := os.MkdirTemp(dir, "canga-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(root) })
	return root
}
