package cas

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/cangallo/canga/internal/atomicfile"
)

// WriteFileAtomic replaces the file name (relative to the repository
// directory, e.g. "index.yaml") with data and permission perm: temp file in
// .tmp/, fsync, rename over name, fsync of name's directory. Readers see the
// old file or the new one, never a mix, and a crash leaves one of the two.
// The directory of name must exist. Callers doing read-modify-write hold the
// repository lock.
func (s *Store) WriteFileAtomic(name string, data []byte, perm fs.FileMode) error {
	return s.WriteAtomic(name, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteAtomic is [Store.WriteFileAtomic] for content that write produces,
// so that it need not be in memory whole (an index.yaml of 100,000 images
// is 40 MB). An error of write leaves name as it was.
func (s *Store) WriteAtomic(name string, perm fs.FileMode, write func(w io.Writer) error) error {
	if err := checkName(name); err != nil {
		return wrap("write", name, err)
	}
	tf, err := s.createTemp("write-*")
	if err != nil {
		return wrap("write", name, err)
	}
	defer tf.Discard() // no-op after the rename; cleans up on every error
	if err := write(tf.File); err != nil {
		return wrap("write", name, err)
	}
	return wrap("write", name, s.keep(tf, name, perm, false))
}

// KeepFile makes the temp file t, complete, the file name of the
// repository (relative to its directory, outside blobs/ and .tmp/), with
// permission perm, unless name exists: then the file there is kept, t is
// dropped and the error matches [fs.ErrExist]. It is how files that are
// not blobs but must appear as atomically enter a repository: the image
// files of a Cangallo cache (HEX.qcow2 beside index.yaml), which are
// named by image ID and checked by the caller. t is consumed in every
// case.
func (s *Store) KeepFile(t *TempFile, name string, perm fs.FileMode) error {
	if t == nil {
		return wrap("keep", name, errors.New("nil temp file"))
	}
	defer t.Discard() // removes the temp name if it is still there
	if err := checkName(name); err != nil {
		return wrap("keep", name, err)
	}
	if t.s != s {
		return wrap("keep", name, errors.New("temp file of another store"))
	}
	return wrap("keep", name, s.keep(t, name, perm, true))
}

// ReplaceFile makes the temp file t, complete, the file name of the
// repository (as [Store.KeepFile] names it), replacing what is there: what
// [Store.WriteAtomic] does for content that was first written to a temp
// file and checked there (a fetched index.yaml, verified before it
// replaces the cached one). t is consumed in every case.
func (s *Store) ReplaceFile(t *TempFile, name string, perm fs.FileMode) error {
	if t == nil {
		return wrap("replace", name, errors.New("nil temp file"))
	}
	defer t.Discard()
	if err := checkName(name); err != nil {
		return wrap("replace", name, err)
	}
	if t.s != s {
		return wrap("replace", name, errors.New("temp file of another store"))
	}
	return wrap("replace", name, s.keep(t, name, perm, false))
}

// keep publishes t as name, holding t's lock so that gc cannot take the
// temp file away before the rename, and then releases t.
func (s *Store) keep(t *TempFile, name string, perm fs.FileMode, noReplace bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return ErrClosed
	}
	if err := atomicfile.Publish(t.File, filepath.Join(s.dir, name), perm, noReplace); err != nil {
		return notWritable(err)
	}
	t.done = true
	return t.File.Close()
}

// checkName keeps WriteFileAtomic inside the repository and off the parts
// that cas owns.
func checkName(name string) error {
	if name == "" || !filepath.IsLocal(name) || filepath.Clean(name) != name || strings.ContainsRune(name, 0) {
		return fmt.Errorf("name %q is not a clean relative path inside the repository", truncate(name, 100))
	}
	first, _, _ := strings.Cut(name, string(filepath.Separator))
	switch first {
	case blobsDir, tmpDir, lockName:
		return errors.New("name is in a part of the repository that cas owns")
	}
	return nil
}
