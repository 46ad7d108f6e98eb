package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
)

// Item is one image of a chain to pull: where its blob is on the server
// and what it must be. [PlanChain] makes the items of an index entry's
// chain.
type Item struct {
	// ImageID is the image's ID; Parent is its parent's, empty for a base.
	ImageID, Parent digest.Digest
	// Path is the blob's place relative to the base URL:
	// blobs/sha256/HEX, or HEX.qcow2 (image ID) for a Cangallo image.
	Path string
	// Blob is the expected blob digest; empty for a Cangallo image.
	Blob digest.Digest
	// Size is the blob's size in bytes; -1 for a Cangallo image.
	Size int64
	// Expect is what the blob's header must say.
	Expect Expect
	// Legacy marks a Cangallo image: downloaded to a temp file, verified
	// by image ID, and kept as HEX.qcow2 beside index.yaml (see
	// [Client.PullBlob]).
	Legacy bool
	// Ancestors are the image IDs of a Cangallo image's ancestors, base
	// first: their files are the chain below it when its image ID is
	// computed.
	Ancestors []digest.Digest
}

// legacyMaxSize bounds the download of a Cangallo image, whose size the
// index does not give: its virtual size plus room for the metadata of
// the densest qcow2 layout (512-byte clusters with extended L2 entries and
// 64-bit refcounts need under 5%), so an endless response stops.
func legacyMaxSize(virtualSize int64) int64 {
	return virtualSize + virtualSize/16 + 64<<20
}

// PullBlob downloads the blob of it into store, resumably, and returns
// what was stored. A blob the store already has is only checked (its
// header, as below). progress, if not nil, receives the number of bytes
// of this blob downloaded so far (it can go back to 0 when a server
// ignores a Range request).
//
// A canga blob goes through a [cas.Partial]: its digest is checked while
// it streams, an interrupted transfer (in this process or a previous one)
// goes on with "Range: bytes=N-", and its header is checked by
// [CheckPulledHeader] as soon as its first cluster has arrived, so that a
// refused blob is never stored.
//
// A Cangallo image (it.Legacy) has no blob digest to name a partial by: it
// goes to a temp file in .tmp/, resumed within this call only. Its header
// is checked, then its image ID is computed over the chain of its
// ancestors' files and the new file, and only a match is kept, as
// STORE/HEX.qcow2 (read-only) beside index.yaml: the layout of a Cangallo
// repository, where the backing names (PARENTHEX.qcow2) resolve as they
// are. Its ancestors must be there first (pull a Cangallo chain base
// first, as [Client.PullChain] does). A backing format extension that
// Cangallo's qemu-img did not write is added (qcow2), which changes no
// guest byte. The returned BlobInfo has no Digest for such an image.
func (c *Client) PullBlob(ctx context.Context, store *cas.Store, baseURL string, it Item, progress func(done int64)) (cas.BlobInfo, error) {
	u, err := resolve(baseURL, it.Path)
	if err != nil {
		return cas.BlobInfo{}, pullError(it, baseURL, err)
	}
	if !it.Legacy {
		info, err := c.pullPartial(ctx, store, u, it, progress)
		return info, pullError(it, u, err)
	}
	if info, ok, err := existingLegacy(store, it); ok || err != nil {
		return info, pullError(it, u, err)
	}
	tf, size, err := c.downloadTemp(ctx, store, u, it, progress, nil)
	if err != nil {
		return cas.BlobInfo{}, pullError(it, u, err)
	}
	info, err := finishLegacy(ctx, store, u, it, tf, size)
	return info, pullError(it, u, err)
}

func pullError(it Item, u string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("remote: pull %s from %s: %w", index.ShortID(it.ImageID), redactURL(u), err)
}

