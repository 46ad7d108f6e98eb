//go:build !unix

package repo

import (
	"io/fs"
	"os"
)

// fdFile is an [os.File] where there is no pread without one.
type fdFile struct{ *os.File }

// openFD is [openFile], with the file's size and mode.
func openFD(p string) (fdFile, int64, fs.FileMode, error) {
	f, size, err := openFile(p)
	if err != nil {
		return fdFile{}, 0, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fdFile{}, 0, 0, err
	}
	return fdFile{f}, size, fi.Mode().Perm(), nil
}
