package repo

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cangallo/canga/internal/readahead"

	"github.com/cangallo/canga/internal/panics"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// DefaultParallel is how many blobs [Repo.Copy] transfers at once.
const DefaultParallel = 4

// CopyOptions says how [Repo.Copy] goes.
type CopyOptions struct {
	// Tag names the image in the destination, a local repository.
	Tag string
	// Parallel bounds the blobs transferred at once (DefaultParallel).
	Parallel int
	// VerifyIDs has every image transferred checked against its image ID
	// (its content hashed over its chain) before it enters the index: for
	// sources whose IDs nothing vouches for, such as a registry's config.
	VerifyIDs bool
	// Progress hears, for each image whose blob is being transferred,
	// the bytes done and the blob's size (-1 while unknown). done can go
	// back (a download that starts over). It is called from several
	// goroutines, one call at a time, and must be quick.
	Progress func(id digest.Digest, done, size int64)
}

// CopyResult says what [Repo.Copy] did.
type CopyResult struct {
	// Copied are the images whose blobs were transferred, base first;
	// the others of the chain were there already.
	Copied []digest.Digest
	// Tagged is the image the tag was moved from, if it moved.
	Moved digest.Digest
}

// Copy copies image id of src, whose index is six, and its ancestors into
// r: every way an image enters a repository from another (pull, import,
// a registry's pull) is this one operation, with one set of checks.
//
//   - A blob with a digest is checked against it while it streams, and
//     against its size; its header must name exactly its parent's blob as
//     backing file, in format qcow2, with the virtual size of the index,
//     and no external data file. Nothing that fails enters the store.
//   - A Cangallo (version 0) image has no blob digest: its content must
//     hash to its image ID, over the chain of its parent.
//   - A download that breaks is kept (cas partials) and goes on from where
//     it stopped, in this process or the next; bytes of an earlier attempt
//     that turn out bad are fetched again, once.
//   - A source's file on this machine is copied, or cloned where the file
//     system can, and hashed as it is copied; never linked.
//   - Blobs are transferred in parallel (opt.Parallel); a Cangallo image
//     is verified after its parent.
//
// When r is the cache of a remote, the blobs are stored as that remote's
// index (six) lists them, without a lock: the cached index already names
// them, so gc keeps them. Into a local repository, the copy runs under the
// repository lock, and the images enter its index with their entries of
// six; a blob whose parent r holds as other bytes (another compression, a
// Cangallo file) gets r's parent blob as its backing file, which makes it
// a new blob with the same image ID. Images r has already are kept.
func (r *Repo) Copy(ctx context.Context, src Source, six *index.Index, id digest.Digest, opt CopyOptions) (*CopyResult, error) {
	chain, err := six.Chain(id)
	if err != nil {
		return nil, err
	}
	slices.Reverse(chain)
	if r.Remote() {
		c, err := r.newCopier(src, six, chain, nil, opt)
		if err != nil {
			return nil, err
		}
		res, err := c.run(ctx)
		if err == nil && opt.VerifyIDs {
			err = c.verifyIDs(ctx)
		}
		if err != nil {
			return nil, err
		}
		return res, nil
	}
	var res *CopyResult
	err = r.Update(ctx, func(ix *index.Index) error {
		c, err := r.newCopier(src, six, chain, ix, opt)
		if err != nil {
			return err
		}
		// A failed copy into a local repository leaves it as it was: the
		// blobs it stored before the failure go again (the lock is ours,
		// so they are nobody else's).
		before, _, err := r.store.Digests(ctx)
		if err != nil {
			return err
		}
		if res, err = c.run(ctx); err == nil && opt.VerifyIDs {
			err = c.verifyIDs(ctx)
		}
		if err == nil {
			err = c.record(ix, id, res)
		}
		if err != nil {
			return errors.Join(err, c.removeNew(before))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// copier is one run of Copy.
type copier struct {
	r     *Repo
	src   Source
	items []*copyItem // the chain, base first
	cache bool        // r is a remote's cache: blobs only, as the source has them
	opt   CopyOptions
	mu    sync.Mutex // serialises opt.Progress
	// stored are the blobs (and chunk lists) this copy put in the store,
	// for removeNew: an item can fail after its blob is in.
	smu    sync.Mutex
	stored []digest.Digest
}

func (c *copier) noteStored(d digest.Digest) {
	c.smu.Lock()
	defer c.smu.Unlock()
	c.stored = append(c.stored, d)
}

// copyItem is one image of the chain being copied.
type copyItem struct {
	id     digest.Digest
	se     *index.Entry // the source's entry
	expect expect       // what the source's file must say
	// have: the destination has the image already; entry and path are
	// its.
	have bool
	// direct: the blob is stored as the source has it (same digest);
	// otherwise it is rewritten to name the destination's parent blob.
	direct bool
	// moved: bytes were transferred for it (it was not there already).
	moved bool
	// entry is the destination's entry once the blob is stored, and path
	// the blob's file.
	entry *index.Entry
	path  string
	done  chan struct{} // closed when entry and path are set
}

func (r *Repo) newCopier(src Source, six *index.Index, chain []digest.Digest, dix *index.Index, opt CopyOptions) (*copier, error) {
	c := &copier{r: r, src: src, cache: dix == nil, opt: opt}
	for i, cid := range chain {
		se := six.Images[cid]
		it := &copyItem{id: cid, se: se, done: make(chan struct{})}
		it.expect = expect{virtualSize: se.VirtualSize, legacy: se.Blob == ""}
		var parent *copyItem
		if i > 0 {
			parent = c.items[i-1]
			pe := parent.se
			switch {
			case se.Blob == "":
				it.expect.backing = index.LegacyFileName(parent.id)
			case pe.Blob == "":
				return nil, fmt.Errorf("image %s of %s has a blob digest but its parent %s has none: its blob cannot name its parent", index.ShortID(cid), src, index.ShortID(parent.id))
			default:
				it.expect.backing = pe.Blob.Encoded()
			}
		}
		if dix != nil {
			if de, err := dix.Entry(cid); err == nil && r.Present(de) {
				p, err := r.BlobPath(de)
				if err != nil {
					return nil, err
				}
				it.have, it.entry, it.path = true, de, p
				close(it.done)
			}
		}
		if !it.have && se.Blob != "" {
			// Kept as it is, unless the destination holds the parent as
			// other bytes than the source's: then it must name those.
			it.direct = c.cache || parent == nil || (parent.entry != nil && parent.entry.Blob == parent.se.Blob) || (!parent.have && parent.direct)
		}
		c.items = append(c.items, it)
	}
	return c, nil
}

func (c *copier) parallel() int {
	if c.opt.Parallel > 0 {
		return c.opt.Parallel
	}
	return DefaultParallel
}

// progress returns the progress callback of item it.
func (c *copier) progress(it *copyItem, size int64) func(done int64) {
	if c.opt.Progress == nil {
		return nil
	}
	return func(done int64) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.opt.Progress(it.id, done, size)
	}
}

func (c *copier) run(ctx context.Context) (*CopyResult, error) {
	res := &CopyResult{}
	sem := make(chan struct{}, c.parallel())
	g, gctx := errgroup.WithContext(ctx)
	for i, it := range c.items {
		if it.have {
			continue
		}
		g.Go(func() (err error) {
			defer panics.Recover(&err, ErrInternal, func() string { return "copying " + index.ShortID(it.id) + " from " + c.src.String() })
			var parent *copyItem
			if i > 0 {
				parent = c.items[i-1]
			}
			if err := c.copyItem(gctx, sem, it, parent); err != nil {
				verb := "copy"
				if c.cache {
					verb = "pull"
				}
				return fmt.Errorf("%s %s from %s: %w", verb, index.ShortID(it.id), c.src, err)
			}
			close(it.done)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = errors.Join(ctx.Err(), err) // the caller's cancel caused the rest
		}
		return nil, err
	}
	for _, it := range c.items {
		if it.moved {
			res.Copied = append(res.Copied, it.id)
		}
	}
	return res, nil
}

// record puts the copied images into the destination's index, and the
// tag.
func (c *copier) record(ix *index.Index, id digest.Digest, res *CopyResult) error {
	for _, it := range c.items {
		if it.have {
			continue
		}
		if err := ix.Put(it.id, it.entry); err != nil {
			return err
		}
	}
	if c.opt.Tag == "" {
		return nil
	}
	prev, err := ix.SetTag(c.opt.Tag, id)
	if err != nil {
		return err
	}
	if prev != id {
		res.Moved = prev
	}
	return nil
}

// removeNew removes the blobs the copy stored that were not among before.
func (c *copier) removeNew(before []digest.Digest) error {
	had := make(map[digest.Digest]bool, len(before))
	for _, b := range before {
		had[b] = true
	}
	var errs []error
	c.smu.Lock()
	defer c.smu.Unlock()
	for _, d := range c.stored {
		if had[d] {
			continue
		}
		had[d] = true // once
		if err := c.r.store.Remove(d); err != nil && !errors.Is(err, cas.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// acquire takes a transfer slot.
func acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *copier) copyItem(ctx context.Context, sem chan struct{}, it, parent *copyItem) error {
	s := c.r.store
	if it.direct {
		if err := acquire(ctx, sem); err != nil {
			return err
		}
		info, err := c.storeBlob(ctx, it)
		<-sem
		if err != nil {
			return err
		}
		c.noteStored(info.Digest)
		return c.finish(ctx, it, info, chunkSizeOf(it.se), it.se.Chunks)
	}
	if c.cache && c.r.Present(it.se) {
		// A Cangallo image pulled before: its header is checked again.
		p, err := c.r.BlobPath(it.se)
		if err != nil {
			return err
		}
		if err := checkFile(p, it.expect); err != nil {
			return err
		}
		it.entry, it.path = it.se, p
		return nil
	}
	if err := acquire(ctx, sem); err != nil {
		return err
	}
	it.moved = true
	tf, n, hdr, err := c.fetchTemp(ctx, it)
	<-sem
	if err != nil {
		return err
	}
	defer tf.Discard()
	if parent != nil {
		select {
		case <-parent.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if it.se.Blob == "" {
		if err := c.verifyLegacy(ctx, it, parent, tf.File, n); err != nil {
			return err
		}
	}
	if c.cache {
		// A Cangallo image in the cache of its remote: kept as HEX.qcow2
		// beside the index, where its backing name resolves. The backing
		// format it was verified with is written down, so that nobody
		// probes the format of a backing file.
		if hdr.BackingFile != "" && hdr.BackingFormat == "" {
			if err := qcow2.SetBacking(tf.File, n, hdr.BackingFile, qcow2.FormatQcow2); err != nil {
				return fmt.Errorf("record the backing format: %w", err)
			}
		}
		name := index.LegacyFileName(it.id)
		if err := s.KeepFile(tf, name, 0o444); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		it.entry, it.path = it.se, filepath.Join(c.r.Dir(), name)
		return nil
	}
	// Name the destination's parent blob, which has the parent's content
	// but other bytes than the source's.
	x := expect{virtualSize: it.se.VirtualSize}
	if parent != nil {
		x.backing = parent.entry.Blob.Encoded()
	}
	format := ""
	if x.backing != "" {
		format = qcow2.FormatQcow2
	}
	if err := qcow2.SetBacking(tf.File, n, x.backing, format); err != nil {
		return err
	}
	info, err := s.CommitFile(ctx, tf, "", nil, x.option(), cas.WithChunks(DefaultChunkSize))
	if err != nil {
		return err
	}
	c.noteStored(info.Digest)
	// Other bytes than the source's: a chunk list of their own.
	return c.finish(ctx, it, info, DefaultChunkSize, "")
}

// finish records where the blob of it is in the destination, and keeps
// its chunk list (info.Chunks, in chunks of chunkSize), which must have
// the digest wantChunks when the source's index gives one.
func (c *copier) finish(ctx context.Context, it *copyItem, info cas.BlobInfo, chunkSize int64, wantChunks digest.Digest) error {
	p, err := c.r.store.Path(info.Digest)
	if err != nil {
		return err
	}
	e := *it.se
	e.Blob, e.BlobSize, e.Legacy = info.Digest, info.Size, nil
	e.Chunks, e.ChunkSize = "", 0
	// A remote's cache keeps the lists its remote's index names, and no
	// other: its index is the remote's.
	if !c.cache || wantChunks != "" {
		if err := c.r.setChunks(ctx, &e, info, chunkSize, wantChunks); err != nil {
			return err
		}
		c.noteStored(e.Chunks)
	}
	if e.Created.IsZero() {
		e.Created = time.Now().UTC().Truncate(time.Second)
	}
	it.entry, it.path = &e, p
	return nil
}

// storeBlob stores the blob of it as the source has it, computing its
// chunk list on the way (BlobInfo.Chunks). The chunk list is not
// downloaded: the blob's bytes make it, in the same pass that checks their
// digest, and finish checks it against the source's index. When the
// destination has the list already (a lazy reader stored it), the
// partial is opened with it, so that the chunks the reader kept, in any
// order, are checked and the download goes on around them.
func (c *copier) storeBlob(ctx context.Context, it *copyItem) (cas.BlobInfo, error) {
	s, blob, size := c.r.store, it.se.Blob, it.se.BlobSize
	progress := c.progress(it, size)
	opts := []cas.Option{it.expect.option()}
	if !c.cache || it.se.Chunks != "" {
		opts = append(opts, cas.WithChunks(chunkSizeOf(it.se)))
	}
	if list, ok, err := c.r.storedChunkList(it.se); err != nil {
		return cas.BlobInfo{}, err
	} else if ok {
		opts[len(opts)-1] = cas.WithChunkList(it.se.ChunkSize, list)
	}
	if info, ok, err := s.Existing(blob, size, opts...); ok || err != nil {
		return info, err
	}
	it.moved = true
	if fs, ok := c.src.(fileSource); ok {
		p, err := fs.file(it.id, it.se)
		if err != nil {
			return cas.BlobInfo{}, err
		}
		return s.CopyFile(ctx, p, blob, size, progress, opts...)
	}
	for attempt := 0; ; attempt++ {
		p, err := s.OpenPartial(ctx, blob, size, opts[1:]...)
		if errors.Is(err, cas.ErrExists) {
			// There already, or another puller finished it meanwhile.
			info, _, err := s.Existing(blob, size, opts...)
			return info, err
		}
		if err != nil {
			return cas.BlobInfo{}, err
		}
		if err := c.fill(ctx, it, p, progress); err != nil {
			if errors.Is(err, ErrRefused) {
				_ = p.Discard() // of no use to a later attempt
			} else {
				_ = p.Close() // kept for the next attempt
			}
			return cas.BlobInfo{}, err
		}
		info, err := p.Commit(ctx, nil, nil, it.expect.option())
		if errors.Is(err, cas.ErrDigestMismatch) && attempt == 0 {
			// cas removed the partial. A download that was resumed (in
			// this run, or from an earlier one's partial) may have bad
			// bytes from before the break: start over, once.
			continue
		}
		return info, err
	}
}

// fill downloads the rest of the blob of it into p. The header is checked
// as soon as its cluster is there, before the rest is fetched: a blob
// that names a host file is refused early, whatever size its index gives.
// A source that fails in the middle is asked again from the byte where
// it stopped, until it fails maxSourceFailures times without progress
// (the HTTP transport does the same on its own; a registry's blob stream
// and a file do not).
func (c *copier) fill(ctx context.Context, it *copyItem, p *cas.Partial, progress func(int64)) error {
	size := it.se.BlobSize
	head := headLen(size)
	if progress != nil {
		progress(p.Offset())
	}
	if p.Offset() >= head {
		if err := it.expect.check(p, size); err != nil {
			return err
		}
	}
	failures := 0
	for p.Offset() < size {
		start := p.Offset()
		err := c.appendFrom(ctx, it, p, head, progress)
		if err == nil {
			return nil // at the end of the source; Commit checks the size
		}
		if !errors.Is(err, cas.ErrSource) || ctx.Err() != nil {
			return err
		}
		if p.Offset() > start {
			failures = 0
		}
		if failures++; failures >= maxSourceFailures {
			return err
		}
	}
	return nil
}

// maxSourceFailures bounds the attempts of fill without progress.
const maxSourceFailures = 3

// appendFrom opens the source at p's offset and appends what it gives,
// checking the header once its cluster is complete.
func (c *copier) appendFrom(ctx context.Context, it *copyItem, p *cas.Partial, head int64, progress func(int64)) error {
	src, err := c.src.Open(ctx, it.id, it.se, p.Offset())
	if err != nil {
		return err
	}
	// Receiving overlaps writing and hashing.
	rc := readahead.New(src)
	defer func() {
		src.Close() // first: it unblocks a read-ahead waiting on the network
		rc.Close()
	}()
	if p.Offset() < head {
		if _, err := p.Append(ctx, io.LimitReader(rc, head-p.Offset()), progress); err != nil {
			return err
		}
		if p.Offset() < head {
			return fmt.Errorf("the blob ends at byte %d: %w", p.Offset(), &cas.SizeMismatchError{Expected: it.se.BlobSize, Actual: p.Offset()})
		}
		if err := it.expect.check(p, it.se.BlobSize); err != nil {
			return err
		}
	}
	_, err = p.Append(ctx, rc, progress)
	if err == nil && p.Offset() < it.se.BlobSize {
		// The source ended early: its file is shorter than the index
		// says. The commit reports it; the bytes stay for a later try.
		return nil
	}
	return err
}

// legacyMaxSize bounds the download of a Cangallo image, whose size the
// index does not give: its virtual size plus room for the metadata of the
// densest qcow2 layout (512-byte clusters with extended L2 entries and
// 64-bit refcounts need under 5%), so that an endless response stops.
func legacyMaxSize(virtualSize int64) int64 {
	return virtualSize + virtualSize/16 + 64<<20
}

// fetchTemp downloads the file of it into a temp file of the destination,
// checks its digest (when it has one) and its header, and returns it with
// its size and header.
func (c *copier) fetchTemp(ctx context.Context, it *copyItem) (*cas.TempFile, int64, *qcow2.Header, error) {
	limit, size := it.se.BlobSize, it.se.BlobSize
	if it.se.Blob == "" {
		if it.se.VirtualSize <= 0 {
			return nil, 0, nil, errors.New("no virtual size to bound the download by")
		}
		limit, size = legacyMaxSize(it.se.VirtualSize), -1
	}
	rc, err := c.src.Open(ctx, it.id, it.se, 0)
	if err != nil {
		return nil, 0, nil, err
	}
	defer rc.Close()
	if sz, ok := rc.(interface{ Size() int64 }); ok && size < 0 {
		size = sz.Size()
	}
	tf, err := c.r.store.CreateTemp("copy-*.qcow2")
	if err != nil {
		return nil, 0, nil, err
	}
	fail := func(err error) (*cas.TempFile, int64, *qcow2.Header, error) {
		_ = tf.Discard() // err is what matters
		return nil, 0, nil, err
	}
	h := sha256.New()
	w := &countingWriter{w: io.MultiWriter(tf.File, h), progress: c.progress(it, size)}
	buf := make([]byte, 1<<20)
	n, err := io.CopyBuffer(w, io.LimitReader(rc, limit+1), buf)
	if err != nil {
		return fail(err)
	}
	if n > limit {
		return fail(fmt.Errorf("%w: more than %d bytes for an image of virtual size %d", ErrRefused, limit, it.se.VirtualSize))
	}
	if it.se.Blob != "" {
		if n != it.se.BlobSize {
			return fail(&cas.SizeMismatchError{Expected: it.se.BlobSize, Actual: n})
		}
		if got := digest.NewDigest(digest.SHA256, h); got != it.se.Blob {
			return fail(&cas.DigestMismatchError{Expected: it.se.Blob, Actual: got})
		}
	}
	hdr, err := it.expect.header(tf.File, n)
	if err != nil {
		return fail(err)
	}
	return tf, n, hdr, nil
}

// verifyLegacy checks that the Cangallo image in f (n bytes) has its
// image ID, on top of its parent's files in the destination.
func (c *copier) verifyLegacy(ctx context.Context, it, parent *copyItem, f io.ReaderAt, n int64) error {
	var paths []string
	for _, p := range c.items {
		if p == it {
			break
		}
		paths = append(paths, p.path)
	}
	var opts []qcow2.Option
	if parent != nil {
		below, err := openFiles(paths)
		if err != nil {
			return fmt.Errorf("open the parent chain: %w", err)
		}
		defer below.Close()
		opts = append(opts, qcow2.WithBacking(below))
	}
	img, err := qcow2.Open(f, n, opts...)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	got, err := qcow2.Digest(ctx, img, qcow2.ScanOptions{})
	if err != nil {
		return fmt.Errorf("compute the image ID: %w", err)
	}
	if got != it.id {
		return &ImageIDMismatchError{Expected: it.id, Actual: got}
	}
	return nil
}

// verifyIDs checks the content of every image transferred against its
// image ID, each over the chain of files below it.
func (c *copier) verifyIDs(ctx context.Context) error {
	for i, it := range c.items {
		if !it.moved || it.se.Blob == "" { // a Cangallo image was verified already
			continue
		}
		paths := make([]string, i+1)
		for j := range paths {
			paths[j] = c.items[j].path
		}
		d, err := openFiles(paths)
		if err != nil {
			return err
		}
		got, err := qcow2.Digest(ctx, d, qcow2.ScanOptions{})
		d.Close()
		if err != nil {
			return fmt.Errorf("image %s from %s: %w", index.ShortID(it.id), c.src, err)
		}
		if got != it.id {
			err := fmt.Errorf("image %s from %s: %w", index.ShortID(it.id), c.src, &ImageIDMismatchError{Expected: it.id, Actual: got})
			if c.cache {
				// The blob is the one the remote's index names, but an
				// image whose content is not its ID must not look
				// downloaded. Into a local repository, Copy removes it.
				if rerr := c.r.store.Remove(it.se.Blob); rerr != nil && !errors.Is(rerr, cas.ErrNotFound) {
					err = errors.Join(err, rerr)
				}
			}
			return err
		}
	}
	return nil
}

// countingWriter reports the bytes written so far.
type countingWriter struct {
	w        io.Writer
	n        int64
	progress func(int64)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	if w.progress != nil {
		w.progress(w.n)
	}
	return n, err
}

// checkFile checks the header of a file already in the destination.
func checkFile(p string, x expect) error {
	f, size, err := openFile(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := x.check(f, size); err != nil {
		return fmt.Errorf("stored image %s: %w", p, err)
	}
	return nil
}

// openFiles opens image files as one disk: paths lists a chain base
// first, and each file is opened with the one before it as its backing
// disk, whatever backing file name its header holds (those were checked
// when the files were stored). Close closes every file.
func openFiles(paths []string) (qcow2.Disk, error) {
	if len(paths) > qcow2.MaxChainDepth {
		return nil, fmt.Errorf("chain of %d files, more than %d", len(paths), qcow2.MaxChainDepth)
	}
	var below qcow2.Disk
	fail := func(err error) (qcow2.Disk, error) {
		if below != nil {
			below.Close()
		}
		return nil, err
	}
	for _, p := range paths {
		f, size, err := openFile(p)
		if err != nil {
			return fail(err)
		}
		var opts []qcow2.Option
		if below != nil {
			opts = append(opts, qcow2.WithBacking(below))
		}
		img, err := qcow2.Open(f, size, opts...)
		if err != nil {
			f.Close()
			return fail(fmt.Errorf("%s: %w", p, err))
		}
		below = &fileImage{Image: img, f: f}
	}
	return below, nil
}

// fileImage is an Image that owns its file.
type fileImage struct {
	*qcow2.Image
	f *os.File
}

func (fi *fileImage) Close() error {
	return errors.Join(fi.Image.Close(), fi.f.Close())
}
