package qcow2

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// sparseExtent asks the file system where data and holes are. The file
// offset it moves is not used by ReadAt (pread), so concurrent use is safe.
func sparseExtent(f *os.File, off, n int64) (Extent, bool) {
	fd := int(f.Fd())
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return Extent{Offset: off, Length: n, Kind: Unallocated}, true // a hole up to EOF
	}
	if err != nil {
		return Extent{}, false
	}
	if data > off {
		return Extent{Offset: off, Length: min(n, data-off), Kind: Unallocated}, true
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil || hole <= off {
		return Extent{}, false
	}
	return Extent{Offset: off, Length: min(n, hole-off), Kind: Data}, true
}
