package cas

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Partial is a resumable download of one blob: the file
// .tmp/partial-HEX, named by the expected digest so that the next attempt
// (in this process or another) finds it. While a Partial is open it holds the
// file's flock; a second puller of the same blob waits for it.
type Partial struct {
	s        *Store
	f        *os.File
	expected digest.Digest
	size     int64
	h        hash.Hash
	off      int64

	mu   sync.Mutex
	done bool
}

// OpenPartial opens (or starts) the download of blob expected, of
// expectedSize bytes (-1 if unknown). It re-hashes the bytes already there
// and positions after them: [Partial.Offset] is where the download goes on
// (an HTTP request would send "Range: bytes=OFFSET-"). A partial longer than
// expectedSize is discarded and the download starts from zero.
//
// If another Partial (of this or another process) holds the same blob,
// OpenPartial waits, polling, until it is released or ctx ends; in the latter
// case the error matches both [ErrBusy] and ctx.Err(). If the blob is
// already stored (possibly by the holder it waited for), the error matches
// [ErrExists] and the caller has nothing to download.
func (s *Store) OpenPartial(ctx context.Context, expected digest.Digest, expectedSize int64) (*Partial, error) {
	if err := ValidateDigest(expected); err != nil {
		return nil, wrap("open partial", "", err)
	}
	subject := string(expected)
	if expectedSize < -1 {
		return nil, wrap("open partial", subject, fmt.Errorf("invalid expected size %d", expectedSize))
	}
	if has, err := s.Has(expected); err != nil {
		return nil, err
	} else if has {
		return nil, wrap("open partial", subject, ErrExists)
	}
	if err := s.ensureLayout(); err != nil {
		return nil, wrap("open partial", subject, err)
	}
	f, err := s.lockPartial(ctx, expected)
	if err != nil {
		return nil, wrap("open partial", subject, err)
	}
	p := &Partial{s: s, f: f, expected: expected, size: expectedSize, h: sha256.New()}
	if err := p.load(ctx); err != nil {
		_ = f.Close() // keeps the partial for a later attempt; err says why this one failed
		return nil, wrap("open partial", subject, err)
	}
	return p, nil
}

func (s *Store) partialPath(d digest.Digest) string {
	return filepath.Join(s.tmpPath(), partialNm+string(d)[len(sha256Prefix):])
}

// lockPartial opens and flocks the partial file of d, waiting for another
// holder with jittered back-off.
func (s *Store) lockPartial(ctx context.Context, d digest.Digest) (*os.File, error) {
	path := s.partialPath(d)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var b backoff
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|noFollow, 0o600)
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
		if ok {
			// The holder we waited for may have finished the blob.
			if _, err := s.lstatBlob(d); err == nil {
				err := os.Remove(path)
				_ = f.Close()
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					return nil, err
				}
				return nil, ErrExists
			}
			return f, nil
		}
		_ = f.Close() // not ours: a live holder, or gc unlinking it
		if err := b.wait(ctx); err != nil {
			return nil, fmt.Errorf("%w: partial %s held by another puller: %w", ErrBusy, path, err)
		}
	}
}

// load re-hashes the existing prefix, so that the final digest covers bytes
// written by an earlier (perhaps killed) process.
func (p *Partial) load(ctx context.Context) error {
	fi, err := p.f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p.f.Name())
	}
	size := fi.Size()
	if p.size >= 0 && size > p.size {
		if err := p.f.Truncate(0); err != nil {
			return err
		}
		size = 0
	}
	n, err := copyHashed(ctx, nil, io.NewSectionReader(p.f, 0, size), p.h, 0, -1, nil)
	if err != nil {
		return err
	}
	p.off = n
	_, err = p.f.Seek(n, io.SeekStart)
	return err
}

// Offset is the number of bytes already downloaded.
func (p *Partial) Offset() int64 { return p.off }

// Digest is the blob being downloaded.
func (p *Partial) Digest() digest.Digest { return p.expected }

// Size is the expected size, -1 if unknown.
func (p *Partial) Size() int64 { return p.size }

// Reset drops the bytes downloaded so far, for a server that ignored a
// Range request and sends the whole blob.
func (p *Partial) Reset() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return wrap("reset partial", string(p.expected), ErrClosed)
	}
	if err := p.f.Truncate(0); err != nil {
		return wrap("reset partial", string(p.expected), err)
	}
	if _, err := p.f.Seek(0, io.SeekStart); err != nil {
		return wrap("reset partial", string(p.expected), err)
	}
	p.h.Reset()
	p.off = 0
	return nil
}

