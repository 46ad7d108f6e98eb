package cas

import (
	"bytes"
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
//
// With a chunk list ([WithChunkList]) the partial can also be filled out
// of order, chunk by chunk ([Partial.WriteChunk]): a lazy reader fetches
// what a VM reads first, and a pull (or the reader, later) fills the rest.
// Each chunk is checked against the list before it is written; the blob's
// digest is checked when the last byte is in, as always.
type Partial struct {
	s        *Store
	f        *os.File
	expected digest.Digest
	size     int64
	h        hash.Hash // the digest of [0, off)
	off      int64     // the contiguous prefix held

	chunkSize int64    // 0: no chunks kept
	ch        *chunker // the chunk sums of [0, off)
	want      []byte   // the chunk list the blob must have, if known
	have      []bool   // with want: the chunks held and checked, beyond off too

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
//
// Options: [WithChunks] computes the blob's chunk list as it arrives, for
// [BlobInfo].Chunks; [WithChunkList] gives the list it must have (which
// needs expectedSize), so that chunks are checked as they arrive and can
// be written out of order.
func (s *Store) OpenPartial(ctx context.Context, expected digest.Digest, expectedSize int64, opts ...Option) (*Partial, error) {
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
	o, err := parseOptions(opts)
	if err != nil {
		return nil, wrap("open partial", subject, err)
	}
	if o.wantChunks != nil {
		if expectedSize < 0 {
			return nil, wrap("open partial", subject, errors.New("a chunk list needs the blob's size"))
		}
		if err := CheckChunkList(o.wantChunks, expectedSize, o.chunkSize); err != nil {
			return nil, wrap("open partial", subject, err)
		}
	}
	f, err := s.lockPartial(ctx, expected)
	if err != nil {
		return nil, wrap("open partial", subject, err)
	}
	p := &Partial{s: s, f: f, expected: expected, size: expectedSize, h: sha256.New(), chunkSize: o.chunkSize, want: o.wantChunks}
	if p.chunkSize != 0 {
		p.ch = newChunker(p.chunkSize, p.want)
	}
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
// written by an earlier (perhaps killed) process. With a chunk list it
// finds every chunk already there, in order or not.
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
	if p.want != nil {
		return p.loadChunks(ctx, size)
	}
	var hw io.Writer = p.h
	if p.ch != nil {
		hw = parallelHashes{p.h, p.ch}
	}
	n, err := copyHashed(ctx, nil, io.NewSectionReader(p.f, 0, size), hw, 0, -1, nil)
	if err != nil {
		return err
	}
	p.off = n
	_, err = p.f.Seek(n, io.SeekStart)
	return err
}

// loadChunks checks each chunk of the file (of fileSize bytes) against
// the chunk list; the contiguous prefix of good chunks is the offset.
func (p *Partial) loadChunks(ctx context.Context, fileSize int64) error {
	n := ChunkCount(p.size, p.chunkSize)
	p.have = make([]bool, n)
	buf := make([]byte, p.chunkSize)
	prefix := true
	for i := range n {
		if err := ctx.Err(); err != nil {
			return err
		}
		start, length := i*p.chunkSize, p.chunkLen(i)
		if start+length > fileSize {
			prefix = false
			continue
		}
		b := buf[:length]
		if _, err := p.f.ReadAt(b, start); err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		p.have[i] = bytes.Equal(sum[:], p.sum(i))
		prefix = prefix && p.have[i]
		if prefix {
			p.h.Write(b)
			p.ch.sums = append(p.ch.sums, sum[:]...)
			p.off = start + length
		}
	}
	_, err := p.f.Seek(p.off, io.SeekStart)
	return err
}

func (p *Partial) chunkLen(i int64) int64 { return min(p.chunkSize, p.size-i*p.chunkSize) }

func (p *Partial) sum(i int64) []byte { return p.want[i*ChunkSumSize : (i+1)*ChunkSumSize] }

// Offset is the number of bytes already downloaded.
func (p *Partial) Offset() int64 { return p.off }

// Digest is the blob being downloaded.
func (p *Partial) Digest() digest.Digest { return p.expected }

// Size is the expected size, -1 if unknown.
func (p *Partial) Size() int64 { return p.size }

// ReadAt reads bytes the partial already holds: below [Partial.Offset],
// or in chunks held ([Partial.Has]). They are the bytes that were hashed
// or checked, so a caller may read a blob's header from them before
// fetching the rest, or serve a VM from them.
func (p *Partial) ReadAt(b []byte, off int64) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return 0, wrap("read partial", string(p.expected), ErrClosed)
	}
	if off < 0 || !p.holds(off, int64(len(b))) {
		return 0, wrap("read partial", string(p.expected), fmt.Errorf("bytes %d+%d are not all held", off, len(b)))
	}
	return p.f.ReadAt(b, off)
}

