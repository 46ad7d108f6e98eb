package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/opencontainers/go-digest"
)

func parseIndex(t testing.TB, dir string) *index.Index {
	t.Helper()
	x, err := index.Parse(readFile(t, filepath.Join(dir, IndexFile)))
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestPullChain(t *testing.T) {
	r := newRepo(t)
	base := r.add(nil, 0x11, 0)
	mid := r.add(base, 0x22, 1<<20)
	top := r.add(mid, 0x33, 2<<20)
	other := r.add(nil, 0x44, 0) // not in the chain: must not be pulled
	r.writeIndex()
	x := parseIndex(t, r.dir)

	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			url := srv.start(t, r.dir)
			store := newStore(t)
			var mu sync.Mutex
			var lastDone, lastTotal int64
			calls := 0
			got, err := testClient().PullImage(context.Background(), store, url, x, top.id, func(done, total int64) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				lastDone, lastTotal = done, total
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := base.size + mid.size + top.size; lastDone != want || lastTotal != want || calls < 2 {
				t.Fatalf("progress ended at %d/%d after %d calls, want %d", lastDone, lastTotal, calls, want)
			}
			for _, im := range []*image{base, mid, top} {
				if got[im.id].Digest != im.blob || got[im.id].Size != im.size {
					t.Fatalf("%s: got %+v", im.id, got[im.id])
				}
			}
			infos := blobsIn(t, store)
			if len(infos) != 3 {
				t.Fatalf("%d blobs stored, want 3", len(infos))
			}
			for _, info := range infos {
				p, err := store.Path(info.Digest)
				if err != nil {
					t.Fatal(err)
				}
				if sum := sha256sum(t, p); "sha256:"+sum != string(info.Digest) || filepath.Base(p) != sum {
					t.Fatalf("blob %s has sha256sum %s", p, sum)
				}
				if info.Digest == other.blob {
					t.Fatal("an image outside the chain was pulled")
				}
			}
			if left := tmpEntries(t, store); len(left) != 0 {
				t.Fatalf(".tmp/ not empty: %v", left)
			}
			// The stored chain is what qemu sees, and has the image ID.
			topPath, _ := store.Path(top.blob)
			info := run(t, "qemu-img", "info", "--backing-chain", topPath)
			if strings.Count(info, "image: ") != 3 {
				t.Fatalf("qemu-img info --backing-chain:\n%s", info)
			}
			if id := imageID(t, topPath); id != top.id {
				t.Fatalf("image ID of the pulled chain %s, want %s", id, top.id)
			}
			// A second pull downloads nothing.
			lastTotal = -1
			if _, err := testClient().PullImage(context.Background(), store, url, x, top.id, func(done, total int64) { lastTotal = total }); err != nil || lastTotal != 0 {
				t.Fatalf("second pull: total %d, err %v", lastTotal, err)
			}
		})
	}
}

// hostile makes a qcow2 file whose header names backing as its backing
// file (in format fmtName), without opening it.
func hostile(t testing.TB, backing, fmtName string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hostile.qcow2")
	args := []string{"create", "-q", "-f", "qcow2"}
	if backing != "" {
		args = append(args, "-u", "-b", backing, "-F", fmtName)
	}
	run(t, "qemu-img", append(args, p, "4M")...)
	return p
}

