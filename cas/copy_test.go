package cas

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// writeSource writes data to a file outside the store, read-only as a blob
// of another repository would be.
func writeSource(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "other-blob")
	if err := os.WriteFile(p, data, 0o444); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCopyFile(t *testing.T) {
	ctx := context.Background()
	data := content(11, 3<<20+17)
	d := digest.FromBytes(data)

	t.Run("copy", func(t *testing.T) {
		s := newStore(t)
		src := writeSource(t, data)
		var last int64
		info, err := s.CopyFile(ctx, src, d, int64(len(data)), func(n int64) { last = n })
		if err != nil {
			t.Fatal(err)
		}
		if info.Digest != d || info.Size != int64(len(data)) || last != info.Size {
			t.Fatalf("info %+v, progress %d", info, last)
		}
		assertBlob(t, s, d, data)
		assertTmpEmpty(t, s)
		// A copy, never a link: the other repository's owner cannot
		// change our blob afterwards.
		bp, _ := s.Path(d)
		a, _ := os.Stat(src)
		b, _ := os.Stat(bp)
		if os.SameFile(a, b) {
			t.Fatal("the blob is the source file (a hard link)")
		}
		if st := b.Sys().(*syscall.Stat_t); st.Nlink != 1 {
			t.Fatalf("blob has %d links", st.Nlink)
		}
	})

	t.Run("tampered source stores nothing", func(t *testing.T) {
		s := newStore(t)
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 1
		_, err := s.CopyFile(ctx, writeSource(t, bad), d, int64(len(data)), nil)
		var dm *DigestMismatchError
		if !errors.As(err, &dm) || dm.Expected != d || dm.Actual != digest.FromBytes(bad) {
			t.Fatalf("err = %v, want a digest mismatch", err)
		}
		assertNoBlobs(t, s)
		assertTmpEmpty(t, s)
	})

	t.Run("wrong size", func(t *testing.T) {
		s := newStore(t)
		_, err := s.CopyFile(ctx, writeSource(t, data[:len(data)-1]), d, int64(len(data)), nil)
		if !errors.Is(err, ErrSizeMismatch) {
			t.Fatalf("err = %v, want a size mismatch", err)
		}
		assertNoBlobs(t, s)
		assertTmpEmpty(t, s)
	})

	t.Run("not a regular file", func(t *testing.T) {
		s := newStore(t)
		fifo := filepath.Join(t.TempDir(), "fifo")
		if err := unix.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(writeSource(t, data), link); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{fifo, link, t.TempDir()} {
			if _, err := s.CopyFile(ctx, p, d, -1, nil); err == nil {
				t.Errorf("%s: copied", p)
			}
		}
		assertNoBlobs(t, s)
		assertTmpEmpty(t, s)
	})

	t.Run("already stored", func(t *testing.T) {
		s := newStore(t)
		mustIngest(t, s, data)
		info, err := s.CopyFile(ctx, filepath.Join(t.TempDir(), "absent"), d, int64(len(data)), nil)
		if err != nil || info.Digest != d {
			t.Fatalf("info %+v, err %v: the stored blob should do", info, err)
		}
	})

	t.Run("any digest", func(t *testing.T) {
		s := newStore(t)
		info, err := s.CopyFile(ctx, writeSource(t, data), "", -1, nil)
		if err != nil || info.Digest != d {
			t.Fatalf("info %+v, err %v", info, err)
		}
	})
}

