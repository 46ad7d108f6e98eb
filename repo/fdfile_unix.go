//go:build unix

package repo

import (
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// fdFile is a file of a repository read with pread, without the
// allocations of an [os.File]: fsck opens 100,000 of them, and their
// garbage cost it more than the reading.
type fdFile int

// openFD is [openFile] as an fdFile, with the file's size and mode.
func openFD(p string) (fdFile, int64, fs.FileMode, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return -1, 0, 0, &os.PathError{Op: "open", Path: p, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, 0, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, 0, 0, fmt.Errorf("%s is not a regular file", p)
	}
	return fdFile(fd), st.Size, fs.FileMode(st.Mode & 0o777), nil
}

// ReadAt implements [io.ReaderAt].
func (f fdFile) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pread(int(f), p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, io.EOF
		}
		done += n
	}
	return done, nil
}

func (f fdFile) Close() error { return unix.Close(int(f)) }
