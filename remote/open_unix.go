//go:build unix

package remote

import (
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// openBeneath opens dir/parts[0]/.../parts[n-1] without following a
// symbolic link in any component below dir, and only if it is a regular
// file.
func openBeneath(dir string, parts []string) (*os.File, fs.FileInfo, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	for i, p := range parts {
		last := i == len(parts)-1
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			// A FIFO must not block the server.
			flags |= unix.O_NONBLOCK
		} else {
			flags |= unix.O_DIRECTORY
		}
		var nfd int
		for {
			nfd, err = unix.Openat(fd, p, flags, 0)
			if err != unix.EINTR {
				break
			}
		}
		unix.Close(fd)
		if err != nil {
			return nil, nil, &os.PathError{Op: "open", Path: p, Err: err}
		}
		fd = nfd
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, nil, errNotRegular
	}
	// Back to blocking, so that os.File reads (and sendfile) plainly.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	f := os.NewFile(uintptr(fd), parts[len(parts)-1])
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}