// TestPullRefused: blobs that must not enter a repository. Each fails with
// the expected error and leaves neither the blob nor a partial behind.
func TestPullRefused(t *testing.T) {
	cases := []struct {
		name string
		// make adds the bad image to r as a child of base (or as a base)
		// and returns it.
		make func(t *testing.T, r *repo, base *image) *image
		want error
	}{
		{"bytes changed on the server", func(t *testing.T, r *repo, base *image) *image {
			im := r.add(base, 0x55, 0)
			p := filepath.Join(r.blobDir(), im.hex())
			b := readFile(t, p)
			b[len(b)/2] ^= 0xff
			writeFile(t, p, b)
			return im
		}, cas.ErrDigestMismatch},
		{"truncated on the server", func(t *testing.T, r *repo, base *image) *image {
			im := r.add(base, 0x55, 0)
			if err := os.Truncate(filepath.Join(r.blobDir(), im.hex()), im.size/2); err != nil {
				t.Fatal(err)
			}
			return im
		}, cas.ErrSizeMismatch},
		{"backing /etc/shadow", func(t *testing.T, r *repo, base *image) *image {
			return r.addFile(hostile(t, "/etc/shadow", "qcow2"), base, fakeID(1))
		}, ErrRefused},
		{"backing ../x", func(t *testing.T, r *repo, base *image) *image {
			return r.addFile(hostile(t, "../x", "qcow2"), base, fakeID(2))
		}, ErrRefused},
		{"backing json:", func(t *testing.T, r *repo, base *image) *image {
			return r.addFile(hostile(t, `json:{"file.filename":"/etc/passwd"}`, "qcow2"), base, fakeID(3))
		}, ErrRefused},
		{"backing the parent by absolute path", func(t *testing.T, r *repo, base *image) *image {
			return r.addFile(hostile(t, filepath.Join(r.blobDir(), base.hex()), "qcow2"), base, fakeID(4))
		}, ErrRefused},
		{"backing the parent as raw", func(t *testing.T, r *repo, base *image) *image {
			return r.addFile(hostile(t, base.hex(), "raw"), base, fakeID(5))
		}, ErrRefused},
		{"backing another blob", func(t *testing.T, r *repo, base *image) *image {
			return r.addFile(hostile(t, strings.Repeat("ab", 32), "qcow2"), base, fakeID(6))
		}, ErrRefused},
		{"base with a backing file", func(t *testing.T, r *repo, base *image) *image {
			return r.addFile(hostile(t, base.hex(), "qcow2"), nil, fakeID(7))
		}, ErrRefused},
		{"not qcow2", func(t *testing.T, r *repo, base *image) *image {
			p := filepath.Join(t.TempDir(), "raw")
			writeFile(t, p, bytes.Repeat([]byte("raw disk "), 100000))
			return r.addFile(p, base, fakeID(8))
		}, ErrRefused},
		{"external data file", func(t *testing.T, r *repo, base *image) *image {
			dir := t.TempDir()
			p := filepath.Join(dir, "d.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.raw"), p, "4M")
			return r.addFile(p, nil, fakeID(9))
		}, ErrRefused},
		{"virtual size not the index's", func(t *testing.T, r *repo, base *image) *image {
			p := filepath.Join(t.TempDir(), "big.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", filepath.Join(r.blobDir(), base.hex()), "-F", "qcow2", p, "8M")
			run(t, "qemu-img", "rebase", "-u", "-b", base.hex(), "-F", "qcow2", p)
			return r.addFile(p, base, fakeID(10))
		}, ErrRefused},
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					r := newRepo(t)
					base := r.add(nil, 0x11, 0)
					bad := tc.make(t, r, base)
					r.writeIndex()
					url := srv.start(t, r.dir)
					store := newStore(t)
					_, err := testClient().PullImage(context.Background(), store, url, parseIndex(t, r.dir), bad.id, nil)
					if !errors.Is(err, tc.want) {
						t.Fatalf("got %v, want %v", err, tc.want)
					}
					t.Logf("error: %v", err)
					if has, _ := store.Has(bad.blob); has {
						t.Fatal("the bad blob was stored")
					}
					for _, name := range tmpEntries(t, store) {
						if name == "partial-"+bad.hex() && tc.want != cas.ErrSizeMismatch {
							t.Fatalf("partial of the bad blob left: %s", name)
						}
					}
				})
			}
		})
	}
}

// fakeID is an image ID for images whose content nobody checks (a v1
// pull verifies blob digests, not image IDs).
func fakeID(n int) digest.Digest {
	return digest.Digest(fmt.Sprintf("sha256:%064x", n))
}

