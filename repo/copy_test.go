package repo

// The conformance suite of Copy: every test runs against every kind of
// Source (a repository directory, canga serve, python's http.server), in
// the spirit of containerd's content-store test suite. qemu-img and
// sha256sum are the oracles.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/remote"
	"github.com/opencontainers/go-digest"
)

// chainRepo is a source repository with a chain base <- mid <- top and an
// unrelated image.
func chainRepo(t *testing.T) (*srcRepo, *index.Index, [3]*image, *image) {
	t.Helper()
	r := newSrcRepo(t)
	base := r.add(nil, 0x11, 0)
	mid := r.add(base, 0x22, 1<<20)
	top := r.add(mid, 0x33, 2<<20)
	other := r.add(nil, 0x44, 0)
	ix, err := index.Parse(r.writeIndex())
	if err != nil {
		t.Fatal(err)
	}
	return r, ix, [3]*image{base, mid, top}, other
}

// destinations are where a copy goes: a local repository (import), or
// the cache of a remote (pull; the source must be that remote).
var destinations = []string{"local", "cache"}

func newDest(t *testing.T, kind string, src *srcRepo) *Repo {
	if kind == "cache" {
		return cacheRepo(t, "http://unused.invalid/", src.dir)
	}
	return localRepo(t)
}

func TestCopyChain(t *testing.T) {
	src, six, chain, other := chainRepo(t)
	top := chain[2]
	for _, sk := range sourceKinds {
		for _, dk := range destinations {
			t.Run(sk.name+"/"+dk, func(t *testing.T) {
				ctx := context.Background()
				s := sk.open(t, src.dir)
				dst := newDest(t, dk, src)
				var mu sync.Mutex
				last := map[digest.Digest]int64{}
				res, err := dst.Copy(ctx, s, six, top.id, CopyOptions{Tag: tagFor(dk), Progress: func(id digest.Digest, done, size int64) {
					mu.Lock()
					defer mu.Unlock()
					if size >= 0 && done > size {
						t.Errorf("progress %d of %d", done, size)
					}
					last[id] = done
				}})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Copied) != 3 {
					t.Fatalf("copied %v, want the 3 images of the chain", res.Copied)
				}
				for _, im := range chain {
					if last[im.id] != im.size {
						t.Errorf("progress of %s ended at %d, want %d", index.ShortID(im.id), last[im.id], im.size)
					}
					p, err := dst.store.Path(im.blob)
					if err != nil {
						t.Fatal(err)
					}
					// An independent oracle: coreutils.
					if sum := testkit.Sha256sum(t, p); sum != im.blob {
						t.Fatalf("blob %s has sha256sum %s", p, sum)
					}
				}
				if has, _ := dst.store.Has(other.blob); has {
					t.Fatal("an image outside the chain was copied")
				}
				if left := tmpEntries(t, dst); len(left) != 0 {
					t.Fatalf(".tmp/ not empty: %v", left)
				}
				// The stored chain is what qemu sees, and has the image ID.
				topPath, _ := dst.store.Path(top.blob)
				info := testkit.Run(t, "qemu-img", "info", "--backing-chain", topPath)
				if strings.Count(info, "image: ") != 3 {
					t.Fatalf("qemu-img info --backing-chain:\n%s", info)
				}
				if id := testkit.RawDigest(t, topPath); id != top.id {
					t.Fatalf("image ID of the copied chain %s, want %s", id, top.id)
				}
				if dk == "local" {
					ix, err := dst.Index()
					if err != nil {
						t.Fatal(err)
					}
					if len(ix.Images) != 3 || ix.Tags["t:1"] != top.id {
						t.Fatalf("index after the copy: %d images, tags %v", len(ix.Images), ix.Tags)
					}
					if e := ix.Images[top.id]; e.Blob != top.blob || e.Parent != chain[1].id || e.Description != "test image ✓" {
						t.Fatalf("entry %+v", e)
					}
				}
				rep, err := dst.Fsck(ctx, nil)
				if err != nil || len(rep.Faults) != 0 {
					t.Fatalf("fsck: %v %+v", err, rep)
				}
				// A second copy transfers nothing.
				res, err = dst.Copy(ctx, s, six, top.id, CopyOptions{})
				if err != nil || len(res.Copied) != 0 {
					t.Fatalf("second copy: %v, copied %v", err, res)
				}
			})
		}
	}
}

