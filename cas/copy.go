package cas

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"syscall"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// CopyFile stores a copy of the regular file at path (another
// repository's blob, say) as the blob expected, of size bytes (-1: any),
// and returns it. The bytes are hashed as they are copied, from the copy,
// so that what is stored is what was checked: a file that changes while
// it is read, or whose bytes do not match its name, stores nothing. Where
// the file system can clone (FICLONE: btrfs, XFS), the copy is a
// copy-on-write clone, hashed once; elsewhere the bytes are copied. A blob
// is never a hard link to a file outside the store: the owner of that file
// could change it afterwards.
//
// expected may be empty (any digest). When the blob is already stored,
// path is not read, and the stored blob gets the options' checks.
// progress, if not nil, hears the bytes copied or hashed so far.
func (s *Store) CopyFile(ctx context.Context, path string, expected digest.Digest, size int64, progress func(n int64), opts ...Option) (BlobInfo, error) {
	subject := string(expected)
	if expected != "" {
		if err := ValidateDigest(expected); err != nil {
			return BlobInfo{}, wrap("copy", path, err)
		}
		info, ok, err := s.existing(expected, size, opts)
		if ok || err != nil {
			return info, wrap("copy", subject, err)
		}
	}
	// O_NONBLOCK: a FIFO planted under the name must not hang the copy.
	src, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return BlobInfo{}, wrap("copy", path, err)
	}
	defer src.Close() // read-only
	fi, err := src.Stat()
	if err != nil {
		return BlobInfo{}, wrap("copy", path, err)
	}
	if !fi.Mode().IsRegular() {
		return BlobInfo{}, wrap("copy", path, errors.New("not a regular file"))
	}
	if size >= 0 && fi.Size() != size {
		return BlobInfo{}, wrap("copy", path, &SizeMismatchError{Expected: size, Actual: fi.Size()})
	}
	o, err := parseOptions(opts)
	if err != nil {
		return BlobInfo{}, wrap("copy", path, err)
	}
	tf, err := s.createTemp("copy-*")
	if err != nil {
		return BlobInfo{}, wrap("copy", path, err)
	}
	defer tf.Discard() // no-op once published
	h := sha256.New()
	hw, ch := hashers(h, o)
	var n int64
	if clone(tf.File, src) {
		n, err = copyHashed(ctx, nil, io.NewSectionReader(tf.File, 0, fi.Size()+1), hw, 0, size, progress)
	} else {
		n, err = copyHashed(ctx, tf.File, io.NewSectionReader(src, 0, fi.Size()+1), hw, 0, size, progress)
	}
	if err != nil {
		return BlobInfo{}, wrap("copy", path, err)
	}
	if size >= 0 && n != size {
		return BlobInfo{}, wrap("copy", path, &SizeMismatchError{Expected: size, Actual: n})
	}
	actual := digest.NewDigest(digest.SHA256, h)
	if expected != "" && actual != expected {
		return BlobInfo{}, wrap("copy", path, &DigestMismatchError{Expected: expected, Actual: actual})
	}
	if err := runChecks(opts, tf.File, n); err != nil {
		return BlobInfo{}, wrap("copy", path, err)
	}
	info, err := s.publishTemp(tf, actual, n)
	if err != nil {
		return BlobInfo{}, wrap("copy", string(actual), err)
	}
	info.Chunks = chunkList(ch)
	return info, nil
}

// clone makes dst a copy-on-write clone of src, and reports whether the
// file system could. dst is empty, so a failed attempt leaves nothing to
// undo.
func clone(dst, src *os.File) bool {
	err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	if err != nil {
		// EXDEV, EOPNOTSUPP, EINVAL, ENOTTY...: no clone here; copy.
		return false
	}
	return true
}