// existing checks a blob the store already has.
func existing(store *cas.Store, d digest.Digest, want Expect) (cas.BlobInfo, error) {
	f, err := store.Open(d)
	if err != nil {
		return cas.BlobInfo{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return cas.BlobInfo{}, err
	}
	if _, err := CheckPulledHeader(f, fi.Size(), want); err != nil {
		return cas.BlobInfo{}, fmt.Errorf("stored blob %s: %w", d, err)
	}
	return store.Stat(d)
}

// legacyPath is where a Cangallo image is kept in store.
func legacyPath(store *cas.Store, id digest.Digest) (string, error) {
	if _, err := index.ParseID(string(id)); err != nil {
		return "", err
	}
	return filepath.Join(store.Dir(), index.LegacyFileName(id)), nil
}

// existingLegacy checks a Cangallo image the store already has.
func existingLegacy(store *cas.Store, it Item) (cas.BlobInfo, bool, error) {
	p, err := legacyPath(store, it.ImageID)
	if err != nil {
		return cas.BlobInfo{}, false, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return cas.BlobInfo{}, false, nil
	}
	if err != nil {
		return cas.BlobInfo{}, true, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return cas.BlobInfo{}, true, err
	}
	if !fi.Mode().IsRegular() {
		return cas.BlobInfo{}, true, fmt.Errorf("%s is not a regular file", p)
	}
	if _, err := CheckPulledHeader(f, fi.Size(), it.Expect); err != nil {
		return cas.BlobInfo{}, true, fmt.Errorf("stored image %s: %w", p, err)
	}
	return cas.BlobInfo{Size: fi.Size(), Mode: fi.Mode().Perm()}, true, nil
}

// pullPartial downloads a canga blob through a cas.Partial.
func (c *Client) pullPartial(ctx context.Context, store *cas.Store, u string, it Item, progress func(int64)) (cas.BlobInfo, error) {
	if err := cas.ValidateDigest(it.Blob); err != nil {
		return cas.BlobInfo{}, err
	}
	if it.Size <= 0 {
		return cas.BlobInfo{}, fmt.Errorf("invalid blob size %d", it.Size)
	}
	if has, err := store.Has(it.Blob); err != nil {
		return cas.BlobInfo{}, err
	} else if has {
		return existing(store, it.Blob, it.Expect)
	}
	var info cas.BlobInfo
	restarted := false
	err := c.retry(ctx, func() (bool, error) {
		p, err := store.OpenPartial(ctx, it.Blob, it.Size)
		if errors.Is(err, cas.ErrExists) {
			// Another puller finished it while we waited.
			info, err = existing(store, it.Blob, it.Expect)
			return false, markPermanent(err)
		}
		if err != nil {
			return false, &permanent{err}
		}
		start := p.Offset()
		var prefix []byte
		if start > 0 {
			if prefix, err = partialHead(store, it.Blob, min(start, headLen(it.Size))); err != nil {
				// The header must be checked from bytes that are in the
				// partial; if they cannot be read, fetch them again.
				if err := p.Reset(); err != nil {
					p.Close()
					return false, &permanent{err}
				}
				start = 0
			}
		}
		var body io.Reader
		var resp *http.Response
		if start < it.Size {
			resp, err = c.get(ctx, u, start, nil)
			if err != nil {
				p.Close()
				return false, err
			}
			defer resp.Body.Close()
			if start, err = c.acceptBlobResponse(u, resp, p, start, it.Size); err != nil {
				p.Close()
				return false, err
			}
			body = resp.Body
		}
		got := start
		track := func(n int64) {
			got = n
			if progress != nil {
				progress(n)
			}
		}
		if progress != nil {
			progress(start)
		}
		var pf *prefetcher
		if body != nil {
			pf = newPrefetcher(body)
			body = pf
		}
		info, err = p.Commit(ctx, newHeadGuard(orEmpty(body), start, it.Size, prefix, it.Expect), track)
		if pf != nil {
			resp.Body.Close() // unblocks a read-ahead waiting on the network
			pf.Close()
		}
		progressed := got > start
		var sm *cas.SizeMismatchError
		switch {
		case err == nil:
			return false, nil
		case errors.Is(err, ErrRefused):
			// Kept by Commit as a reader error; a refused blob is of no
			// use to a later attempt.
			discardPartial(ctx, store, it.Blob, it.Size)
			return false, &permanent{err}
		case errors.Is(err, cas.ErrDigestMismatch):
			// cas removed the partial. If bytes of an earlier attempt were
			// in it, they may be the bad ones: start over, once.
			if start > 0 && !restarted {
				restarted = true
				return true, &transferError{err}
			}
			return false, &permanent{err}
		case errors.As(err, &sm) && !sm.Longer:
			// The body ended cleanly but early (a proxy cut it): go on.
			return progressed, &transferError{err}
		default:
			var te *transferError
			if errors.As(err, &te) {
				return progressed, err
			}
			return false, &permanent{err}
		}
	})
	return info, err
}

// acceptBlobResponse checks the status and headers of the response to a
// request from offset start, prepares p for its body, and returns the
// offset the body starts at.
func (c *Client) acceptBlobResponse(u string, resp *http.Response, p *cas.Partial, start, size int64) (int64, error) {
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != size {
			resp.Body.Close()
			return 0, &permanent{fmt.Errorf("server sends %d bytes: %w", resp.ContentLength, &cas.SizeMismatchError{Expected: size, Actual: resp.ContentLength})}
		}
		if start > 0 {
			// The server ignored the Range (python's http.server does):
			// the whole blob comes again.
			if err := p.Reset(); err != nil {
				resp.Body.Close()
				return 0, &permanent{err}
			}
		}
		return 0, nil
	case http.StatusPartialContent:
		first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || first != start || last != size-1 || (total >= 0 && total != size) {
			resp.Body.Close()
			return 0, &permanent{fmt.Errorf("%w: Content-Range %s for Range bytes=%d-", ErrProtocol, quote(resp.Header.Get("Content-Range")), start)}
		}
		return start, nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err == nil && total >= 0 && total != size {
			return 0, &permanent{fmt.Errorf("server has %d bytes: %w", total, &cas.SizeMismatchError{Expected: size, Actual: total})}
		}
		// The server says the partial is not a prefix of what it has,
		// though the size is right: start over.
		if err := p.Reset(); err != nil {
			return 0, &permanent{err}
		}
		return 0, &transferError{fmt.Errorf("%w: 416 for bytes=%d- of a %d-byte blob", ErrProtocol, start, size)}
	default:
		return 0, statusError(u, resp)
	}
}

