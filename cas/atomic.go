package cas

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// WriteFileAtomic replaces the file name (relative to the repository
// directory, e.g. "index.yaml") with data and permission perm: temp file in
// .tmp/, fsync, rename over name, fsync of name's directory. Readers see the
// old file or the new one, never a mix, and a crash leaves one of the two.
// The directory of name must exist. Callers doing read-modify-write hold the
// repository lock.
func (s *Store) WriteFileAtomic(name string, data []byte, perm fs.FileMode) error {
	if err := checkName(name); err != nil {
		return wrap("write", name, err)
	}
	tf, err := s.createTemp("write-*")
	if err != nil {
		return wrap("write", name, err)
	}
	defer tf.Discard() // no-op after the rename; cleans up on every error
	if _, err := tf.Write(data); err != nil {
		return wrap("write", name, err)
	}
	// Chmod rather than create with perm: the umask must not decide the
	// mode of a file that others read.
	if err := tf.Chmod(perm.Perm()); err != nil {
		return wrap("write", name, err)
	}
	if err := tf.Sync(); err != nil {
		return wrap("write", name, err)
	}
	target := filepath.Join(s.dir, name)
	tf.mu.Lock()
	defer tf.mu.Unlock()
	// Rename while the flock is held, so gc cannot take the temp file away.
	if err := os.Rename(tf.Name(), target); err != nil {
		return wrap("write", name, notWritable(err))
	}
	tf.done = true
	err = syncDir(filepath.Dir(target))
	if cerr := tf.File.Close(); err == nil {
		err = cerr
	}
	return wrap("write", name, err)
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
