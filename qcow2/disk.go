package qcow2

import (
	"errors"
	"fmt"
	"io"
)

// Disk is a virtual disk: Size guest-visible bytes that can be read
// concurrently and whose allocation can be asked for, so that callers read
// only what holds data.
type Disk interface {
	io.ReaderAt
	// Size is the virtual size in bytes.
	Size() int64
	// Extent describes the run of guest bytes that starts at off and has
	// one [ExtentKind], up to length bytes. The backing chain is resolved.
	Extent(off, length int64) (Extent, error)
	// Close releases the files of the disk and of its backing chain.
	Close() error
}

// ExtentKind says how a range of a [Disk] reads.
type ExtentKind uint8

const (
	// Unallocated ranges are allocated by no layer of the chain; they read
	// as zeros.
	Unallocated ExtentKind = iota
	// Zero ranges are explicitly zero (a zero cluster, or a range beyond
	// the end of a shorter backing file); they read as zeros.
	Zero
	// Data ranges are stored in some layer and must be read.
	Data
)

func (k ExtentKind) String() string {
	switch k {
	case Unallocated:
		return "unallocated"
	case Zero:
		return "zero"
	case Data:
		return "data"
	}
	return fmt.Sprintf("ExtentKind(%d)", uint8(k))
}

// Extent is a run of guest bytes of one kind.
type Extent struct {
	Offset int64
	Length int64
	Kind   ExtentKind
}

// ReadsZero reports whether the extent reads as zeros without any I/O.
func (e Extent) ReadsZero() bool { return e.Kind != Data }

var errNegativeOffset = errors.New("qcow2: negative offset")

// clampRead limits a read of n bytes at off to a disk of size bytes and
// says whether the read reaches the end of the disk.
func clampRead(n int, off, size int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	if off >= size {
		return 0, io.EOF
	}
	if int64(n) > size-off {
		return int(size - off), io.EOF
	}
	return n, nil
}

// readFileAt fills p from ra at off. Bytes at or past fileSize read as zeros,
// as qemu reads them: an image may end inside its last cluster.
func readFileAt(ra io.ReaderAt, p []byte, off, fileSize int64) error {
	if off >= fileSize {
		clear(p)
		return nil
	}
	n := len(p)
	if int64(n) > fileSize-off {
		n = int(fileSize - off)
		clear(p[n:])
	}
	m, err := ra.ReadAt(p[:n], off)
	if m == n {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		// The file shrank under us; what is gone reads as zeros, as above.
		clear(p[m:n])
		return nil
	}
	return err
}

// readDiskAt fills p from d at off, reading zeros past d's end: a backing
// file may be shorter than the image above it.
func readDiskAt(d Disk, p []byte, off int64) error {
	size := d.Size()
	if off >= size {
		clear(p)
		return nil
	}
	n := len(p)
	if int64(n) > size-off {
		n = int(size - off)
		clear(p[n:])
	}
	m, err := d.ReadAt(p[:n], off)
	if m == n {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}