// cutServer serves dir/blobs/sha256 like Handler does, except that the
// requests listed in cut are answered with a body cut off after half (the
// connection is closed mid-transfer), or stalled (no byte after half).
type cutServer struct {
	dir  string
	log  reqLog
	mu   sync.Mutex
	n    int
	plan map[int]func(w http.ResponseWriter, r *http.Request, data []byte)
}

func (s *cutServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.log.add(r)
	s.mu.Lock()
	s.n++
	act := s.plan[s.n]
	s.mu.Unlock()
	if act == nil || r.URL.Path == "/"+IndexFile {
		Handler(s.dir).ServeHTTP(w, r)
		return
	}
	data, err := os.ReadFile(filepath.Join(s.dir, strings.TrimPrefix(r.URL.Path, "/")))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	act(w, r, data)
}

// cutAt sends the whole length in Content-Length and n bytes of data
// (from the start, whatever Range asked), then drops the connection.
func cutAt(n func(size int) int) func(w http.ResponseWriter, r *http.Request, data []byte) {
	return func(w http.ResponseWriter, r *http.Request, data []byte) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:n(len(data))])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // closes the connection, as a crash would
	}
}

// stallAt sends half and then nothing until the client gives up.
func stallAt(w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(http.StatusOK)
	w.Write(data[:len(data)/2])
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

func half(size int) int { return size / 2 }

func TestPullResume(t *testing.T) {
	r := newRepo(t)
	base := r.add(nil, 0x11, 0)
	qemuWrite(t, filepath.Join(r.blobDir(), base.hex()), 0x66, 0, 3<<20) // a few MiB to cut
	// The blob changed: rename it to its new digest.
	old := filepath.Join(r.blobDir(), base.hex())
	base.blob = sha256File(t, old)
	fi, _ := os.Stat(old)
	base.size = fi.Size()
	if err := os.Rename(old, filepath.Join(r.blobDir(), base.hex())); err != nil {
		t.Fatal(err)
	}
	base.id = imageID(t, filepath.Join(r.blobDir(), base.hex()))
	r.writeIndex()
	x := parseIndex(t, r.dir)
	items, err := PlanChain(x, base.id)
	if err != nil {
		t.Fatal(err)
	}
	it := items[0]
	blobPath := "/blobs/sha256/" + base.hex()
	resumeAt := fmt.Sprintf("bytes=%d-", base.size/2)
	ctx := context.Background()

	t.Run("retried within one pull", func(t *testing.T) {
		srv := &cutServer{dir: r.dir, plan: map[int]func(http.ResponseWriter, *http.Request, []byte){1: cutAt(half)}}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		store := newStore(t)
		if _, err := testClient().PullBlob(ctx, store, hs.URL, it, nil); err != nil {
			t.Fatal(err)
		}
		assertLog(t, srv.log.all(), []loggedReq{{blobPath, ""}, {blobPath, resumeAt}})
		assertStored(t, store, base)
	})

	t.Run("resumed by the next pull", func(t *testing.T) {
		srv := &cutServer{dir: r.dir, plan: map[int]func(http.ResponseWriter, *http.Request, []byte){1: cutAt(half)}}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		store := newStore(t)
		c := testClient()
		c.MaxAttempts = 1
		_, err := c.PullBlob(ctx, store, hs.URL, it, nil)
		var te *transferError
		if !errors.As(err, &te) {
			t.Fatalf("first pull: got %v, want a transfer error", err)
		}
		if left := tmpEntries(t, store); len(left) != 1 || left[0] != "partial-"+base.hex() {
			t.Fatalf("partial not kept: %v", left)
		}
		// The server is back; a new pull (a new process, as far as cas
		// is concerned) goes on from the partial.
		if _, err := c.PullBlob(ctx, store, hs.URL, it, nil); err != nil {
			t.Fatal(err)
		}
		assertLog(t, srv.log.all(), []loggedReq{{blobPath, ""}, {blobPath, resumeAt}})
		assertStored(t, store, base)
	})

	t.Run("server ignores Range", func(t *testing.T) {
		srv := &cutServer{dir: r.dir, plan: map[int]func(http.ResponseWriter, *http.Request, []byte){1: cutAt(half)}}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		store := newStore(t)
		c := testClient()
		c.MaxAttempts = 1
		if _, err := c.PullBlob(ctx, store, hs.URL, it, nil); err == nil {
			t.Fatal("the cut pull succeeded")
		}
		if left := tmpEntries(t, store); len(left) != 1 {
			t.Fatalf("partial not kept: %v", left)
		}
		// python's http.server answers a Range request with 200 and the
		// whole file: the partial restarts from zero.
		var progress []int64
		if _, err := c.PullBlob(ctx, store, pythonServer(t, r.dir), it, func(n int64) { progress = append(progress, n) }); err != nil {
			t.Fatal(err)
		}
		if len(progress) < 2 || progress[0] != 0 || progress[len(progress)-1] != base.size {
			t.Fatalf("progress %v: want a restart at 0 and an end at %d", progress, base.size)
		}
		assertStored(t, store, base)
	})

	t.Run("stalled transfer", func(t *testing.T) {
		srv := &cutServer{dir: r.dir, plan: map[int]func(http.ResponseWriter, *http.Request, []byte){1: stallAt}}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		store := newStore(t)
		c := testClient()
		c.StallTimeout = 300 * time.Millisecond
		if _, err := c.PullBlob(ctx, store, hs.URL, it, nil); err != nil {
			t.Fatal(err)
		}
		assertLog(t, srv.log.all(), []loggedReq{{blobPath, ""}, {blobPath, resumeAt}})
		assertStored(t, store, base)
	})

	t.Run("bad bytes in the partial", func(t *testing.T) {
		// The first server sends garbage before it dies; the resumed
		// download fails its digest, and the pull starts over once.
		garbage := func(w http.ResponseWriter, r *http.Request, data []byte) {
			bad := append([]byte(nil), data...)
			for i := 1 << 16; i < len(bad)/2; i++ { // after the header, so that the head check passes
				bad[i] ^= 0x5a
			}
			cutAt(half)(w, r, bad)
		}
		srv := &cutServer{dir: r.dir, plan: map[int]func(http.ResponseWriter, *http.Request, []byte){1: garbage}}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		store := newStore(t)
		if _, err := testClient().PullBlob(ctx, store, hs.URL, it, nil); err != nil {
			t.Fatal(err)
		}
		assertLog(t, srv.log.all(), []loggedReq{{blobPath, ""}, {blobPath, resumeAt}, {blobPath, ""}})
		assertStored(t, store, base)
	})

	t.Run("complete partial", func(t *testing.T) {
		// All bytes arrived but the connection broke before the end was
		// seen: the next pull commits without a request.
		unended := func(w http.ResponseWriter, r *http.Request, data []byte) {
			// Chunked, without the last chunk: every byte, but no end.
			w.WriteHeader(http.StatusOK)
			w.Write(data)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		srv := &cutServer{dir: r.dir, plan: map[int]func(http.ResponseWriter, *http.Request, []byte){1: unended}}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		store := newStore(t)
		c := testClient()
		c.MaxAttempts = 1
		if _, err := c.PullBlob(ctx, store, hs.URL, it, nil); err == nil {
			t.Fatal("the first pull succeeded")
		}
		if _, err := c.PullBlob(ctx, store, hs.URL, it, nil); err != nil {
			t.Fatal(err)
		}
		if n := len(srv.log.all()); n != 1 {
			t.Fatalf("%d requests, want 1: %v", n, srv.log.all())
		}
		assertStored(t, store, base)
	})

	bad := []struct {
		name string
		act  func(w http.ResponseWriter, r *http.Request, data []byte)
		want error
	}{
		{"wrong Content-Range", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(data)-1, len(data)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data)
		}, ErrProtocol},
		{"416 with another size", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)/4))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		}, cas.ErrSizeMismatch},
		{"200 with another length", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)+10))
			w.WriteHeader(http.StatusOK)
			w.Write(append(data, make([]byte, 10)...))
		}, cas.ErrSizeMismatch},
		{"404", func(w http.ResponseWriter, r *http.Request, data []byte) { http.NotFound(w, r) }, ErrNotFound},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			// Request 1 is cut, so that request 2 asks for a range.
			srv := &cutServer{dir: r.dir, plan: map[int]func(http.ResponseWriter, *http.Request, []byte){1: cutAt(half), 2: tc.act}}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			store := newStore(t)
			_, err := testClient().PullBlob(ctx, store, hs.URL, it, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if has, _ := store.Has(base.blob); has {
				t.Fatal("blob stored")
			}
			if n := len(srv.log.all()); n != 2 {
				t.Fatalf("%d requests, want 2 (no retry of a permanent failure)", n)
			}
		})
	}
}

