package cas

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
)

func lockT(t *testing.T, s *Store) *Lock {
	t.Helper()
	lk, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lk.Unlock() })
	return lk
}

func keepAll(digest.Digest) bool { return true }

func TestGCTemp(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	tmp := filepath.Join(s.Dir(), ".tmp")
	write := func(name string, n int) {
		if err := os.WriteFile(filepath.Join(tmp, name), make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Debris of dead processes: nobody holds these.
	write("tmp-dead-123", 100)
	write("partial-"+hexA, 200)
	if err := os.Mkdir(filepath.Join(tmp, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("dir/inner", 300)
	if err := os.Symlink("/etc/passwd", filepath.Join(tmp, "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(tmp, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Held: a temp file of this process, a partial of this process, and a
	// temp file of a live helper process.
	tf, err := s.CreateTemp("mine-*")
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Discard()
	data := content(30, 4000)
	if _, err := tf.Write(data); err != nil {
		t.Fatal(err)
	}
	p, err := s.OpenPartial(ctx, digest.FromString("pulling"), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h := startHelper(t, "hold-temp", "CAS_REPO="+s.Dir())
	helperTemp := h.line[len("ready "):]

	lk := lockT(t, s)
	rep, err := s.GC(ctx, lk, keepAll)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Temp)
	if want := []string{"dir", "fifo", "link", "partial-" + hexA, "tmp-dead-123"}; !slices.Equal(rep.Temp, want) {
		t.Errorf("removed %v, want %v", rep.Temp, want)
	}
	slices.Sort(rep.Busy)
	wantBusy := []string{filepath.Base(tf.Name()), "partial-" + string(p.Digest())[7:], helperTemp}
	slices.Sort(wantBusy)
	if !slices.Equal(rep.Busy, wantBusy) {
		t.Errorf("busy %v, want %v", rep.Busy, wantBusy)
	}
	if rep.BytesFreed != 600 || len(rep.Blobs) != 0 {
		t.Errorf("freed %d bytes and blobs %v, want 600 and none", rep.BytesFreed, rep.Blobs)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Errorf("gc followed a symlink: %v", err)
	}
	if names := tmpEntries(t, s); len(names) != 3 {
		t.Errorf(".tmp/ after gc: %v", names)
	}

	// What a live process holds is still usable after gc.
	info, err := s.CommitFile(ctx, tf, digest.FromBytes(data), nil)
	if err != nil {
		t.Fatalf("commit after gc: %v", err)
	}
	assertBlob(t, s, info.Digest, data)

	// Once its holder is dead, its temp file is debris.
	h.kill()
	rep, err = s.GC(ctx, lk, keepAll)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Temp, []string{helperTemp}) || rep.BytesFreed != 1000 {
		t.Errorf("after the helper died: removed %v (%d bytes), want [%s] (1000)", rep.Temp, rep.BytesFreed, helperTemp)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err = s.GC(ctx, lk, keepAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Temp) != 1 || len(rep.Busy) != 0 {
		t.Errorf("after Close of the partial: %+v", rep)
	}
	assertTmpEmpty(t, s)
	assertBlob(t, s, info.Digest, data)
}

func TestGCBlobs(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var infos []BlobInfo
	for i := range 4 {
		infos = append(infos, mustIngest(t, s, content(uint64(40+i), 1000*(i+1))))
	}
	keep := map[digest.Digest]bool{infos[1].Digest: true, infos[3].Digest: true}
	junk := filepath.Join(s.Dir(), "blobs", "sha256", "README")
	if err := os.WriteFile(junk, []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}

	lk := lockT(t, s)
	rep, err := s.GC(ctx, lk, func(d digest.Digest) bool { return keep[d] })
	if err != nil {
		t.Fatal(err)
	}
	var removed []digest.Digest
	for _, b := range rep.Blobs {
		removed = append(removed, b.Digest)
	}
	want := []digest.Digest{infos[0].Digest, infos[2].Digest}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if rep.BytesFreed != infos[0].Size+infos[2].Size {
		t.Errorf("freed %d bytes, want %d", rep.BytesFreed, infos[0].Size+infos[2].Size)
	}
	if len(rep.Junk) != 1 || rep.Junk[0].Path != "blobs/sha256/README" {
		t.Errorf("junk %v", rep.Junk)
	}
	if _, err := os.Stat(junk); err != nil {
		t.Errorf("gc removed junk: %v", err)
	}
	for _, info := range infos {
		has, err := s.Has(info.Digest)
		if err != nil || has != keep[info.Digest] {
			t.Errorf("Has(%s) = %v, %v; want %v", info.Digest, has, err, keep[info.Digest])
		}
	}

	// An empty repository (no layout yet) is nothing to collect.
	es, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	erep, err := es.GC(ctx, lockT(t, es), keepAll)
	if err != nil || len(erep.Blobs)+len(erep.Temp) != 0 {
		t.Errorf("gc of an empty repository: %+v, %v", erep, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.GC(cctx, lk, func(digest.Digest) bool { return false }); !errors.Is(err, context.Canceled) {
		t.Errorf("GC with a cancelled ctx = %v", err)
	}
	if has, _ := s.Has(infos[1].Digest); !has {
		t.Errorf("a cancelled gc removed a blob")
	}
}

func TestGCRequiresLock(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	info := mustIngest(t, s, []byte("precious"))
	none := func(digest.Digest) bool { return false }

	released, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := released.Unlock(); err != nil {
		t.Fatal(err)
	}
	other := newStore(t)
	for name, lk := range map[string]*Lock{"nil": nil, "released": released, "other repository": lockT(t, other)} {
		if _, err := s.GC(ctx, lk, none); !errors.Is(err, ErrNotLocked) {
			t.Errorf("%s lock: GC = %v, want ErrNotLocked", name, err)
		}
	}
	if _, err := s.GC(ctx, lockT(t, s), nil); err == nil {
		t.Errorf("GC with a nil keep function succeeded")
	}
	if has, _ := s.Has(info.Digest); !has {
		t.Errorf("a refused gc removed a blob")
	}
}

// gc running in a loop while goroutines create, fill and commit temp files
// and partials: the flock-then-check-the-name handshake must keep every live
// file from being collected (a collected one would fail its commit).
func TestGCRacesWriters(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newStore(t)
	lk := lockT(t, s)
	gcDone := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if _, err := s.GC(ctx, lk, keepAll); err != nil && ctx.Err() == nil {
				gcDone <- err
				return
			}
		}
		gcDone <- nil
	}()

	const workers, rounds = 4, 60
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			errs <- func() error {
				for i := range rounds {
					data := content(uint64(1000*w+i), 2000+i)
					switch i % 3 {
					case 0:
						tf, err := s.CreateTemp("race-*")
						if err != nil {
							return err
						}
						if _, err := tf.Write(data); err != nil {
							_ = tf.Discard()
							return err
						}
						if _, err := s.CommitFile(ctx, tf, digest.FromBytes(data), nil); err != nil {
							return err
						}
					case 1:
						p, err := s.OpenPartial(ctx, digest.FromBytes(data), int64(len(data)))
						if err != nil {
							return err
						}
						if _, err := p.Commit(ctx, bytes.NewReader(data), nil); err != nil {
							return err
						}
					case 2:
						if _, err := s.Ingest(ctx, bytes.NewReader(data), "", -1, nil); err != nil {
							return err
						}
						if err := s.WriteFileAtomic("index.yaml", data, 0o644); err != nil {
							return err
						}
					}
				}
				return nil
			}()
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	cancel()
	if err := <-gcDone; err != nil {
		t.Errorf("gc: %v", err)
	}
	blobs, _, err := s.List(context.Background())
	if err != nil || len(blobs) != workers*rounds {
		t.Errorf("%d blobs (%v), want %d", len(blobs), err, workers*rounds)
	}
	assertTmpEmpty(t, s)
}