func tagFor(dest string) string {
	if dest == "local" {
		return "t:1"
	}
	return ""
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
	testkit.Run(t, "qemu-img", append(args, p, "4M")...)
	return p
}

// fakeID is an image ID for images whose content nobody checks (a copy
// verifies blob digests, not image IDs).
func fakeID(n int) digest.Digest {
	return digest.Digest(fmt.Sprintf("sha256:%064x", n))
}

// TestCopyRefused: blobs that must not enter a repository, whatever the
// source. Each fails with the expected error and leaves the destination
// as it was: no blob, no partial, no index change.
func TestCopyRefused(t *testing.T) {
	cases := []struct {
		name string
		// make adds the bad image to r as a child of base (or as a base)
		// and returns it.
		make func(t *testing.T, r *srcRepo, base *image) *image
		want []error // any of them
	}{
		{"bytes changed at the source", func(t *testing.T, r *srcRepo, base *image) *image {
			im := r.add(base, 0x55, 0)
			testkit.FlipByte(t, r.blobPath(im), im.size/2)
			return im
		}, []error{cas.ErrDigestMismatch}},
		{"truncated at the source", func(t *testing.T, r *srcRepo, base *image) *image {
			im := r.add(base, 0x55, 0)
			if err := os.Truncate(r.blobPath(im), im.size/2); err != nil {
				t.Fatal(err)
			}
			return im
		}, []error{cas.ErrSizeMismatch, errProtocol}},
		{"backing /etc/shadow", func(t *testing.T, r *srcRepo, base *image) *image {
			return r.addFile(hostile(t, "/etc/shadow", "qcow2"), base, fakeID(1))
		}, []error{ErrRefused}},
		{"backing ../x", func(t *testing.T, r *srcRepo, base *image) *image {
			return r.addFile(hostile(t, "../x", "qcow2"), base, fakeID(2))
		}, []error{ErrRefused}},
		{"backing json:", func(t *testing.T, r *srcRepo, base *image) *image {
			return r.addFile(hostile(t, `json:{"file.filename":"/etc/passwd"}`, "qcow2"), base, fakeID(3))
		}, []error{ErrRefused}},
		{"backing the parent by absolute path", func(t *testing.T, r *srcRepo, base *image) *image {
			return r.addFile(hostile(t, r.blobPath(base), "qcow2"), base, fakeID(4))
		}, []error{ErrRefused}},
		{"backing the parent as raw", func(t *testing.T, r *srcRepo, base *image) *image {
			return r.addFile(hostile(t, base.hex(), "raw"), base, fakeID(5))
		}, []error{ErrRefused}},
		{"backing another blob", func(t *testing.T, r *srcRepo, base *image) *image {
			return r.addFile(hostile(t, strings.Repeat("ab", 32), "qcow2"), base, fakeID(6))
		}, []error{ErrRefused}},
		{"base with a backing file", func(t *testing.T, r *srcRepo, base *image) *image {
			return r.addFile(hostile(t, base.hex(), "qcow2"), nil, fakeID(7))
		}, []error{ErrRefused}},
		{"not qcow2", func(t *testing.T, r *srcRepo, base *image) *image {
			p := filepath.Join(t.TempDir(), "raw")
			writeFile(t, p, bytes.Repeat([]byte("raw disk "), 100000))
			return r.addFile(p, base, fakeID(8))
		}, []error{ErrRefused}},
		{"external data file", func(t *testing.T, r *srcRepo, base *image) *image {
			dir := t.TempDir()
			p := filepath.Join(dir, "d.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.raw"), p, "4M")
			return r.addFile(p, nil, fakeID(9))
		}, []error{ErrRefused}},
		{"virtual size not the index's", func(t *testing.T, r *srcRepo, base *image) *image {
			p := filepath.Join(t.TempDir(), "big.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", r.blobPath(base), "-F", "qcow2", p, "8M")
			testkit.Run(t, "qemu-img", "rebase", "-u", "-b", base.hex(), "-F", "qcow2", p)
			return r.addFile(p, base, fakeID(10))
		}, []error{ErrRefused}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newSrcRepo(t)
			base := src.add(nil, 0x11, 0)
			bad := tc.make(t, src, base)
			six, err := index.Parse(src.writeIndex())
			if err != nil {
				t.Fatal(err)
			}
			for _, sk := range sourceKinds {
				for _, dk := range destinations {
					t.Run(sk.name+"/"+dk, func(t *testing.T) {
						dst := newDest(t, dk, src)
						before := snapshotDir(t, dst.Dir())
						_, err := dst.Copy(context.Background(), sk.open(t, src.dir), six, bad.id, CopyOptions{Tag: tagFor(dk)})
						if !isAny(err, tc.want) {
							t.Fatalf("got %v, want one of %v", err, tc.want)
						}
						t.Logf("error: %v", err)
						if has, _ := dst.store.Has(bad.blob); has {
							t.Fatal("the bad blob was stored")
						}
						after := snapshotDir(t, dst.Dir())
						for name := range after {
							// A pull may keep the base it copied before the
							// bad child failed (it is verified, and the
							// cached index names it); a local repository
							// stays as it was. A kept partial of a blob cut
							// short may stay for a later attempt.
							if _, ok := before[name]; ok || (dk == "cache" && strings.HasSuffix(name, base.hex())) || name == filepath.Join(".tmp", "partial-"+base.hex()) {
								continue
							}
							if strings.Contains(name, "partial-"+bad.hex()) && !errors.Is(err, cas.ErrDigestMismatch) && !errors.Is(err, ErrRefused) {
								continue
							}
							t.Errorf("left behind: %s", name)
						}
						if dk == "local" && !bytes.Equal(after[IndexFile], before[IndexFile]) {
							t.Error("the index changed")
						}
					})
				}
			}
		})
	}
}

