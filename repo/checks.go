package repo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
)

var (
	// ErrRefused: a blob from a source is not acceptable in a repository:
	// not a qcow2 image canga reads, or it names a backing file other
	// than its parent's blob, or uses an external data file. A source must
	// never make canga or qemu open a file of the host.
	ErrRefused = errors.New("repo: blob refused")
	// ErrImageIDMismatch is matched by every [*ImageIDMismatchError].
	ErrImageIDMismatch = errors.New("repo: image ID mismatch")
)

// ImageIDMismatchError reports a Cangallo image whose content does not
// hash to its image ID. It matches [ErrImageIDMismatch].
type ImageIDMismatchError struct {
	Expected, Actual digest.Digest
}

func (e *ImageIDMismatchError) Error() string {
	return fmt.Sprintf("repo: image ID mismatch: expected %s, the content hashes to %s", e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrImageIDMismatch) true.
func (e *ImageIDMismatchError) Is(target error) bool { return target == ErrImageIDMismatch }

// expect is what the header of a blob from a source must say.
type expect struct {
	// backing is the exact backing file name: the parent's blob HEX in a
	// canga repository, PARENTHEX.qcow2 (the parent's image ID) in a
	// Cangallo one; empty for a base image, which must have none.
	backing string
	// legacy accepts a missing backing format extension, which
	// Cangallo's "qemu-img rebase -u" did not write. A canga blob must
	// say qcow2.
	legacy bool
	// virtualSize, if not 0, is the virtual size the index gives.
	virtualSize int64
}

// headLen is how much of a blob check reads: one cluster of the largest
// size qcow2 allows, or the whole blob if it is smaller.
func headLen(size int64) int64 {
	return min(size, int64(1)<<qcow2.MaxClusterBits)
}

// check decides from its header (the first cluster) whether a qcow2 file
// of size bytes may enter a repository. It must be a qcow2 image canga
// reads (no encryption, no external data file: [qcow2.ReadHeader] refuses
// those), and its backing file must be exactly x.backing, in format
// qcow2: a backing name such as "/etc/shadow", "../x" or "json:{...}"
// would make qemu, or canga, open a file of the host. The error matches
// [ErrRefused].
func (x expect) check(ra io.ReaderAt, size int64) error {
	_, err := x.header(ra, size)
	return err
}

func (x expect) header(ra io.ReaderAt, size int64) (*qcow2.Header, error) {
	h, err := qcow2.ReadHeader(ra, size)
	if err != nil {
		return nil, fmt.Errorf("%w: not a usable qcow2 image: %w", ErrRefused, err)
	}
	switch {
	case x.backing == "" && h.BackingFile != "":
		return nil, fmt.Errorf("%w: a base image names backing file %s", ErrRefused, quote(h.BackingFile))
	case x.backing != "" && h.BackingFile != x.backing:
		return nil, fmt.Errorf("%w: backing file %s, must be %s (the parent's)", ErrRefused, quote(h.BackingFile), quote(x.backing))
	case x.backing != "" && h.BackingFormat != qcow2.FormatQcow2 && !(x.legacy && h.BackingFormat == ""):
		return nil, fmt.Errorf("%w: backing format %s, must be qcow2", ErrRefused, quote(h.BackingFormat))
	case x.virtualSize != 0 && h.VirtualSize() != x.virtualSize:
		return nil, fmt.Errorf("%w: virtual size %d, the index says %d", ErrRefused, h.VirtualSize(), x.virtualSize)
	}
	return h, nil
}

// option is the check as a cas requirement, so that no blob that fails it
// is ever published.
func (x expect) option() cas.Option { return cas.WithCheck(x.check) }

// openFile opens a file of a repository for reading: a regular file,
// never through a symbolic link (O_NOFOLLOW), and never blocking on a
// FIFO planted under its name. It returns the file and its size.
func openFile(p string) (*os.File, int64, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|noFollow|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", p)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// quote shows a string from a file or a server in an error message, cut
// to a readable length: a backing file name may hold 1023 bytes.
func quote(s string) string {
	const limit = 120
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
