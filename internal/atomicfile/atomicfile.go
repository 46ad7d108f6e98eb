// Package atomicfile writes files so that a reader, or a crash, sees the old
// content or the new one and never a mix: write a temp file, fsync it, set
// its mode, rename it over the target, fsync the directory (SPEC §2, "every
// write is atomic"). It is the one implementation of that sequence in canga:
// blobs, index.yaml and its signature, config.yaml, exports and Cangallo
// cache files all end with [Publish].
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SyncDir makes the renames and unlinks done in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Publish makes the temp file f, complete and still open, the file target:
// it sets perm (by chmod, so the umask does not decide the mode of a file
// others read), fsyncs f, renames it to target and fsyncs target's
// directory. f stays open; the caller closes it, after Publish so that a
// lock it holds on f (cas's flock against gc) covers the rename.
//
// With noReplace an existing target wins and the error matches
// [fs.ErrExist]; f's name is then still there, for the caller to remove.
// Otherwise target is replaced.
func Publish(f *os.File, target string, perm fs.FileMode, noReplace bool) error {
	if err := f.Chmod(perm.Perm()); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	var err error
	if noReplace {
		err = renameNoReplace(f.Name(), target)
	} else {
		err = os.Rename(f.Name(), target)
	}
	if err != nil {
		return err
	}
	return SyncDir(filepath.Dir(target))
}

// Write creates or replaces target with what fill writes into a temp file
// in target's directory, published with perm only when fill succeeded: a
// failed or interrupted write never leaves half a file under target's
// name, and removes its temp file.
func Write(target string, perm fs.FileMode, fill func(f *os.File) error) error {
	return write(target, perm, false, fill)
}

// Create is [Write] that never replaces: when target exists, it is kept
// and the error matches [fs.ErrExist].
func Create(target string, perm fs.FileMode, fill func(f *os.File) error) error {
	return write(target, perm, true, fill)
}

// WriteFile is [Write] of data.
func WriteFile(target string, data []byte, perm fs.FileMode) error {
	return Write(target, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

func write(target string, perm fs.FileMode, noReplace bool, fill func(f *os.File) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		// After a successful Publish the temp name is gone and Remove
		// fails harmlessly; on every error it takes the temp file away.
		_ = os.Remove(f.Name())
		if cerr := f.Close(); err == nil && !errors.Is(cerr, os.ErrClosed) {
			err = cerr
		}
	}()
	if err := fill(f); err != nil {
		return err
	}
	return Publish(f, target, perm, noReplace)
}