var errProtocol = errors.New("stands for remote.ErrProtocol")

// isAny reports whether err matches one of want; errProtocol stands for
// the transport's protocol error (a server with the wrong length).
func isAny(err error, want []error) bool {
	for _, w := range want {
		if w == errProtocol && err != nil && strings.Contains(err.Error(), "bad server response") {
			return true
		}
		if errors.Is(err, w) {
			return true
		}
	}
	return false
}

// snapshotDir maps every file under dir (relative names) to its bytes.
func snapshotDir(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ".lock" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// faults serves dir as canga serve does, but for the faults planned.
func faults(dir string, plan map[int]testkit.Fault) *testkit.FaultServer {
	return &testkit.FaultServer{Dir: dir, Next: remote.Handler(dir), Plan: plan}
}

// TestCopyResume: a download cut short is kept and goes on where it
// stopped, in the next copy; bytes of an earlier attempt that turn out
// bad are fetched again, once; a complete partial needs no request.
func TestCopyResume(t *testing.T) {
	src := newSrcRepo(t)
	base, six := grownBase(t, src, "3M")
	blobPath := "/blobs/sha256/" + base.hex()
	ctx := context.Background()
	copyWith := func(t *testing.T, srv *testkit.FaultServer, dst *Repo, attempts int) error {
		c := testClient()
		c.MaxAttempts = attempts
		_, err := dst.Copy(ctx, httpSource{c: c, url: srv.Start(t), signers: noSigners}, six, base.id, CopyOptions{})
		return err
	}
	type plan = map[int]testkit.Fault

	for _, dk := range destinations {
		t.Run(dk+"/resumed by the next copy", func(t *testing.T) {
			// The connection drops half way, then the server is down
			// (as far as this copy cares): the copy fails.
			dst := newDest(t, dk, src)
			down := func(w http.ResponseWriter, _ *http.Request, _ []byte) { w.WriteHeader(http.StatusBadGateway) }
			srv := faults(src.dir, plan{1: testkit.CutAt(testkit.Half), 2: down})
			if err := copyWith(t, srv, dst, 1); err == nil {
				t.Fatal("the cut copy succeeded")
			}
			if left := tmpEntries(t, dst); len(left) != 1 || left[0] != "partial-"+base.hex() {
				t.Fatalf("partial not kept: %v", left)
			}
			if err := copyWith(t, srv, dst, 1); err != nil {
				t.Fatal(err)
			}
			resume := fmt.Sprintf("%s bytes=%d-", blobPath, base.size/2)
			want := []string{blobPath + " ", resume, resume}
			if fmt.Sprint(srv.Requests()) != fmt.Sprint(want) {
				t.Fatalf("requests %v, want %v", srv.Requests(), want)
			}
			assertStored(t, dst, base)
		})
	}

	t.Run("bad bytes in the partial", func(t *testing.T) {
		// The first server sends garbage before it dies; the resumed
		// download fails its digest, and the copy starts over once.
		garbage := func(w http.ResponseWriter, r *http.Request, data []byte) {
			bad := append([]byte(nil), data...)
			for i := 1 << 16; i < len(bad)/2; i++ { // after the header, so that its check passes
				bad[i] ^= 0x5a
			}
			testkit.CutAt(testkit.Half)(w, r, bad)
		}
		dst := localRepo(t)
		srv := faults(src.dir, plan{1: garbage})
		if err := copyWith(t, srv, dst, 3); err != nil {
			t.Fatal(err)
		}
		want := []string{blobPath + " ", fmt.Sprintf("%s bytes=%d-", blobPath, base.size/2), blobPath + " "}
		if fmt.Sprint(srv.Requests()) != fmt.Sprint(want) {
			t.Fatalf("requests %v, want %v", srv.Requests(), want)
		}
		assertStored(t, dst, base)
	})

	t.Run("complete partial", func(t *testing.T) {
		// All bytes arrived but the connection broke before the end was
		// seen: the bytes are all there, so no other request is made.
		unended := func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.WriteHeader(http.StatusOK) // chunked, without the last chunk
			w.Write(data)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		dst := localRepo(t)
		srv := faults(src.dir, plan{1: unended})
		if err := copyWith(t, srv, dst, 1); err != nil {
			t.Fatal(err)
		}
		if n := len(srv.Requests()); n != 1 {
			t.Fatalf("%d requests, want 1: %v", n, srv.Requests())
		}
		assertStored(t, dst, base)
	})

	t.Run("hostile header refused before the rest is fetched", func(t *testing.T) {
		// A huge blob whose first cluster names /etc/shadow: the copy
		// stops after the header, not after the whole blob.
		hs := newSrcRepo(t)
		hb := hs.add(nil, 0x11, 0)
		h := hostile(t, "", "")
		testkit.QemuIO(t, "qcow2", h, "write -P 0x77 0 3M")
		testkit.Run(t, "qemu-img", "rebase", "-u", "-b", "/etc/shadow", "-F", "qcow2", h)
		bad := hs.addFile(h, hb, fakeID(1))
		hix, err := index.Parse(hs.writeIndex())
		if err != nil {
			t.Fatal(err)
		}
		dst := localRepo(t)
		var mu sync.Mutex
		var got int64
		_, err = dst.Copy(ctx, httpSource{c: testClient(), url: ourServer(t, hs.dir), signers: noSigners}, hix, bad.id, CopyOptions{
			Progress: func(id digest.Digest, done, size int64) {
				mu.Lock()
				defer mu.Unlock()
				if id == bad.id {
					got = max(got, done)
				}
			},
		})
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("got %v", err)
		}
		if got > headLen(bad.size) || bad.size <= headLen(bad.size) {
			t.Fatalf("%d bytes of the %d-byte blob were stored before it was refused; the header is the first %d", got, bad.size, headLen(bad.size))
		}
		// The base's download, cut short by the failure, may be kept;
		// nothing of the refused blob is.
		if left := tmpEntries(t, dst); slices.Contains(left, "partial-"+bad.hex()) {
			t.Fatalf("the refused blob's partial was kept: %v", left)
		}
	})
}

