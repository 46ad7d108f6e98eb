package cas

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

const noFollow = syscall.O_NOFOLLOW

// TempFile is a file in .tmp/ that the caller fills with random access (a
// qcow2 writer) before [Store.CommitFile] turns it into a blob. It holds an
// exclusive flock for its whole life, so gc leaves it alone.
//
// Use the embedded *os.File for I/O but not its Close: Close would drop the
// flock and leave the file to gc. End with CommitFile or [TempFile.Discard]
// (a deferred Discard is always right: it does nothing after a commit).
type TempFile struct {
	*os.File
	s    *Store
	mu   sync.Mutex
	done bool
}

// CreateTemp creates a temp file in the repository's .tmp/ (created if
// needed). pattern is as for [os.CreateTemp] and must not contain a slash.
func (s *Store) CreateTemp(pattern string) (*TempFile, error) {
	if strings.ContainsAny(pattern, "/\x00") {
		return nil, wrap("create temp", "", fmt.Errorf("pattern %q contains a slash or NUL", truncate(pattern, 100)))
	}
	tf, err := s.createTemp("tmp-" + pattern)
	if err != nil {
		return nil, wrap("create temp", "", err)
	}
	return tf, nil
}

// TempName is the name a temp file of [Store.CreateTemp] with pattern
// would have, with XXXXXX for its random part: for showing what a command
// would do, not for creating files.
func (s *Store) TempName(pattern string) string {
	return filepath.Join(s.tmpPath(), "tmp-"+strings.Replace(pattern, "*", "XXXXXX", 1))
}

// createTemp makes a new flocked file in .tmp/. gc may flock and unlink a
// file in the instant between its creation and our flock; the identity check
// after locking notices that, and we start over with a new name.
func (s *Store) createTemp(pattern string) (*TempFile, error) {
	if err := s.ensureLayout(); err != nil {
		return nil, err
	}
	for range 100 {
		f, err := os.CreateTemp(s.tmpPath(), pattern)
		if err != nil {
			if s.relayout(err) {
				continue
			}
			return nil, notWritable(err)
		}
		ok, err := lockedAndLinked(f)
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		if !ok {
			// Not ours any more (gc has it or removed it): close without
			// removing, since a name we do not hold is not ours to remove.
			_ = f.Close()
			continue
		}
		return &TempFile{File: f, s: s}, nil
	}
	return nil, errors.New("could not create a temp file that gc left alone")
}

// Discard removes the temp file and releases it. It does nothing after
// CommitFile or a previous Discard.
func (t *TempFile) Discard() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.discardLocked()
}

func (t *TempFile) discardLocked() error {
	if t.done {
		return nil
	}
	t.done = true
	// Remove before Close: the flock keeps gc off the name until it is gone.
	err := os.Remove(t.Name())
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if cerr := t.File.Close(); err == nil && !errors.Is(cerr, os.ErrClosed) {
		err = cerr
	}
	return wrap("discard", t.Name(), err)
}

// publishTemp hands t to publish and marks it done first, since publish
// consumes the file whatever happens.
func (s *Store) publishTemp(t *TempFile, d digest.Digest, size int64) (BlobInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return BlobInfo{}, ErrClosed
	}
	t.done = true
	return s.publish(t.File, d, size)
}

// CommitFile hashes t from its first byte to its end (whatever its current
// offset), checks the digest against expected if expected is not empty,
// runs the options' checks, and makes it the blob of that digest. t is consumed in every case: on
// success it is the blob (or was removed because the blob already existed),
// on error it is removed, so a mismatch stores nothing and leaves nothing.
// progress, if not nil, receives the number of bytes hashed so far.
func (s *Store) CommitFile(ctx context.Context, t *TempFile, expected digest.Digest, progress func(n int64), opts ...Option) (BlobInfo, error) {
	if t == nil {
		return BlobInfo{}, wrap("commit", "", errors.New("nil temp file"))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return BlobInfo{}, wrap("commit", t.Name(), ErrClosed)
	}
	if t.s != s {
		return BlobInfo{}, wrap("commit", t.Name(), errors.New("temp file of another store"))
	}
	fail := func(err error) (BlobInfo, error) {
		// The commit error is the one to report; removal is best effort.
		_ = t.discardLocked()
		return BlobInfo{}, wrap("commit", t.Name(), err)
	}
	if expected != "" {
		if err := ValidateDigest(expected); err != nil {
			return fail(err)
		}
	}
	o, err := parseOptions(opts)
	if err != nil {
		return fail(err)
	}
	h := sha256.New()
	hw, ch := hashers(h, o)
	// A SectionReader reads with pread, so the caller's file offset neither
	// matters nor changes.
	n, err := copyHashed(ctx, nil, io.NewSectionReader(t.File, 0, math.MaxInt64), hw, 0, -1, progress)
	if err != nil {
		return fail(err)
	}
	actual := digest.NewDigest(digest.SHA256, h)
	if expected != "" && actual != expected {
		return fail(&DigestMismatchError{Expected: expected, Actual: actual})
	}
	if err := runChecks(opts, t.File, n); err != nil {
		return fail(err)
	}
	t.done = true
	info, err := s.publish(t.File, actual, n)
	if err != nil {
		return BlobInfo{}, wrap("commit", string(actual), err)
	}
	info.Chunks = chunkList(ch)
	return info, nil
}

// tryLock takes an exclusive flock on f without blocking; false means
// someone else holds it.
func tryLock(f *os.File) (bool, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var ferr error
	cerr := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
			if ferr != unix.EINTR {
				return
			}
		}
	})
	if cerr != nil {
		return false, cerr
	}
	switch {
	case ferr == nil:
		return true, nil
	case errors.Is(ferr, unix.EWOULDBLOCK):
		return false, nil
	default:
		return false, &os.PathError{Op: "flock", Path: f.Name(), Err: ferr}
	}
}

// lockedAndLinked flocks f and checks that its name still leads to it: a
// file unlinked (by gc) or replaced while we waited is not ours to use.
func lockedAndLinked(f *os.File) (bool, error) {
	ok, err := tryLock(f)
	if err != nil || !ok {
		return false, err
	}
	return stillLinked(f)
}

func stillLinked(f *os.File) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	li, err := os.Lstat(f.Name())
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, li), nil
}