// TestCopyFileClones checks the copy-on-write path on a btrfs file system
// (a loop device: needs root, as in CI): the blob shares its extents with
// the source, says filefrag, and is still verified.
func TestCopyFileClones(t *testing.T) {
	for _, tool := range []string{"mkfs.btrfs", "filefrag"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install btrfs-progs and e2fsprogs (scripts/deps.sh does)", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "btrfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 300<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v\n%s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -o loop (this test needs root, as in CI): %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v\n%s", err, out)
		}
	})
	data := content(12, 8<<20)
	src := filepath.Join(mnt, "other-blob")
	if err := os.WriteFile(src, data, 0o444); err != nil {
		t.Fatal(err)
	}
	s, err := Init(filepath.Join(mnt, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := digest.FromBytes(data)
	if _, err := s.CopyFile(ctx, src, d, int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, d, data)
	bp, _ := s.Path(d)
	out, err := exec.Command("filefrag", "-v", bp).CombinedOutput()
	if err != nil {
		t.Fatalf("filefrag: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "shared") {
		t.Fatalf("the blob shares no extent with its source: not a clone\n%s", out)
	}
	// A clone that does not match is refused like a copy.
	bad := bytes.Clone(data)
	bad[100] ^= 1
	if err := os.WriteFile(filepath.Join(mnt, "bad"), bad, 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CopyFile(ctx, filepath.Join(mnt, "bad"), digest.FromBytes(data[:1<<20]), -1, nil); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
	assertTmpEmpty(t, s)
}

func TestWithCheck(t *testing.T) {
	ctx := context.Background()
	data := content(13, 100<<10)
	d := digest.FromBytes(data)
	errRefused := errors.New("refused by the check")
	// The check sees the whole blob: its size and its first bytes.
	var seen int64
	good := WithCheck(func(ra io.ReaderAt, size int64) error {
		seen = size
		head := make([]byte, 16)
		if _, err := ra.ReadAt(head, 0); err != nil {
			return err
		}
		if !bytes.Equal(head, data[:16]) {
			return errors.New("the check saw other bytes")
		}
		return nil
	})
	refuse := WithCheck(func(io.ReaderAt, int64) error { return errRefused })

	writers := map[string]func(s *Store, opt Option) (BlobInfo, error){
		"ingest": func(s *Store, opt Option) (BlobInfo, error) {
			return s.Ingest(ctx, bytes.NewReader(data), d, int64(len(data)), nil, opt)
		},
		"commit file": func(s *Store, opt Option) (BlobInfo, error) {
			tf, err := s.CreateTemp("x")
			if err != nil {
				return BlobInfo{}, err
			}
			if _, err := tf.Write(data); err != nil {
				return BlobInfo{}, err
			}
			return s.CommitFile(ctx, tf, d, nil, opt)
		},
		"partial": func(s *Store, opt Option) (BlobInfo, error) {
			p, err := s.OpenPartial(ctx, d, int64(len(data)))
			if err != nil {
				return BlobInfo{}, err
			}
			return p.Commit(ctx, bytes.NewReader(data), nil, opt)
		},
		"copy": func(s *Store, opt Option) (BlobInfo, error) {
			return s.CopyFile(ctx, writeSource(t, data), d, int64(len(data)), nil, opt)
		},
	}
	for name, write := range writers {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			if _, err := write(s, refuse); !errors.Is(err, errRefused) {
				t.Fatalf("err = %v, want the check's", err)
			}
			assertNoBlobs(t, s)
			assertTmpEmpty(t, s)
			seen = 0
			if _, err := write(s, good); err != nil {
				t.Fatal(err)
			}
			if seen != int64(len(data)) {
				t.Fatalf("the check saw %d bytes", seen)
			}
			assertBlob(t, s, d, data)
			// A blob already stored is checked too, and kept when the
			// check refuses it: it may be in use. (OpenPartial says
			// ErrExists instead, and a temp file is always new.)
			if name == "ingest" || name == "copy" {
				if _, err := write(s, refuse); !errors.Is(err, errRefused) {
					t.Fatalf("stored blob: err = %v, want the check's", err)
				}
				assertBlob(t, s, d, data)
			}
		})
	}
}

func TestPartialAppendAndReadAt(t *testing.T) {
	ctx := context.Background()
	data := content(14, 5<<20)
	d := digest.FromBytes(data)
	s := newStore(t)
	p, err := s.OpenPartial(ctx, d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Append(ctx, bytes.NewReader(data[:1000]), nil); err != nil {
		t.Fatal(err)
	}
	// A failing source keeps what arrived, and the partial stays open.
	errNet := errors.New("network down")
	n, err := p.Append(ctx, io.MultiReader(bytes.NewReader(data[1000:3000]), failing{errNet}), nil)
	if !errors.Is(err, errNet) || n != 2000 || p.Offset() != 3000 {
		t.Fatalf("n %d, offset %d, err %v", n, p.Offset(), err)
	}
	head := make([]byte, 3000)
	if _, err := p.ReadAt(head, 0); err != nil || !bytes.Equal(head, data[:3000]) {
		t.Fatalf("ReadAt: %v", err)
	}
	if _, err := p.ReadAt(make([]byte, 2), 2999); err == nil {
		t.Fatal("ReadAt past the downloaded bytes succeeded")
	}
	if _, err := p.Append(ctx, bytes.NewReader(data[3000:]), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, d, data)
	assertTmpEmpty(t, s)

	// A source longer than the blob removes the partial.
	data2 := content(15, 4096)
	d2 := digest.FromBytes(data2)
	p, err = s.OpenPartial(ctx, d2, int64(len(data2)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Append(ctx, bytes.NewReader(append(data2, 0)), nil); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("err = %v, want a size mismatch", err)
	}
	if _, err := p.Commit(ctx, nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after removal: %v", err)
	}
	assertTmpEmpty(t, s)
}

type failing struct{ err error }

func (r failing) Read([]byte) (int, error) { return 0, r.err }

func TestKeepFile(t *testing.T) {
	s := newStore(t)
	write := func(data string) *TempFile {
		tf, err := s.CreateTemp("keep")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tf.WriteString(data); err != nil {
			t.Fatal(err)
		}
		return tf
	}
	if err := s.KeepFile(write("one"), "abc.qcow2", 0o444); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepFile(write("two"), "abc.qcow2", 0o444); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("err = %v, want fs.ErrExist", err)
	}
	got, err := os.ReadFile(filepath.Join(s.Dir(), "abc.qcow2"))
	if err != nil || string(got) != "one" {
		t.Fatalf("got %q, %v: the first file must stay", got, err)
	}
	fi, _ := os.Stat(filepath.Join(s.Dir(), "abc.qcow2"))
	if fi.Mode().Perm() != 0o444 {
		t.Fatalf("mode %v", fi.Mode())
	}
	for _, bad := range []string{"blobs/sha256/x", ".tmp/x", "../x", "/etc/x"} {
		if err := s.KeepFile(write("x"), bad, 0o444); err == nil {
			t.Errorf("%s: kept", bad)
		}
		if err := s.ReplaceFile(write("x"), bad, 0o444); err == nil {
			t.Errorf("%s: replaced", bad)
		}
	}
	// ReplaceFile replaces.
	if err := s.ReplaceFile(write("three"), "abc.qcow2", 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(s.Dir(), "abc.qcow2")); err != nil || string(got) != "three" {
		t.Fatalf("after ReplaceFile: %q, %v", got, err)
	}
	assertTmpEmpty(t, s)
}