func assertLog(t testing.TB, got, want []loggedReq) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("requests:\n got %v\nwant %v", got, want)
	}
}

func assertStored(t testing.TB, store *cas.Store, im *image) {
	t.Helper()
	p, err := store.Path(im.blob)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256sum(t, p); "sha256:"+sum != string(im.blob) {
		t.Fatalf("stored blob has sha256sum %s, want %s", sum, im.blob)
	}
	if left := tmpEntries(t, store); len(left) != 0 {
		t.Fatalf(".tmp/ not empty: %v", left)
	}
}

// TestPullCancel: a cancelled pull stops promptly and keeps its partial.
func TestPullCancel(t *testing.T) {
	r := newRepo(t)
	base := r.add(nil, 0x11, 0)
	r.writeIndex()
	items, err := PlanChain(parseIndex(t, r.dir), base.id)
	if err != nil {
		t.Fatal(err)
	}
	srv := &cutServer{dir: r.dir, plan: map[int]func(http.ResponseWriter, *http.Request, []byte){1: stallAt}}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = testClient().PullBlob(ctx, newStore(t), hs.URL, items[0], nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

func TestPlanChainErrors(t *testing.T) {
	x := index.New()
	if _, err := PlanChain(x, fakeID(1)); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("unknown image: %v", err)
	}
	items := []Item{{ImageID: fakeID(1)}, {ImageID: fakeID(2), Parent: fakeID(3)}}
	if _, err := testClient().PullChain(context.Background(), newStore(t), "http://127.0.0.1:1/", items, nil); err == nil {
		t.Fatal("a broken chain was accepted")
	}
	bad := Item{ImageID: fakeID(1), Path: "../../etc/passwd", Blob: fakeID(2), Size: 10}
	if _, err := testClient().PullBlob(context.Background(), newStore(t), "http://127.0.0.1:1/", bad, nil); !errors.Is(err, ErrBadURL) {
		t.Fatalf("path with ..: %v", err)
	}
	bad = Item{ImageID: fakeID(1), Path: "blobs/sha256/x", Blob: "sha256:../x", Size: 10}
	if _, err := testClient().PullBlob(context.Background(), newStore(t), "http://127.0.0.1:1/", bad, nil); !errors.Is(err, cas.ErrInvalidDigest) {
		t.Fatalf("bad digest: %v", err)
	}
}

// TestPullConcurrent: pullers of the same chain into one store (in one
// process here; cas makes processes behave the same) all succeed, and each
// blob is downloaded whole only as often as cas lets them race.
func TestPullConcurrent(t *testing.T) {
	r := newRepo(t)
	base := r.add(nil, 0x11, 0)
	mid := r.add(base, 0x22, 1<<20)
	top := r.add(mid, 0x33, 2<<20)
	r.writeIndex()
	x := parseIndex(t, r.dir)
	url := ourServer(t, r.dir)
	store := newStore(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = testClient().PullImage(context.Background(), store, url, x, top.id, nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, im := range []*image{base, mid, top} {
		assertStored(t, store, im)
	}
}
