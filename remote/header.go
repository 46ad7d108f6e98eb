package remote

import (
	"fmt"
	"io"

	"github.com/cangallo/canga/qcow2"
)

// Expect is what the header of a pulled blob must say.
type Expect struct {
	// Backing is the exact backing file name: the parent's blob HEX in a
	// canga repository, PARENTHEX.qcow2 (the parent's image ID) in a
	// Cangallo one; empty for a base image, which must have none.
	Backing string
	// Legacy accepts a missing backing format extension, which Cangallo's
	// "qemu-img rebase -u" did not write. A canga blob must say qcow2.
	Legacy bool
	// VirtualSize, if not 0, is the virtual size the index gives.
	VirtualSize int64
}

// CheckPulledHeader decides whether a downloaded qcow2 file may enter a
// repository, from its header (the first cluster: at most 2 MiB). The file
// must be a qcow2 image that canga can read (no encryption, no external
// data file: [qcow2.ReadHeader] refuses those), and its backing file must
// be exactly want.Backing, in format qcow2: a blob comes from a server
// that may be hostile, and a backing name such as "/etc/shadow", "../x" or
// "json:{...}" would make qemu, or canga, open a file of the host. The
// error matches [ErrRefused].
func CheckPulledHeader(ra io.ReaderAt, size int64, want Expect) (*qcow2.Header, error) {
	h, err := qcow2.ReadHeader(ra, size)
	if err != nil {
		return nil, fmt.Errorf("%w: not a usable qcow2 image: %w", ErrRefused, err)
	}
	if want.Backing == "" {
		if h.BackingFile != "" {
			return nil, fmt.Errorf("%w: a base image names backing file %s", ErrRefused, quote(h.BackingFile))
		}
	} else {
		if h.BackingFile != want.Backing {
			return nil, fmt.Errorf("%w: backing file %s, must be %s (the parent's)", ErrRefused, quote(h.BackingFile), quote(want.Backing))
		}
		if h.BackingFormat != qcow2.FormatQcow2 && !(want.Legacy && h.BackingFormat == "") {
			return nil, fmt.Errorf("%w: backing format %s, must be qcow2", ErrRefused, quote(h.BackingFormat))
		}
	}
	if want.VirtualSize != 0 && h.VirtualSize() != want.VirtualSize {
		return nil, fmt.Errorf("%w: virtual size %d, the index says %d", ErrRefused, h.VirtualSize(), want.VirtualSize)
	}
	return h, nil
}

// headLen is how much of a blob CheckPulledHeader reads: one cluster of
// the largest size qcow2 allows, or the whole blob if it is smaller.
func headLen(size int64) int64 {
	return min(size, int64(1)<<qcow2.MaxClusterBits)
}

// headGuard passes a download through and checks the blob's header as
// soon as the first headLen bytes have gone by, before the last byte
// reaches the store: a refused blob never becomes a blob (its reader
// fails, so cas.Partial.Commit does not publish it).
type headGuard struct {
	r    io.Reader
	head []byte // the first bytes of the blob seen so far
	need int
	pos  int64 // offset in the blob of the next byte of r
	size int64
	want Expect
	done bool
	err  error
}

// newHeadGuard guards r, which delivers the blob from offset off on;
// prefix holds the blob's bytes before off (at least up to headLen, when
// off is beyond it).
func newHeadGuard(r io.Reader, off, size int64, prefix []byte, want Expect) *headGuard {
	n := headLen(size)
	g := &headGuard{r: r, need: int(n), pos: off, size: size, want: want}
	g.head = make([]byte, 0, n)
	g.head = append(g.head, prefix[:min(int64(len(prefix)), n, off)]...)
	return g
}

func (g *headGuard) verify() error {
	if g.done {
		return g.err
	}
	g.done = true
	_, err := CheckPulledHeader(bytesReaderAt(g.head), g.size, g.want)
	g.err = err
	g.head = nil
	return err
}

func (g *headGuard) Read(p []byte) (int, error) {
	if g.done {
		if g.err != nil {
			return 0, g.err
		}
		return g.r.Read(p)
	}
	if len(g.head) == g.need {
		// The whole head came from the partial file: check it before
		// a byte more is fetched.
		if err := g.verify(); err != nil {
			return 0, err
		}
		return g.r.Read(p)
	}
	n, err := g.r.Read(p)
	if n > 0 && g.pos < int64(g.need) {
		take := min(int64(n), int64(g.need)-g.pos)
		g.head = append(g.head, p[:take]...)
	}
	g.pos += int64(n)
	if len(g.head) == g.need {
		if verr := g.verify(); verr != nil {
			return 0, verr
		}
	}
	return n, err
}

// bytesReaderAt is an io.ReaderAt over a byte slice.
type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
