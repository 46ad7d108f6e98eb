package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/internal/panics"
	"github.com/cangallo/canga/qcow2"
	"github.com/cangallo/canga/remote"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// partialWait bounds the wait for a partial download another process
// holds.
const partialWait = 5 * time.Second

// DefaultChunkSize is the chunk size of the chunk lists canga writes (SPEC
// §9), chosen by measurement: see bench/RESULTS.md.
const DefaultChunkSize = 1 << 20

var (
	// ErrNoChunks: an image's blob has no chunk list, so it cannot be read
	// before it is pulled.
	ErrNoChunks = errors.New("repo: no chunk list")
	// ErrChunk: a chunk fetched for a lazy read did not match its chunk
	// list; that read fails, and nothing of the chunk is kept.
	ErrChunk = errors.New("repo: chunk refused")
)

// LazyStats count what a lazy image fetched.
type LazyStats struct {
	ChunksFetched int64 `json:"chunks-fetched"`
	BytesFetched  int64 `json:"bytes-fetched"`
	Failures      int64 `json:"failures"`
	// BlobsCompleted are the blobs that became ordinary blobs, every chunk
	// fetched and the whole checked.
	BlobsCompleted int64 `json:"blobs-completed"`
}

// LazyImage is an image of a remote read before it is downloaded (SPEC
// §9): the blobs of its chain that are pulled are read as they are, the
// others chunk by chunk from the remote as reads need them, each chunk
// checked against its blob's chunk list before a byte of it is used or
// kept. Kept chunks go into the blob's partial download, the same one a
// pull resumes; a blob whose chunks are all there is checked against its
// digest and becomes an ordinary blob. Disk is the image's guest-visible
// content.
type LazyImage struct {
	ID    digest.Digest
	Disk  qcow2.Disk
	Size  int64
	blobs []*lazyBlob
	stats *lazyCounters
}

type lazyCounters struct {
	chunks, bytes, failures, completed atomic.Int64
}

// Stats says what was fetched so far.
func (li *LazyImage) Stats() LazyStats {
	return LazyStats{
		ChunksFetched:  li.stats.chunks.Load(),
		BytesFetched:   li.stats.bytes.Load(),
		Failures:       li.stats.failures.Load(),
		BlobsCompleted: li.stats.completed.Load(),
	}
}

// Allocation reports the run of the image's content that starts at off,
// at most length bytes: its length and whether it reads as zeros without
// being stored (unallocated in the whole chain, or zero clusters). It
// reads the chain's tables, fetching their chunks if need be, never its
// data: what canga nbd answers NBD_CMD_BLOCK_STATUS with.
func (li *LazyImage) Allocation(off, length int64) (int64, bool, error) {
	e, err := li.Disk.Extent(off, length)
	return e.Length, e.ReadsZero(), err
}

// Missing is how many bytes of the chain's blobs are not here yet.
func (li *LazyImage) Missing() int64 {
	var n int64
	for _, b := range li.blobs {
		n += b.missing()
	}
	return n
}

// Close closes the image and keeps every chunk fetched for the next use
// (or the next pull).
func (li *LazyImage) Close() error {
	err := li.Disk.Close()
	for _, b := range li.blobs {
		err = errors.Join(err, b.close())
	}
	return err
}

// Prefetch fetches every chunk not here yet, in order, blob by blob from
// the base up, until ctx ends: with a VM running on the image, reads
// still come first, as each fetches its own chunks at once. progress, if
// not nil, hears the bytes still missing.
func (li *LazyImage) Prefetch(ctx context.Context, progress func(missing int64)) error {
	for _, b := range li.blobs {
		for i := range b.count() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := b.ensure(ctx, i); err != nil {
				return err
			}
			if progress != nil {
				progress(li.Missing())
			}
		}
	}
	return nil
}

