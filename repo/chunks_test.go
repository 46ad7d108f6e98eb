package repo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/internal/testkit"
	"github.com/opencontainers/go-digest"
)

// checkChunkList fails unless entry e of r has a stored chunk list, of
// chunk size want (0: any), that is the list of its blob's bytes as
// computed here from the file.
func checkChunkList(t *testing.T, r *Repo, e *index.Entry, want int64) {
	t.Helper()
	if e.Chunks == "" || (want != 0 && e.ChunkSize != want) {
		t.Fatalf("entry has chunks %q, chunk-size %d; want a list of chunk size %d", e.Chunks, e.ChunkSize, want)
	}
	p, err := r.BlobPath(e)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	list, err := cas.ChunkList(f, e.ChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := r.store.Path(e.Chunks)
	if err != nil {
		t.Fatal(err)
	}
	stored := readFile(t, lp)
	if !bytes.Equal(stored, list) {
		t.Fatalf("stored chunk list %s is not the list of blob %s", e.Chunks, e.Blob)
	}
	if sum := testkit.Sha256sum(t, lp); sum != e.Chunks {
		t.Fatalf("chunk list file hashes to %s, named %s", sum, e.Chunks)
	}
}

func TestAddChunkList(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io", "sha256sum")
	ctx := context.Background()
	r := localRepo(t)
	file := filepath.Join(t.TempDir(), "disk.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", file, "8M")
	testkit.QemuIO(t, "qcow2", file, "write -P 0x5a 0 3M")
	res, err := r.Add(ctx, file, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkChunkList(t, r, res.Entry, DefaultChunkSize)
	ix, err := r.Index()
	if err != nil {
		t.Fatal(err)
	}
	if e := ix.Images[res.ID]; e.Chunks != res.Entry.Chunks || e.ChunkSize != DefaultChunkSize {
		t.Fatalf("index entry %+v", e)
	}
	// gc keeps the chunk list; fsck checks it.
	if _, err := r.GC(ctx); err != nil {
		t.Fatal(err)
	}
	checkChunkList(t, r, res.Entry, DefaultChunkSize)
	fsckFaults(t, r, 0, "")
	lp, _ := r.store.Path(res.Entry.Chunks)

	// A chunk list that does not hash to its name.
	os.Chmod(lp, 0o644)
	b := readFile(t, lp)
	b[3] ^= 1
	testkit.WriteFile(t, lp, b, 0o444)
	os.Chmod(lp, 0o444)
	fsckFaults(t, r, 1, "hash")
	// A well-formed list of other bytes.
	b[3] ^= 1
	b[len(b)-1] ^= 1 // a list of the right length, but not of this blob
	other := digest.FromBytes(b)
	otherPath, _ := r.store.Path(other)
	os.MkdirAll(filepath.Dir(otherPath), 0o755)
	testkit.WriteFile(t, otherPath, b, 0o444)
	if err := r.Update(ctx, func(ix *index.Index) error {
		e := *ix.Images[res.ID]
		e.Chunks = other
		return ix.Put(res.ID, &e)
	}); err != nil {
		t.Fatal(err)
	}
	os.Remove(lp)
	fsckFaults(t, r, 1, "not the list of the blob")
	// A missing list.
	os.Remove(otherPath)
	fsckFaults(t, r, 1, "chunk list")
	// Delete removes blob and list.
	if _, err := r.Delete(ctx, res.ID, false); err != nil {
		t.Fatal(err)
	}
	blobs, _, err := r.store.Digests(ctx)
	if err != nil || len(blobs) != 0 {
		t.Fatalf("after delete: %v %v", blobs, err)
	}
}

// fsckFaults runs fsck and wants n faults, the first containing what.
func fsckFaults(t *testing.T, r *Repo, n int, what string) {
	t.Helper()
	rep, err := r.Fsck(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Faults) != n || n > 0 && !strings.Contains(rep.Faults[0].Problem, what) {
		t.Fatalf("fsck: want %d faults (%q), got %+v", n, what, rep.Faults)
	}
	if len(rep.Unused) != 0 {
		t.Fatalf("fsck: unused blobs %v", rep.Unused)
	}
}

// TestCopyChunkLists: every copy keeps a chunk list per blob: the
// source's, checked, when its index gives one; one computed here when it
// does not; and a source whose index gives a wrong one is refused.
func TestCopyChunkLists(t *testing.T) {
	for _, given := range []string{"given", "none", "wrong"} {
		src, _, chain, _ := chainRepo(t)
		switch given {
		case "given":
			src.chunkSize = 64 << 10
		case "wrong":
			src.chunkSize, src.badChunks = 64<<10, true
		}
		six, err := index.Parse(src.writeIndex())
		if err != nil {
			t.Fatal(err)
		}
		top := chain[2]
		for _, sk := range sourceKinds {
			for _, dk := range destinations {
				t.Run(given+"/"+sk.name+"/"+dk, func(t *testing.T) {
					ctx := context.Background()
					dst := newDest(t, dk, src)
					_, err := dst.Copy(ctx, sk.open(t, src.dir), six, top.id, CopyOptions{})
					if given == "wrong" {
						if !errors.Is(err, ErrRefused) {
							t.Fatalf("copy with wrong chunk lists: %v", err)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					ix := six
					if dk == "local" {
						if ix, err = dst.Index(); err != nil {
							t.Fatal(err)
						}
					}
					for _, im := range chain {
						e := ix.Images[im.id]
						if given == "given" {
							if e.Chunks != six.Images[im.id].Chunks {
								t.Fatalf("%s: chunks %s, the source's %s", index.ShortID(im.id), e.Chunks, six.Images[im.id].Chunks)
							}
							checkChunkList(t, dst, e, 64<<10)
						} else if dk == "local" {
							checkChunkList(t, dst, e, DefaultChunkSize)
						}
					}
					if _, err := dst.GC(ctx); err != nil {
						t.Fatal(err)
					}
					fsckFaults(t, dst, 0, "")
				})
			}
		}
	}
}