// holds reports whether [off, off+n) is all held.
func (p *Partial) holds(off, n int64) bool {
	if off+n <= p.off {
		return true
	}
	if p.have == nil || off+n > p.size {
		return false
	}
	for i := off / p.chunkSize; i*p.chunkSize < off+n; i++ {
		if !p.have[i] && (i+1)*p.chunkSize > p.off {
			return false
		}
	}
	return true
}

// Has reports whether chunk i is held (always false without a chunk
// list).
func (p *Partial) Has(i int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.have != nil && i >= 0 && i < int64(len(p.have)) && (p.have[i] || (i+1)*p.chunkSize <= p.off)
}

// WriteChunk writes chunk i (data, its whole length) at its place, after
// checking it against the chunk list: a chunk that does not match is not
// written, and the error matches [ErrChunkMismatch]. It needs a chunk list
// ([WithChunkList]). A chunk that lands at Offset extends it, over every
// chunk held after it.
func (p *Partial) WriteChunk(i int64, data []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	subject := string(p.expected)
	switch {
	case p.done:
		return wrap("write chunk", subject, ErrClosed)
	case p.want == nil:
		return wrap("write chunk", subject, errors.New("no chunk list"))
	case i < 0 || i >= int64(len(p.have)) || int64(len(data)) != p.chunkLen(i):
		return wrap("write chunk", subject, fmt.Errorf("chunk %d of %d bytes: not a chunk of this blob", i, len(data)))
	}
	if sum := sha256.Sum256(data); !bytes.Equal(sum[:], p.sum(i)) {
		return wrap("write chunk", subject, &chunkMismatch{index: i})
	}
	if _, err := p.f.WriteAt(data, i*p.chunkSize); err != nil {
		return wrap("write chunk", subject, notWritable(err))
	}
	p.have[i] = true
	return wrap("write chunk", subject, p.extend(i, data))
}

// extend moves Offset over the chunks held after it, hashing their bytes
// into the digest, so that the download goes on after them. chunk, if not
// nil, holds the bytes of chunk i, just written: they need not be read
// back. A whole chunk was checked against the list when it was written,
// so its sum goes into the list as it is, not hashed a second time.
func (p *Partial) extend(i int64, chunk []byte) error {
	for p.have != nil && p.off < p.size && p.have[p.off/p.chunkSize] {
		k := p.off / p.chunkSize
		start := k * p.chunkSize
		end := start + p.chunkLen(k)
		var b []byte
		if k == i && chunk != nil {
			b = chunk[p.off-start:]
		} else {
			b = make([]byte, end-p.off)
			if _, err := p.f.ReadAt(b, p.off); err != nil {
				return err
			}
		}
		p.h.Write(b)
		if p.off == start {
			// The chunker holds whole chunks only, up to off.
			p.ch.sums = append(p.ch.sums, p.sum(k)...)
		} else if _, err := p.ch.Write(b); err != nil {
			// The bytes before off in this chunk came from a stream
			// and were not those of the chunk.
			return err
		}
		p.off = end
	}
	_, err := p.f.Seek(p.off, io.SeekStart)
	return err
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
	var hw io.Writer = p.h
	if p.ch != nil {
		hw = parallelHashes{p.h, p.ch}
	}
	n, err := copyHashed(ctx, p.f, r, hw, p.off, p.size, progress)
	p.off += n
	if err == nil && p.have != nil {
		for i := range p.off / p.chunkSize {
			p.have[i] = true
		}
		err = p.extend(-1, nil)
	}
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
	if err == nil && p.ch != nil {
		info.Chunks = p.ch.list()
	}
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
