package cas

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Big buffers: the data is disk images, and small writes (io.Copy's 32 KiB,
// or whatever a network reader happens to return) cost system calls.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, bufSize)
	return &b
}}

// copyHashed copies r into w (w may be nil: hash only) and h, in chunks of up
// to bufSize. start is the number of bytes already behind r (a resumed
// download) and limit, when >= 0, the total the data must not exceed: reading
// stops with a *SizeMismatchError as soon as it would, so an endless stream
// costs at most one buffer more than the expected size. progress, if not nil,
// receives start plus the bytes copied so far. Errors of r are wrapped in
// *sourceError.
func copyHashed(ctx context.Context, w io.Writer, r io.Reader, h hash.Hash, start, limit int64, progress func(int64)) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		// ReadFull fills the buffer so that the writes are big however small
		// the reader's chunks are.
		m, rerr := io.ReadFull(r, buf)
		if rerr == io.ErrUnexpectedEOF {
			rerr = io.EOF
		}
		if limit >= 0 && start+n+int64(m) > limit {
			return n, &SizeMismatchError{Expected: limit, Actual: start + n + int64(m), Longer: true}
		}
		if m > 0 {
			if w != nil {
				if _, err := w.Write(buf[:m]); err != nil {
					return n, err
				}
			}
			h.Write(buf[:m])
			n += int64(m)
			if progress != nil {
				progress(start + n)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, &sourceError{err: rerr}
		}
	}
}

// Ingest stores the bytes of r as a blob and returns its digest and size.
//
// expected, if not empty, is the digest the bytes must have, and expectedSize,
// if not -1, their length; a mismatch is a [*DigestMismatchError] or a
// [*SizeMismatchError] and stores nothing. A stream longer than expectedSize
// is not read to its end. If the blob named expected is already stored, r is
// not read at all. The data goes to a temp file in .tmp/, hashed on the way,
// and becomes a blob only when complete and checked; on any error the temp
// file is removed.
func (s *Store) Ingest(ctx context.Context, r io.Reader, expected digest.Digest, expectedSize int64, progress func(n int64)) (BlobInfo, error) {
	subject := string(expected)
	if expected != "" {
		if err := ValidateDigest(expected); err != nil {
			return BlobInfo{}, wrap("ingest", "", err)
		}
	}
	if expectedSize < -1 {
		return BlobInfo{}, wrap("ingest", subject, fmt.Errorf("invalid expected size %d", expectedSize))
	}
	if expected != "" {
		fi, err := s.lstatBlob(expected)
		if err == nil {
			if expectedSize >= 0 && fi.Size() != expectedSize {
				return BlobInfo{}, wrap("ingest", subject, &SizeMismatchError{Expected: expectedSize, Actual: fi.Size()})
			}
			if progress != nil {
				progress(fi.Size())
			}
			return BlobInfo{Digest: expected, Size: fi.Size(), Mode: fi.Mode().Perm()}, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return BlobInfo{}, wrap("ingest", subject, err)
		}
	}
	if r == nil {
		return BlobInfo{}, wrap("ingest", subject, errors.New("nil reader"))
	}
	tf, err := s.createTemp("ingest-*")
	if err != nil {
		return BlobInfo{}, wrap("ingest", subject, err)
	}
	defer tf.Discard() // no-op once published; removes the temp file on every error path

	h := sha256.New()
	n, err := copyHashed(ctx, tf.File, r, h, 0, expectedSize, progress)
	if err != nil {
		return BlobInfo{}, wrap("ingest", subject, err)
	}
	if expectedSize >= 0 && n != expectedSize {
		return BlobInfo{}, wrap("ingest", subject, &SizeMismatchError{Expected: expectedSize, Actual: n})
	}
	actual := digest.NewDigest(digest.SHA256, h)
	if expected != "" && actual != expected {
		return BlobInfo{}, wrap("ingest", subject, &DigestMismatchError{Expected: expected, Actual: actual})
	}
	info, err := s.publishTemp(tf, actual, n)
	if err != nil {
		return BlobInfo{}, wrap("ingest", string(actual), err)
	}
	return info, nil
}

// publish makes the temp file f, whose flock the caller holds and whose bytes
// hash to d, the blob d. It always consumes f: on return f is closed and its
// temp name is gone, renamed or removed, whatever the outcome.
func (s *Store) publish(f *os.File, d digest.Digest, size int64) (BlobInfo, error) {
	tmp := f.Name()
	fail := func(err error) (BlobInfo, error) {
		// Remove before Close: while we hold the flock nobody else acts on it.
		_ = os.Remove(tmp) // best effort: the error being returned matters more
		_ = f.Close()
		return BlobInfo{}, err
	}
	// Read-only before the rename, so that no crash can leave a writable blob.
	if err := f.Chmod(blobPerm); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	target := s.blobPath(d)
	// Renaming while the flock is still held keeps gc from taking the temp
	// file away between Close and rename.
	err := renameNoReplace(tmp, target)
	if errors.Is(err, fs.ErrExist) {
		// Someone stored the same bytes first. Keeping theirs (instead of
		// replacing it) leaves a blob that is in use by a VM untouched.
		fi, lerr := os.Lstat(target)
		if lerr != nil {
			return fail(lerr)
		}
		if !fi.Mode().IsRegular() {
			return fail(fmt.Errorf("%s exists and is not a regular file", target))
		}
		if err := os.Remove(tmp); err != nil {
			_ = f.Close()
			return BlobInfo{}, err
		}
		if err := f.Close(); err != nil {
			return BlobInfo{}, err
		}
		return BlobInfo{Digest: d, Size: fi.Size(), Mode: fi.Mode().Perm()}, nil
	}
	if err != nil {
		return fail(notWritable(err))
	}
	err = syncDir(s.blobDir())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// The blob is in place and its bytes were fsynced and checked; what
		// failed is the durability of the rename, which the caller must hear.
		return BlobInfo{}, err
	}
	return BlobInfo{Digest: d, Size: size, Mode: blobPerm}, nil
}

// renameNoReplace renames old to new unless new exists (fs.ErrExist).
// RENAME_NOREPLACE makes the check and the rename one step; file systems
// without it get a check-then-rename, which is still correct here because a
// blob that appears in between has the same bytes.
func renameNoReplace(old, new string) error {
	err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENOTSUP) {
		if _, serr := os.Lstat(new); serr == nil {
			return &os.LinkError{Op: "rename", Old: old, New: new, Err: unix.EEXIST}
		}
		return os.Rename(old, new)
	}
	return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
}
