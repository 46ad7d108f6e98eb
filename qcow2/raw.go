package qcow2

import (
	"io"
	"os"
)

// Raw is a raw disk image: the file's bytes are the guest's bytes. It
// implements [Disk]. When the file is an [*os.File], holes of a sparse file
// are reported as [Unallocated] so that they are never read.
type Raw struct {
	ra       io.ReaderAt
	fileSize int64
	size     int64
	file     *os.File
	closer   io.Closer
	name     string
}

// NewRaw returns a raw disk over ra, a file of fileSize bytes. Like qemu,
// it rounds the disk up to whole 512-byte sectors; the bytes past the end
// of the file read as zeros.
func NewRaw(ra io.ReaderAt, fileSize int64) *Raw {
	r := &Raw{ra: ra, fileSize: fileSize, size: (fileSize + 511) &^ 511}
	r.file, _ = ra.(*os.File)
	return r
}

// Name is the file name [OpenFile] opened the disk by, or "".
func (r *Raw) Name() string { return r.name }

// Size is the virtual size in bytes.
func (r *Raw) Size() int64 { return r.size }

// ReadAt implements [io.ReaderAt].
func (r *Raw) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(len(p), off, r.size)
	if n == 0 {
		return 0, eof
	}
	if err := readFileAt(r.ra, p[:n], off, r.fileSize); err != nil {
		return 0, err
	}
	return n, eof
}

// Extent implements [Disk.Extent].
func (r *Raw) Extent(off, length int64) (Extent, error) {
	n, _ := clampRead(int(min(length, r.size)), off, r.size)
	if n <= 0 {
		return Extent{Offset: off}, nil
	}
	if off >= r.fileSize {
		return Extent{Offset: off, Length: int64(n), Kind: Zero}, nil
	}
	n = int(min(int64(n), r.fileSize-off))
	if r.file != nil {
		if e, ok := sparseExtent(r.file, off, int64(n)); ok {
			return e, nil
		}
	}
	return Extent{Offset: off, Length: int64(n), Kind: Data}, nil
}

// Close closes the file if [OpenFile] opened it.
func (r *Raw) Close() error {
	if r.closer != nil {
		return r.closer.Close()
	}
	return nil
}
