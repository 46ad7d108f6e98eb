package cas

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/opencontainers/go-digest"
)

// On a full disk every writer fails with ENOSPC and leaves neither a blob
// nor a temp file behind.
func TestFullDisk(t *testing.T) {
	ctx := context.Background()
	data := content(60, 2<<20)
	d := digest.FromBytes(data)

	newFull := func(t *testing.T) *Store {
		s, err := Init(filepath.Join(testkit.Tmpfs(t, "1m"), "repo"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	check := func(t *testing.T, s *Store, err error) {
		t.Helper()
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("err = %v, want ENOSPC", err)
		}
		assertNoBlobs(t, s)
		assertTmpEmpty(t, s)
	}

	t.Run("ingest", func(t *testing.T) {
		s := newFull(t)
		_, err := s.Ingest(ctx, bytes.NewReader(data), d, int64(len(data)), nil)
		check(t, s, err)
		// The space is back: a small blob fits.
		assertBlob(t, s, mustIngest(t, s, []byte("small")).Digest, []byte("small"))
	})
	t.Run("ingest of unknown size", func(t *testing.T) {
		s := newFull(t)
		_, err := s.Ingest(ctx, bytes.NewReader(data), "", -1, nil)
		check(t, s, err)
	})
	t.Run("temp file", func(t *testing.T) {
		s := newFull(t)
		tf, err := s.CreateTemp("qcow2-*")
		if err != nil {
			t.Fatal(err)
		}
		_, err = tf.Write(data)
		if derr := tf.Discard(); derr != nil {
			t.Error(derr)
		}
		check(t, s, err)
	})
	t.Run("partial", func(t *testing.T) {
		s := newFull(t)
		p, err := s.OpenPartial(ctx, d, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Commit(ctx, bytes.NewReader(data), nil)
		check(t, s, err)
	})
	t.Run("index write", func(t *testing.T) {
		s := newFull(t)
		if err := s.WriteFileAtomic("index.yaml", []byte("version: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := s.WriteFileAtomic("index.yaml", data, 0o644)
		check(t, s, err)
		if b, err := os.ReadFile(filepath.Join(s.Dir(), "index.yaml")); err != nil || string(b) != "version: 1\n" {
			t.Errorf("index.yaml after a failed write: %q, %v", b, err)
		}
	})
}

// A read-only repository can be read, and every write says clearly why it
// fails (as root, permission bits block nothing, so the file system is
// mounted read-only).
func TestReadOnlyRepository(t *testing.T) {
	ctx := context.Background()
	for _, withLockFile := range []bool{false, true} {
		mnt := testkit.Tmpfs(t, "16m")
		s, err := Init(filepath.Join(mnt, "repo"))
		if err != nil {
			t.Fatal(err)
		}
		data := content(61, 3000)
		info := mustIngest(t, s, data)
		if err := s.WriteFileAtomic("index.yaml", []byte("version: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if withLockFile {
			lk := lockT(t, s)
			if err := lk.Unlock(); err != nil {
				t.Fatal(err)
			}
		}
		testkit.RemountReadOnly(t, mnt)

		ro, err := Open(s.Dir())
		if err != nil {
			t.Fatal(err)
		}
		assertBlob(t, ro, info.Digest, data)
		if blobs, _, err := ro.List(ctx); err != nil || len(blobs) != 1 {
			t.Errorf("List = %v, %v", blobs, err)
		}

		lctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = ro.Lock(lctx)
		cancel()
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("Lock (lock file exists: %v) = %v, want ErrReadOnly", withLockFile, err)
		}
		if err != nil && !bytes.Contains([]byte(err.Error()), []byte("not writable")) {
			t.Errorf("message %q", err)
		}

		writes := map[string]func() error{
			"Ingest": func() error {
				_, err := ro.Ingest(ctx, bytes.NewReader([]byte("new")), "", -1, nil)
				return err
			},
			"CreateTemp": func() error { _, err := ro.CreateTemp("x"); return err },
			"OpenPartial": func() error {
				_, err := ro.OpenPartial(ctx, digest.FromString("new"), 3)
				return err
			},
			"WriteFileAtomic": func() error { return ro.WriteFileAtomic("index.yaml", []byte("x"), 0o644) },
			"Remove":          func() error { return ro.Remove(info.Digest) },
		}
		for name, w := range writes {
			if err := w(); !errors.Is(err, ErrReadOnly) {
				t.Errorf("%s on a read-only repository = %v, want ErrReadOnly", name, err)
			}
		}
		// Init on a read-only file system fails cleanly, even on an existing repository.
		if _, err := Init(filepath.Join(mnt, "new")); !errors.Is(err, ErrReadOnly) {
			t.Errorf("Init = %v, want ErrReadOnly", err)
		}
		assertBlob(t, ro, info.Digest, data)
	}
}