func assertStored(t testing.TB, r *Repo, im *image) {
	t.Helper()
	p, err := r.store.Path(im.blob)
	if err != nil {
		t.Fatal(err)
	}
	if sum := testkit.Sha256sum(t, p); sum != im.blob {
		t.Fatalf("stored blob has sha256sum %s, want %s", sum, im.blob)
	}
	if left := tmpEntries(t, r); len(left) != 0 {
		t.Fatalf(".tmp/ not empty: %v", left)
	}
}

// TestCopyCancel: a cancelled copy stops promptly and keeps its partial.
func TestCopyCancel(t *testing.T) {
	src, six, chain, _ := chainRepo(t)
	url := faults(src.dir, map[int]testkit.Fault{1: testkit.StallAt, 2: testkit.StallAt, 3: testkit.StallAt}).Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	dst := localRepo(t)
	start := time.Now()
	_, err := dst.Copy(ctx, httpSource{c: testClient(), url: url, signers: noSigners}, six, chain[2].id, CopyOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	if ix, err := dst.Index(); err != nil || len(ix.Images) != 0 {
		t.Fatalf("index after a cancelled copy: %v %v", ix, err)
	}
}

// TestCopyConcurrent: copies of the same chain into one cache, at once,
// all succeed (cas makes processes behave as goroutines do here).
func TestCopyConcurrent(t *testing.T) {
	src, six, chain, _ := chainRepo(t)
	url := ourServer(t, src.dir)
	dst := cacheRepo(t, url, src.dir)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = dst.Copy(context.Background(), httpSource{c: testClient(), url: url, signers: noSigners}, six, chain[2].id, CopyOptions{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, im := range chain {
		assertStored(t, dst, im)
	}
}

// TestCopyOntoOtherParentBytes: the destination holds the parent image as
// other bytes than the source's (another compression): the child's blob
// is rewritten to name the destination's parent blob, with the same image
// ID, and fsck agrees.
func TestCopyOntoOtherParentBytes(t *testing.T) {
	src, six, chain, _ := chainRepo(t)
	for _, sk := range sourceKinds {
		t.Run(sk.name, func(t *testing.T) {
			ctx := context.Background()
			dst := localRepo(t)
			res, err := dst.Add(ctx, src.blobPath(chain[0]), AddOptions{Compression: "zstd"})
			if err != nil || res.ID != chain[0].id {
				t.Fatalf("add of the base: %v (%v)", err, res)
			}
			if res.Entry.Blob == chain[0].blob {
				t.Fatal("the base was stored as the same bytes: the test needs other bytes")
			}
			if _, err := dst.Copy(ctx, sk.open(t, src.dir), six, chain[2].id, CopyOptions{}); err != nil {
				t.Fatal(err)
			}
			ix, err := dst.Index()
			if err != nil {
				t.Fatal(err)
			}
			mid := ix.Images[chain[1].id]
			if mid.Blob == chain[1].blob {
				t.Fatal("the child kept the source's bytes, which name the source's parent blob")
			}
			mp, _ := dst.store.Path(mid.Blob)
			if got := testkit.QemuInfo(t, mp).BackingFilename; got != res.Entry.Blob.Encoded() {
				t.Fatalf("the child names backing file %s, want the destination's parent blob %s", got, res.Entry.Blob.Encoded())
			}
			tp, _ := dst.store.Path(ix.Images[chain[2].id].Blob)
			if id := testkit.RawDigest(t, tp); id != chain[2].id {
				t.Fatalf("image ID %s, want %s", id, chain[2].id)
			}
			rep, err := dst.Fsck(ctx, nil)
			if err != nil || len(rep.Faults) != 0 {
				t.Fatalf("fsck: %v %+v", err, rep)
			}
		})
	}
}

// panickySource is a source with a bug: its streams panic.
type panickySource struct{ Source }

func (panickySource) Open(context.Context, digest.Digest, *index.Entry, int64) (io.ReadCloser, error) {
	var s []int
	return nil, fmt.Errorf("unreachable: %d", s[len(s)])
}

// TestCopyWorkerPanic: a panic in a copy's worker goroutine is an error
// naming the image, not a crash, and leaves the repository as it was.
func TestCopyWorkerPanic(t *testing.T) {
	src, six, chain, _ := chainRepo(t)
	for _, sk := range sourceKinds[1:] { // the streaming sources
		t.Run(sk.name, func(t *testing.T) {
			dst := localRepo(t)
			_, err := dst.Copy(context.Background(), panickySource{sk.open(t, src.dir)}, six, chain[2].id, CopyOptions{})
			if !errors.Is(err, ErrInternal) || !strings.Contains(err.Error(), "panic while copying") || !strings.Contains(err.Error(), "index out of range") {
				t.Fatalf("got %v", err)
			}
			if blobs, _, _ := dst.store.List(context.Background()); len(blobs) != 0 {
				t.Fatalf("blobs left: %v", blobs)
			}
		})
	}
}