// OpenLazy opens image id of r, a remote whose cached index is ix, for
// lazy reading. An image whose chain is all pulled is opened as usual.
// The fetches of reads end with ctx.
func (r *Repo) OpenLazy(ctx context.Context, ix *index.Index, id digest.Digest) (*LazyImage, error) {
	chain, err := ix.Chain(id)
	if err != nil {
		return nil, err
	}
	li := &LazyImage{ID: id, stats: &lazyCounters{}}
	src, err := r.remoteSource()
	if err != nil && r.Remote() {
		return nil, err
	}
	var below qcow2.Disk
	fail := func(err error) (*LazyImage, error) {
		if below != nil {
			below.Close()
		}
		for _, b := range li.blobs {
			_ = b.close()
		}
		return nil, err
	}
	// The lazy blobs of the chain are set up at once, each with its chunk
	// list and the chunk that holds its header: until then nothing can be
	// read, and one after the other they would wait for the network in
	// turn.
	lazy, err := r.openLazyBlobs(ctx, src, ix, chain, li.stats)
	if err != nil {
		return nil, err
	}
	li.blobs = lazy
	for i := len(chain) - 1; i >= 0; i-- { // base first
		cid := chain[i]
		e := ix.Images[cid]
		var opts []qcow2.Option
		if below != nil {
			opts = append(opts, qcow2.WithBacking(below))
		}
		var d qcow2.Disk
		if b := lazyOf(lazy, cid); b == nil {
			p, err := r.BlobPath(e)
			if err != nil {
				return fail(err)
			}
			f, size, err := openFile(p)
			if err != nil {
				return fail(err)
			}
			img, err := qcow2.Open(f, size, opts...)
			if err != nil {
				f.Close()
				return fail(fmt.Errorf("%s: %w", index.ShortID(cid), err))
			}
			d = &fileImage{Image: img, f: f}
		} else {
			// What a pull would refuse is not read lazily either: a
			// header that names a host file, an external data file.
			if err := b.x.check(b, e.BlobSize); err != nil {
				return fail(fmt.Errorf("%s: %w", index.ShortID(cid), err))
			}
			img, err := qcow2.Open(b, e.BlobSize, opts...)
			if err != nil {
				return fail(fmt.Errorf("%s: %w", index.ShortID(cid), err))
			}
			d = img
		}
		below = d
	}
	li.Disk, li.Size = below, below.Size()
	return li, nil
}

