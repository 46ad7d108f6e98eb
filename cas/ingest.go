package cas

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cangallo/canga/internal/atomicfile"
	"github.com/cangallo/canga/internal/panics"
	"github.com/opencontainers/go-digest"
)

// Big buffers: the data is disk images, and small writes (io.Copy's 32 KiB,
// or whatever a network reader happens to return) cost system calls.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, bufSize)
	return &b
}}

// writebackEvery is how many bytes copyHashed writes to a file between
// two startWriteback calls.
const writebackEvery = 8 << 20

// pipelineDepth is how many buffers copyHashed keeps in flight when it
// writes what it reads (a download): the hashers may fall this many
// buffers behind the reader before it waits. Two would do on an idle
// machine; with the server and the hashers sharing two cores, the
// scheduler's jitter stalls a short pipeline (pull oci:// went from
// 0.36-0.67 s to 0.30-0.34 s for 162 MiB). Reading a local file to hash
// it, two buffers are enough and cost less memory.
const (
	pipelineDepth     = 4
	hashPipelineDepth = 2
)

// copyHashed copies r into w (w may be nil: hash only) and h, in chunks of up
// to bufSize. start is the number of bytes already behind r (a resumed
// download) and limit, when >= 0, the total the data must not exceed: reading
// stops with a *SizeMismatchError as soon as it would, so an endless stream
// costs at most one buffer more than the expected size. progress, if not nil,
// receives start plus the bytes copied so far. Errors of r are wrapped in
// *sourceError. When it returns, every byte it counts has been written and
// hashed.
//
// Hashing (the blob's digest and, with a chunk list, a second SHA-256 of
// every chunk) costs about as much as reading and writing, so each hash
// runs on a goroutine of its own, up to pipelineDepth buffers behind the
// reader: on two cores a download goes at the speed of the slowest of
// them, not of their sum.
func copyHashed(ctx context.Context, w io.Writer, r io.Reader, h io.Writer, start, limit int64, progress func(int64)) (n int64, err error) {
	hs, ok := h.(parallelHashes)
	if !ok {
		hs = parallelHashes{h}
	}
	// A buffer is free again once every hasher is done with it: the last
	// one to finish it hands it back.
	type job struct {
		buf     *[]byte
		n       int
		pending *atomic.Int32
	}
	depth := pipelineDepth
	if w == nil {
		depth = hashPipelineDepth
	}
	// A nil in free is a buffer not taken from the pool yet: a small blob
	// (a chunk list, an index) needs one, not depth.
	free := make(chan *[]byte, depth)
	for range depth {
		free <- nil
	}
	toHash := make([]chan job, len(hs))
	hashed := make(chan error, len(hs))
	var hashFailed atomic.Bool
	for i, h := range hs {
		toHash[i] = make(chan job, depth)
		go func() {
			var herr error
			for j := range toHash[i] {
				if herr == nil {
					// After an error, only drain: the reader stops at
					// its next buffer.
					if herr = hashBuffer(h, (*j.buf)[:j.n]); herr != nil {
						hashFailed.Store(true)
					}
				}
				if j.pending.Add(-1) == 0 {
					free <- j.buf
				}
			}
			hashed <- herr
		}()
	}
	defer func() {
		for _, c := range toHash {
			close(c)
		}
		var herrs []error
		for range hs {
			if herr := <-hashed; herr != nil {
				herrs = append(herrs, herr)
			}
		}
		// Every buffer is back once the hashers are done.
		for range depth {
			if bp := <-free; bp != nil {
				bufPool.Put(bp)
			}
		}
		if len(herrs) > 0 {
			err = errors.Join(append([]error{err}, herrs...)...)
		}
	}()

	f, _ := w.(*os.File)
	var unsynced int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if hashFailed.Load() {
			return n, nil // the deferred wait returns the hasher's error
		}
		bp := <-free
		if bp == nil {
			bp = bufPool.Get().(*[]byte)
		}
		buf := *bp
		// ReadFull fills the buffer so that the writes are big however small
		// the reader's chunks are.
		m, rerr := io.ReadFull(r, buf)
		if rerr == io.ErrUnexpectedEOF {
			rerr = io.EOF
		}
		if limit >= 0 && start+n+int64(m) > limit {
			free <- bp
			return n, &SizeMismatchError{Expected: limit, Actual: start + n + int64(m), Longer: true}
		}
		if m == 0 {
			free <- bp
		} else {
			if w != nil {
				if _, err := w.Write(buf[:m]); err != nil {
					free <- bp
					return n, err
				}
			}
			pending := new(atomic.Int32)
			pending.Store(int32(len(toHash)))
			for _, c := range toHash {
				c <- job{buf: bp, n: m, pending: pending}
			}
			n += int64(m)
			if unsynced += int64(m); f != nil && unsynced >= writebackEvery {
				startWriteback(f)
				unsynced = 0
			}
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

// parallelHashes are hashes that copyHashed feeds each on a goroutine of
// its own (the blob's digest and its chunk list: SHA-256 runs at about
// 1.4 GB/s, slower than a download over loopback). Written to directly,
// it writes to each in turn.
type parallelHashes []io.Writer

func (hs parallelHashes) Write(p []byte) (int, error) {
	for _, h := range hs {
		if _, err := h.Write(p); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// hashBuffer writes b to h; a panic (a bug in a hash, or in the chunk
// list's) is an error, and the hashing goroutine goes on draining.
func hashBuffer(h io.Writer, b []byte) (err error) {
	defer panics.Recover(&err, errInternal, func() string { return "hashing" })
	_, err = h.Write(b)
	return err
}

// errInternal is a bug of canga's own (a panic) met while hashing.
var errInternal = errors.New("cas: internal error")

// Ingest stores the bytes of r as a blob and returns its digest and size.
//
// expected, if not empty, is the digest the bytes must have, and expectedSize,
// if not -1, their length; a mismatch is a [*DigestMismatchError] or a
// [*SizeMismatchError] and stores nothing. A stream longer than expectedSize
// is not read to its end. If the blob named expected is already stored, r is
// not read at all. The data goes to a temp file in .tmp/, hashed on the way,
// and becomes a blob only when complete and checked; on any error the temp
// file is removed.
func (s *Store) Ingest(ctx context.Context, r io.Reader, expected digest.Digest, expectedSize int64, progress func(n int64), opts ...Option) (BlobInfo, error) {
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
		info, ok, err := s.existing(expected, expectedSize, opts)
		if ok || err != nil {
			if err == nil && progress != nil {
				progress(info.Size)
			}
			return info, wrap("ingest", subject, err)
		}
	}
	if r == nil {
		return BlobInfo{}, wrap("ingest", subject, errors.New("nil reader"))
	}
	o, err := parseOptions(opts)
	if err != nil {
		return BlobInfo{}, wrap("ingest", subject, err)
	}
	tf, err := s.createTemp("ingest-*")
	if err != nil {
		return BlobInfo{}, wrap("ingest", subject, err)
	}
	defer tf.Discard() // no-op once published; removes the temp file on every error path

	h := sha256.New()
	hw, ch := hashers(h, o)
	n, err := copyHashed(ctx, tf.File, r, hw, 0, expectedSize, progress)
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
	if err := runChecks(opts, tf.File, n); err != nil {
		return BlobInfo{}, wrap("ingest", subject, err)
	}
	info, err := s.publishTemp(tf, actual, n)
	if err != nil {
		return BlobInfo{}, wrap("ingest", string(actual), err)
	}
	info.Chunks = chunkList(ch)
	return info, nil
}

func chunkList(c *chunker) []byte {
	if c == nil {
		return nil
	}
	return c.list()
}

// publish makes the temp file f, whose flock the caller holds and whose bytes
// hash to d, the blob d. It always consumes f: on return f is closed and its
// temp name is gone, renamed or removed, whatever the outcome.
func (s *Store) publish(f *os.File, d digest.Digest, size int64) (BlobInfo, error) {
	tmp := f.Name()
	target := s.blobPath(d)
	// Read-only before the rename, so that no crash can leave a writable
	// blob; renamed while the flock is still held, so that gc cannot take
	// the temp file away between Close and rename; never over an existing
	// blob, which may be in use by a VM.
	err := atomicfile.Publish(f, target, blobPerm, true)
	if errors.Is(err, fs.ErrExist) {
		// Someone stored the same bytes first: equal names, equal bytes.
		fi, lerr := os.Lstat(target)
		if lerr == nil && !fi.Mode().IsRegular() {
			lerr = fmt.Errorf("%s exists and is not a regular file", target)
		}
		rerr := os.Remove(tmp)
		cerr := f.Close()
		if err := errors.Join(lerr, rerr, cerr); err != nil {
			return BlobInfo{}, err
		}
		return BlobInfo{Digest: d, Size: fi.Size(), Mode: fi.Mode().Perm()}, nil
	}
	if err != nil {
		if _, serr := os.Lstat(tmp); serr == nil {
			// Not renamed: remove before Close, while the flock keeps gc
			// off the name.
			_ = os.Remove(tmp) // best effort: err is what the caller needs
		}
		_ = f.Close()
		// A failure after the rename is the durability of the directory,
		// which the caller must hear too; the blob's bytes were checked.
		return BlobInfo{}, notWritable(err)
	}
	if err := f.Close(); err != nil {
		return BlobInfo{}, err
	}
	return BlobInfo{Digest: d, Size: size, Mode: blobPerm}, nil
}

// Existing checks a blob the store already has against what a write
// would expect of it, without hashing it again: its size (unless -1) and
// the options' checks. ok is false, with no error, when the blob is not
// there.
func (s *Store) Existing(d digest.Digest, size int64, opts ...Option) (info BlobInfo, ok bool, err error) {
	if err := ValidateDigest(d); err != nil {
		return BlobInfo{}, false, wrap("check", "", err)
	}
	info, ok, err = s.existing(d, size, opts)
	return info, ok, wrap("check", string(d), err)
}

func (s *Store) existing(d digest.Digest, size int64, opts []Option) (info BlobInfo, ok bool, err error) {
	fi, err := s.lstatBlob(d)
	if errors.Is(err, ErrNotFound) {
		return BlobInfo{}, false, nil
	}
	if err != nil {
		return BlobInfo{}, false, err
	}
	if size >= 0 && fi.Size() != size {
		return BlobInfo{}, true, &SizeMismatchError{Expected: size, Actual: fi.Size()}
	}
	info = BlobInfo{Digest: d, Size: fi.Size(), Mode: fi.Mode().Perm()}
	if len(opts) > 0 {
		o, err := parseOptions(opts)
		if err != nil {
			return BlobInfo{}, true, err
		}
		f, err := s.openBlob(d)
		if err != nil {
			return BlobInfo{}, true, err
		}
		defer f.Close() // read-only
		if err := runChecks(opts, f, fi.Size()); err != nil {
			return BlobInfo{}, true, fmt.Errorf("stored blob %s: %w", d, err)
		}
		if o.chunkSize != 0 {
			if info.Chunks, err = ChunkList(io.NewSectionReader(f, 0, fi.Size()), o.chunkSize); err != nil {
				return BlobInfo{}, true, err
			}
		}
	}
	return info, true, nil
}

// Option adds a requirement to a write into the store.
type Option func(*options)

type options struct {
	checks    []func(ra io.ReaderAt, size int64) error
	chunkSize int64 // WithChunks: compute the chunk list
	// WithChunkList (partials only): the chunks must be these.
	wantChunks []byte
}

func parseOptions(opts []Option) (options, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.chunkSize != 0 {
		if err := CheckChunkSize(o.chunkSize); err != nil {
			return o, err
		}
	}
	return o, nil
}

// WithCheck has a write call check with the blob's complete bytes, hashed
// and found as expected, before the blob is published (or, when it is
// already stored, with the stored blob): an error refuses it, and a new
// blob is removed. It says what a digest cannot: that a blob from another
// repository is a qcow2 file naming the right backing file, say.
func WithCheck(check func(ra io.ReaderAt, size int64) error) Option {
	return func(o *options) { o.checks = append(o.checks, check) }
}

func runChecks(opts []Option, ra io.ReaderAt, size int64) error {
	o, err := parseOptions(opts)
	if err != nil {
		return err
	}
	for _, check := range o.checks {
		if err := check(ra, size); err != nil {
			return err
		}
	}
	return nil
}