// ReadAt reads bytes the partial already holds: b must lie below
// [Partial.Offset]. They are the bytes that were hashed, so a caller may
// check a blob's header from them before fetching the rest.
func (p *Partial) ReadAt(b []byte, off int64) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return 0, wrap("read partial", string(p.expected), ErrClosed)
	}
	if off < 0 || off+int64(len(b)) > p.off {
		return 0, wrap("read partial", string(p.expected), fmt.Errorf("bytes %d+%d lie beyond the %d downloaded", off, len(b), p.off))
	}
	return p.f.ReadAt(b, off)
}

// Append writes r to the end of the partial, hashing it, and returns the
// number of bytes added; progress, if not nil, hears the bytes of the blob
// held so far, Offset included. Data that would run past the expected size
// is not written: the error is a [*SizeMismatchError] and, since the
// source is not the blob, the partial is removed and released. A local
// write error (a full disk) does the same. An error of r or of ctx keeps
// the partial open, with everything that arrived before it: the caller may
// Append the rest from a new reader at Offset, or Close to leave it to a
// later attempt.
func (p *Partial) Append(ctx context.Context, r io.Reader, progress func(n int64)) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return 0, wrap("append partial", string(p.expected), ErrClosed)
	}
	n, err := p.appendLocked(ctx, r, progress)
	return n, wrap("append partial", string(p.expected), err)
}

func (p *Partial) appendLocked(ctx context.Context, r io.Reader, progress func(n int64)) (int64, error) {
	n, err := copyHashed(ctx, p.f, r, p.h, p.off, p.size, progress)
	p.off += n
	var serr *sourceError
	if err == nil || errors.As(err, &serr) || errors.Is(err, ctx.Err()) {
		return n, err
	}
	p.done = true
	return n, p.remove(err)
}

// Commit appends r (the rest of the blob, from Offset on; nil means nothing
// more), then checks size, digest and the options' checks, and stores the
// blob. progress, if not nil, receives the number of bytes of the blob done
// so far, Offset included.
//
// The Partial is released in every case. What happens to the file depends on
// the failure: an error of r, a cancelled ctx or data that ended short of
// expectedSize keep it for a later OpenPartial; data longer than expected, a
// digest mismatch, a refusal by a check and local write errors (a full disk)
// remove it.
func (p *Partial) Commit(ctx context.Context, r io.Reader, progress func(n int64), opts ...Option) (BlobInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	subject := string(p.expected)
	if p.done {
		return BlobInfo{}, wrap("commit partial", subject, ErrClosed)
	}
	if r != nil {
		if _, err := p.appendLocked(ctx, r, progress); err != nil {
			if !p.done {
				p.done = true
				err = p.keep(err)
			}
			return BlobInfo{}, wrap("commit partial", subject, err)
		}
	}
	p.done = true
	if p.size >= 0 && p.off != p.size {
		return BlobInfo{}, wrap("commit partial", subject, p.keep(&SizeMismatchError{Expected: p.size, Actual: p.off}))
	}
	if actual := digest.NewDigest(digest.SHA256, p.h); actual != p.expected {
		return BlobInfo{}, wrap("commit partial", subject, p.remove(&DigestMismatchError{Expected: p.expected, Actual: actual}))
	}
	if err := runChecks(opts, p.f, p.off); err != nil {
		return BlobInfo{}, wrap("commit partial", subject, p.remove(err))
	}
	info, err := p.s.publish(p.f, p.expected, p.off)
	return info, wrap("commit partial", subject, err)
}

// keep releases the partial, fsynced so that what a later attempt re-hashes
// is what was written, and returns err.
func (p *Partial) keep(err error) error {
	serr := p.f.Sync()
	if cerr := p.f.Close(); serr == nil {
		serr = cerr
	}
	return errors.Join(err, serr)
}

func (p *Partial) remove(err error) error {
	rerr := os.Remove(p.f.Name())
	if errors.Is(rerr, os.ErrNotExist) {
		rerr = nil
	}
	if cerr := p.f.Close(); rerr == nil {
		rerr = cerr
	}
	return errors.Join(err, rerr)
}

// Close releases the partial and keeps what was downloaded for a later
// attempt. It does nothing after Commit or Discard.
func (p *Partial) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil
	}
	p.done = true
	return wrap("close partial", string(p.expected), p.keep(nil))
}

// Discard removes the partial. It does nothing after Commit or Close.
func (p *Partial) Discard() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil
	}
	p.done = true
	return wrap("discard partial", string(p.expected), p.remove(nil))
}

// backoff spaces out polls for a flock from 2 ms up to 250 ms, with jitter so
// that waiters do not poll in step.
type backoff struct{ d time.Duration }

func (b *backoff) wait(ctx context.Context) error {
	switch {
	case b.d == 0:
		b.d = 2 * time.Millisecond
	case b.d < 250*time.Millisecond:
		b.d = min(b.d*2, 250*time.Millisecond)
	}
	t := time.NewTimer(b.d/2 + rand.N(b.d/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
