package cas

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"
)

var (
	// ErrNotFound: no blob (a regular file) has this digest.
	ErrNotFound = errors.New("cas: not found")
	// ErrInvalidDigest: a digest is not "sha256:" and 64 lowercase hex digits.
	ErrInvalidDigest = errors.New("cas: invalid digest")
	// ErrDigestMismatch is matched by every [*DigestMismatchError].
	ErrDigestMismatch = errors.New("cas: digest mismatch")
	// ErrSizeMismatch is matched by every [*SizeMismatchError].
	ErrSizeMismatch = errors.New("cas: size mismatch")
	// ErrExists: [Store.OpenPartial] was asked for a blob the store already has.
	ErrExists = errors.New("cas: blob already exists")
	// ErrBusy: the repository lock or a partial is held by someone else and
	// the context ended before it was released.
	ErrBusy = errors.New("cas: busy")
	// ErrReadOnly: the repository (or its lock file) cannot be written.
	ErrReadOnly = errors.New("cas: repository is not writable")
	// ErrNotLocked: an operation that needs the repository lock was given
	// none, a released one, or one of another repository.
	ErrNotLocked = errors.New("cas: repository lock not held")
	// ErrClosed: a temp file or partial was already committed or discarded.
	ErrClosed = errors.New("cas: already committed or discarded")
	// ErrSource is matched by the errors of the caller's reader, as
	// opposed to those of the store: a partial download survives them.
	ErrSource = errors.New("cas: the source failed")
)

// DigestMismatchError reports bytes whose digest is not the expected one.
// It matches [ErrDigestMismatch] with [errors.Is].
type DigestMismatchError struct {
	Expected digest.Digest
	Actual   digest.Digest
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("cas: digest mismatch: expected %s, got %s", e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrDigestMismatch) true.
func (e *DigestMismatchError) Is(target error) bool { return target == ErrDigestMismatch }

// SizeMismatchError reports a stream or file whose length is not the
// expected one. Actual is a lower bound when the stream was cut short
// because it ran past Expected.
type SizeMismatchError struct {
	Expected int64
	Actual   int64
	// Longer is set when reading stopped because the data went past Expected.
	Longer bool
}

func (e *SizeMismatchError) Error() string {
	if e.Longer {
		return fmt.Sprintf("cas: size mismatch: expected %d bytes, got more", e.Expected)
	}
	return fmt.Sprintf("cas: size mismatch: expected %d bytes, got %d", e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrSizeMismatch) true.
func (e *SizeMismatchError) Is(target error) bool { return target == ErrSizeMismatch }

// opError gives every error the operation and the blob or path it concerns,
// the way [os.PathError] does, without repeating the "cas: " prefix of the
// error it wraps.
type opError struct {
	op      string
	subject string
	err     error
}

func (e *opError) Error() string {
	msg := strings.TrimPrefix(e.err.Error(), "cas: ")
	if e.subject == "" {
		return "cas: " + e.op + ": " + msg
	}
	return "cas: " + e.op + " " + e.subject + ": " + msg
}

func (e *opError) Unwrap() error { return e.err }

func wrap(op, subject string, err error) error {
	if err == nil {
		return nil
	}
	return &opError{op: op, subject: subject, err: err}
}

// notWritable adds ErrReadOnly to errors that mean the repository cannot be
// written, so a caller can say so instead of printing a bare errno.
func notWritable(err error) error {
	if errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	}
	return err
}

// sourceError marks an error of the caller's reader, as opposed to one of
// the local file system: a partial download survives the first kind.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// Is makes errors.Is(err, ErrSource) true.
func (e *sourceError) Is(target error) bool { return target == ErrSource }