// parseContentRange reads "bytes FIRST-LAST/TOTAL" or "bytes */TOTAL";
// first and last are -1 in the latter form, total is -1 for "*".
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("%w: Content-Range %s", ErrProtocol, quote(s))
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, 0, bad
		}
	}
	if rng == "*" {
		return -1, -1, total, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || (total >= 0 && last >= total) {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// partialHead reads the first n bytes of the partial download of d.
// cas keeps it as .tmp/partial-HEX (see its package comment) and holds it
// for us while our Partial is open, so these are the bytes it hashed.
func partialHead(store *cas.Store, d digest.Digest, n int64) ([]byte, error) {
	f, err := os.OpenFile(filepath.Join(store.Dir(), ".tmp", "partial-"+d.Encoded()), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() < n {
		return nil, errors.New("partial is not as expected")
	}
	b := make([]byte, n) // n <= 2 MiB
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// discardPartial removes the partial of d, best effort.
func discardPartial(ctx context.Context, store *cas.Store, d digest.Digest, size int64) {
	if p, err := store.OpenPartial(ctx, d, size); err == nil {
		_ = p.Discard()
	}
}

func markPermanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanent{err}
}

func orEmpty(r io.Reader) io.Reader {
	if r == nil {
		return strings.NewReader("")
	}
	return r
}

// downloadTemp downloads a Cangallo image into a temp file of store and
// returns it with its size. total, if not nil, hears the size once the
// server tells it.
func (c *Client) downloadTemp(ctx context.Context, store *cas.Store, u string, it Item, progress func(int64), total func(int64)) (*cas.TempFile, int64, error) {
	if it.Expect.VirtualSize <= 0 {
		return nil, 0, fmt.Errorf("no virtual size to bound the download by")
	}
	limit := legacyMaxSize(it.Expect.VirtualSize)
	tf, err := store.CreateTemp("pull-*")
	if err != nil {
		return nil, 0, err
	}
	var off int64
	told := false
	tell := func(n int64) {
		if total != nil && !told && n >= 0 {
			told = true
			total(n)
		}
	}
	err = c.retry(ctx, func() (bool, error) {
		start := off
		resp, err := c.get(ctx, u, off, nil)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		want := int64(-1)
		switch resp.StatusCode {
		case http.StatusOK:
			want = resp.ContentLength
			if off > 0 {
				if err := tf.Truncate(0); err != nil {
					return false, &permanent{err}
				}
				off, start = 0, 0
				if progress != nil {
					progress(0)
				}
			}
		case http.StatusPartialContent:
			first, _, tot, err := parseContentRange(resp.Header.Get("Content-Range"))
			if err != nil || first != off {
				return false, &permanent{fmt.Errorf("%w: Content-Range %s for Range bytes=%d-", ErrProtocol, quote(resp.Header.Get("Content-Range")), off)}
			}
			want = tot
		case http.StatusRequestedRangeNotSatisfiable:
			_, _, tot, err := parseContentRange(resp.Header.Get("Content-Range"))
			if err == nil && tot == off {
				return false, nil // we had it all
			}
			if err := tf.Truncate(0); err != nil {
				return false, &permanent{err}
			}
			off = 0
			return false, &transferError{fmt.Errorf("%w: 416 for bytes=%d-", ErrProtocol, start)}
		default:
			return false, statusError(u, resp)
		}
		if want > limit {
			return false, &permanent{fmt.Errorf("%w: %d bytes for an image of virtual size %d", ErrTooLarge, want, it.Expect.VirtualSize)}
		}
		tell(want)
		n, err := copyAt(tf.File, resp.Body, off, limit, progress)
		off += n
		if err != nil {
			var te *transferError
			if errors.As(err, &te) {
				return off > start, err
			}
			return false, &permanent{err}
		}
		if want >= 0 && off != want {
			return off > start, &transferError{fmt.Errorf("body ended at %d of %d bytes", off, want)}
		}
		return false, nil
	})
	if err != nil {
		_ = tf.Discard()
		return nil, 0, err
	}
	return tf, off, nil
}

// copyAt writes r to f from offset off on, in 1 MiB writes, failing with
// ErrTooLarge past limit bytes in all.
func copyAt(f *os.File, r io.Reader, off, limit int64, progress func(int64)) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := io.ReadFull(r, buf)
		if m > 0 {
			if off+n+int64(m) > limit {
				return n, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
			}
			if _, werr := f.WriteAt(buf[:m], off+n); werr != nil {
				return n, werr
			}
			n += int64(m)
			if progress != nil {
				progress(off + n)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// finishLegacy checks a downloaded Cangallo image (header, then image ID
// over its chain) and keeps it as STORE/HEX.qcow2. tf is consumed.
func finishLegacy(ctx context.Context, store *cas.Store, u string, it Item, tf *cas.TempFile, size int64) (cas.BlobInfo, error) {
	defer tf.Discard()
	target, err := legacyPath(store, it.ImageID)
	if err != nil {
		return cas.BlobInfo{}, err
	}
	hdr, err := CheckPulledHeader(tf.File, size, it.Expect)
	if err != nil {
		return cas.BlobInfo{}, err
	}
	if (it.Parent == "") != (len(it.Ancestors) == 0) || (it.Parent != "" && it.Ancestors[len(it.Ancestors)-1] != it.Parent) {
		return cas.BlobInfo{}, fmt.Errorf("ancestors %v do not end with the parent %q", it.Ancestors, it.Parent)
	}
	var opts []qcow2.Option
	if len(it.Ancestors) > 0 {
		paths := make([]string, len(it.Ancestors))
		for i, a := range it.Ancestors {
			if paths[i], err = legacyPath(store, a); err != nil {
				return cas.BlobInfo{}, err
			}
		}
		parent, err := openChainFiles(paths)
		if err != nil {
			return cas.BlobInfo{}, fmt.Errorf("open the parent chain: %w", err)
		}
		defer parent.Close()
		opts = append(opts, qcow2.WithBacking(parent))
	}
	img, err := qcow2.Open(tf.File, size, opts...)
	if err != nil {
		return cas.BlobInfo{}, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	got, err := qcow2.Digest(ctx, img, qcow2.ScanOptions{})
	if err != nil {
		return cas.BlobInfo{}, fmt.Errorf("compute the image ID: %w", err)
	}
	if got != it.ImageID {
		return cas.BlobInfo{}, &ImageIDMismatchError{URL: redactURL(u), Expected: it.ImageID, Actual: got}
	}
	if hdr.BackingFile != "" && hdr.BackingFormat == "" {
		// What the chain was verified with, said in the header, so that
		// nobody probes the format of a backing file.
		if err := qcow2.SetBacking(tf.File, size, hdr.BackingFile, qcow2.FormatQcow2); err != nil {
			return cas.BlobInfo{}, fmt.Errorf("record the backing format: %w", err)
		}
	}
	return keepFile(tf, target)
}

// keepFile makes the temp file tf, checked, the read-only file target:
// fsync, chmod, a hard link (which, like cas's rename, never replaces a
// file already there: a concurrent puller's identical one stays) and an
// fsync of the directory. The temp name is then removed by Discard.
func keepFile(tf *cas.TempFile, target string) (cas.BlobInfo, error) {
	if err := tf.Chmod(0o444); err != nil {
		return cas.BlobInfo{}, err
	}
	if err := tf.Sync(); err != nil {
		return cas.BlobInfo{}, err
	}
	fi, err := tf.Stat()
	if err != nil {
		return cas.BlobInfo{}, err
	}
	if err := os.Link(tf.Name(), target); err != nil && !errors.Is(err, fs.ErrExist) {
		return cas.BlobInfo{}, err
	}
	if err := syncDir(filepath.Dir(target)); err != nil {
		return cas.BlobInfo{}, err
	}
	if err := tf.Discard(); err != nil {
		return cas.BlobInfo{}, err
	}
	return cas.BlobInfo{Size: fi.Size(), Mode: 0o444}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// openChainFiles opens image files as one disk: paths lists a chain base
// first, and each file is opened with the one before it as its backing
// disk, whatever backing file name its header holds (those were checked
// when the files were pulled). Close closes every file.
func openChainFiles(paths []string) (qcow2.Disk, error) {
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
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fail(err)
		}
		fi, err := f.Stat()
		if err == nil && !fi.Mode().IsRegular() {
			err = fmt.Errorf("%s is not a regular file", p)
		}
		var img *qcow2.Image
		if err == nil {
			var opts []qcow2.Option
			if below != nil {
				opts = append(opts, qcow2.WithBacking(below))
			}
			img, err = qcow2.Open(f, fi.Size(), opts...)
		}
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