// openLazyBlobs opens, concurrently, the lazy blobs of the images of
// chain whose blobs are not here, and fetches the first chunk of each.
func (r *Repo) openLazyBlobs(ctx context.Context, src httpSource, ix *index.Index, chain []digest.Digest, stats *lazyCounters) ([]*lazyBlob, error) {
	var missing []digest.Digest
	for _, cid := range chain {
		if !r.Present(ix.Images[cid]) {
			missing = append(missing, cid)
		}
	}
	if len(missing) > 0 && !r.Remote() {
		return nil, fmt.Errorf("%w: %s is missing its blob", ErrNotPulled, index.ShortID(missing[0]))
	}
	blobs := make([]*lazyBlob, len(missing))
	var g errgroup.Group
	for i, cid := range missing {
		g.Go(func() (err error) {
			defer panics.Recover(&err, ErrInternal, func() string { return "opening the blob of " + index.ShortID(cid) })
			b, err := r.lazyBlob(ctx, src, ix, cid, stats)
			if err != nil {
				return err
			}
			blobs[i] = b
			err = b.ensure(ctx, 0)
			if serr := b.listStored(); err == nil && serr != nil {
				err = fmt.Errorf("store the chunk list of %s: %w", index.ShortID(cid), serr)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		for _, b := range blobs {
			if b != nil {
				_ = b.close()
			}
		}
		return nil, err
	}
	return blobs, nil
}

// lazyOf returns the lazy blob of image id among blobs.
func lazyOf(blobs []*lazyBlob, id digest.Digest) *lazyBlob {
	for _, b := range blobs {
		if b.id == id {
			return b
		}
	}
	return nil
}

// lazyBlob is an io.ReaderAt over the blob of image id, held in part in
// its partial download; the chunks missing are fetched from the source,
// checked against the chunk list, and written into the partial.
type lazyBlob struct {
	ctx   context.Context // fetches end with it: a server that stops must not wait for the network
	r     *Repo
	src   httpSource
	id    digest.Digest
	e     *index.Entry
	x     expect
	cs    int64
	stats *lazyCounters
	// listStored waits until the chunk list, fetched from the remote, is
	// in the store (at once if it was there).
	listStored func() error
	bufs       sync.Pool // *[]byte of cs bytes, for chunks being fetched

	mu     sync.RWMutex // readers of p or f hold it shared; completion alone
	p      *cas.Partial // nil once the blob is complete
	f      *os.File     // the blob, once complete
	broken error        // the blob could not be completed: every read fails
	calls  map[int64]*chunkCall
	held   atomic.Int64 // chunks in the partial: all of them make the blob
}

type chunkCall struct {
	done chan struct{}
	err  error
}

func (r *Repo) lazyBlob(ctx context.Context, src httpSource, ix *index.Index, id digest.Digest, stats *lazyCounters) (_ *lazyBlob, err error) {
	e := ix.Images[id]
	if e.Blob == "" || e.Chunks == "" || e.ChunkSize == 0 {
		return nil, fmt.Errorf("%w: %s of %s (pull it)", ErrNoChunks, index.ShortID(id), r.Name())
	}
	list, stored, err := r.chunkList(ctx, src, e)
	if err != nil {
		return nil, fmt.Errorf("chunk list of %s: %w", index.ShortID(id), err)
	}
	// The list is stored while the partial is opened and, by the caller,
	// the header's chunk fetched: it is waited for before this returns an
	// error, and by openLazyBlobs otherwise.
	defer func() {
		if err != nil {
			_ = stored()
		}
	}()
	x := expect{virtualSize: e.VirtualSize}
	if e.Parent != "" {
		x.backing = ix.Images[e.Parent].Blob.Encoded()
	}
	// The partial is held for as long as the image is served: another
	// canga holding it (a pull, a canga nbd of an image on the same
	// base) is reported rather than waited for without end.
	octx, cancel := context.WithTimeout(ctx, partialWait)
	p, err := r.store.OpenPartial(octx, e.Blob, e.BlobSize, cas.WithChunkList(e.ChunkSize, list))
	cancel()
	if errors.Is(err, cas.ErrExists) {
		return nil, fmt.Errorf("%s: pulled meanwhile: open it again", index.ShortID(id))
	}
	if errors.Is(err, cas.ErrBusy) && ctx.Err() == nil {
		return nil, fmt.Errorf("%s: its blob is being fetched by another canga (a pull, or canga nbd of an image of the same chain): %w", index.ShortID(id), err)
	}
	if err != nil {
		return nil, err
	}
	b := &lazyBlob{ctx: ctx, r: r, src: src, id: id, e: e, x: x, cs: e.ChunkSize, stats: stats, p: p, calls: map[int64]*chunkCall{}, listStored: stored}
	for i := range b.count() {
		if p.Has(i) {
			b.held.Add(1)
		}
	}
	if b.held.Load() == b.count() {
		// Every chunk was kept by an earlier run that stopped before
		// the blob was checked.
		if err := b.complete(ctx); err != nil {
			_ = b.close()
			return nil, err
		}
	}
	return b, nil
}

// chunkList returns the chunk list of entry e: from the store, or fetched
// from the remote, checked against its digest, and stored so that the next
// use needs no request. Storing it (a file and two fsyncs) runs while the
// caller goes on; stored waits for it and says whether it failed.
func (r *Repo) chunkList(ctx context.Context, src httpSource, e *index.Entry) (list []byte, stored func() error, err error) {
	done := func() error { return nil }
	size, err := cas.ChunkListSize(e.BlobSize, e.ChunkSize)
	if err != nil {
		return nil, done, err
	}
	if list, ok, err := r.storedChunkList(e); err != nil || ok {
		return list, done, err
	}
	b := make([]byte, size)
	if err := src.c.ReadRange(ctx, src.url, remote.BlobPath(e.Chunks.Encoded()), 0, b, size); err != nil {
		return nil, done, err
	}
	// Checked here, before anything reads it; the store checks again.
	if err := checkChunkListBytes(e, b); err != nil {
		return nil, done, err
	}
	ingested := make(chan error, 1)
	go func() {
		var err error
		defer func() { ingested <- err }()
		defer panics.Recover(&err, ErrInternal, func() string { return "storing chunk list " + string(e.Chunks) })
		_, err = r.store.Ingest(ctx, bytes.NewReader(b), e.Chunks, size, nil)
	}()
	return b, sync.OnceValue(func() error { return <-ingested }), nil
}

func (b *lazyBlob) count() int64 { return cas.ChunkCount(b.e.BlobSize, b.cs) }

func (b *lazyBlob) missing() int64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.p == nil {
		return 0
	}
	var n int64
	for i := range b.count() {
		if !b.p.Has(i) {
			n += min(b.cs, b.e.BlobSize-i*b.cs)
		}
	}
	return n
}

// ReadAt reads the blob, fetching the chunks it needs first. A chunk
// that cannot be fetched, or does not match, fails the read (an I/O error
// for the VM), never gives other bytes.
func (b *lazyBlob) ReadAt(p []byte, off int64) (int, error) {
	size := b.e.BlobSize
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	for i := off / b.cs; i*b.cs < off+n; i++ {
		if err := b.ensure(b.ctx, i); err != nil {
			return 0, err
		}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	var err error
	switch {
	case b.broken != nil:
		err = b.broken
	case b.f != nil:
		_, err = b.f.ReadAt(p[:n], off)
	case b.p != nil:
		_, err = b.p.ReadAt(p[:n], off)
	default:
		err = os.ErrClosed
	}
	if err != nil {
		return 0, err
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// ensure makes chunk i held, fetching it if need be; concurrent callers
// for one chunk share one fetch.
func (b *lazyBlob) ensure(ctx context.Context, i int64) error {
	b.mu.Lock()
	if b.p == nil || b.p.Has(i) {
		b.mu.Unlock()
		return nil
	}
	if c, ok := b.calls[i]; ok {
		b.mu.Unlock()
		<-c.done
		return c.err
	}
	c := &chunkCall{done: make(chan struct{})}
	b.calls[i] = c
	b.mu.Unlock()

	c.err = b.fetch(ctx, i)
	b.mu.Lock()
	delete(b.calls, i)
	b.mu.Unlock()
	close(c.done)
	return c.err
}

// fetch fetches chunk i, checks it and keeps it; the last chunk in makes
// the blob whole.
func (b *lazyBlob) fetch(ctx context.Context, i int64) error {
	length := min(b.cs, b.e.BlobSize-i*b.cs)
	bp, _ := b.bufs.Get().(*[]byte)
	if bp == nil || int64(cap(*bp)) < length {
		nb := make([]byte, b.cs)
		bp = &nb
	}
	// WriteChunk keeps nothing of buf: it is written and hashed.
	defer b.bufs.Put(bp)
	buf := (*bp)[:length]
	if err := b.src.c.ReadRange(ctx, b.src.url, remote.BlobPath(b.e.Blob.Encoded()), i*b.cs, buf, b.e.BlobSize); err != nil {
		b.stats.failures.Add(1)
		return fmt.Errorf("%s chunk %d: %w", index.ShortID(b.id), i, err)
	}
	b.stats.bytes.Add(length)
	b.stats.chunks.Add(1)
	b.mu.RLock()
	var err error
	if b.p != nil { // else completed meanwhile
		err = b.p.WriteChunk(i, buf)
	}
	b.mu.RUnlock()
	if err != nil {
		b.stats.failures.Add(1)
		if errors.Is(err, cas.ErrChunkMismatch) {
			return fmt.Errorf("%w: %s chunk %d from %s: %w", ErrChunk, index.ShortID(b.id), i, b.src, err)
		}
		return err
	}
	if b.held.Add(1) == b.count() {
		return b.complete(ctx)
	}
	return nil
}

// complete publishes the blob once every chunk is there and the whole
// matches its digest (and its header the index), then reads from it.
func (b *lazyBlob) complete(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p == nil {
		return nil
	}
	p := b.p
	b.p = nil
	if _, err := p.Commit(ctx, nil, nil, b.x.option()); err != nil {
		b.broken = fmt.Errorf("%s: %w", index.ShortID(b.id), err)
		return b.broken
	}
	f, err := b.r.store.Open(b.e.Blob)
	if err != nil {
		b.broken = err
		return err
	}
	b.f = f
	b.stats.completed.Add(1)
	return nil
}

func (b *lazyBlob) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var err error
	if b.p != nil {
		err = b.p.Close()
		b.p = nil
	}
	if b.f != nil {
		err = errors.Join(err, b.f.Close())
		b.f = nil
	}
	return err
}
