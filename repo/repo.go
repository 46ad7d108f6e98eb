// Package repo owns every operation on canga repositories (SPEC §1-7):
// the blobs of package cas and the catalog of package index, kept
// consistent under the repository lock; copies between repositories over
// any [Source] (a directory, a static web server, an OCI registry); the
// index's signatures; builds. It never prints: package cmd/canga talks to
// people.
//
// Writers hold the repository lock from before a blob is published until
// the index that references it is written, so gc (which keeps only what
// the index references) never reclaims a blob being added. Long work, such
// as compressing an image, happens before the lock is taken, into a
// flocked temp file that gc leaves alone.
package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/config"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
)

// The catalog's files in a repository (SPEC §2).
const (
	IndexFile = "index.yaml"
	SigFile   = "index.yaml.sig"
)

var (
	// ErrNotPulled means a blob of a remote image has not been downloaded
	// yet.
	ErrNotPulled = errors.New("repo: image not downloaded")
	// ErrRemote: a remote's cache changes only by fetch and pull.
	ErrRemote = errors.New("repo: repository is a remote's cache")
	// ErrLocal: the operation needs a remote, and the repository is
	// local.
	ErrLocal = errors.New("repo: repository is local")
	// ErrInternal: canga met a bug of its own (a panic) in a worker.
	ErrInternal = errors.New("repo: internal error")
)

// Repo is one repository: a local one, or the local cache of a remote.
type Repo struct {
	conf  config.Repo
	store *cas.Store
	h     *Home // for the HTTP client of a remote; nil for a Repo opened alone

	changed bool // an Update wrote the index

	// cached is the local index as last read or written, while
	// index.yaml is still the file cachedAt describes: a command that
	// resolves a name and then updates the index reads it once.
	mu       sync.Mutex
	cached   *index.Index
	cachedAt fileID
}

// fileID tells versions of a file (index.yaml, its signature) apart:
// canga replaces them by rename, so a new version is a new inode, and
// size and times catch a file edited in place.
type fileID struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime"`
	Ctime int64  `json:"ctime"`
}

func idOf(fi fs.FileInfo) (fileID, bool) {
	id := fileID{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	sysFileID(fi, &id)
	return id, true
}

// idOfPath is the identity of the file at p, ok false if there is none.
func idOfPath(p string) (fileID, bool) {
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return fileID{}, false
	}
	return idOf(fi)
}

// remember caches ix as the index in the file fi, or forgets the cache.
func (r *Repo) remember(ix *index.Index, fi fs.FileInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cached = nil
	if ix == nil {
		return
	}
	if id, ok := idOf(fi); ok {
		r.cached, r.cachedAt = ix, id
	}
}

// Changed reports whether this Repo wrote its index.
func (r *Repo) Changed() bool { return r.changed }

// Open opens a configured repository, creating its directory on first
// use.
func Open(conf config.Repo) (*Repo, error) {
	s, err := cas.Open(conf.Path)
	if errors.Is(err, cas.ErrNotFound) {
		s, err = cas.Init(conf.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", conf.Name, err)
	}
	return &Repo{conf: conf, store: s}, nil
}

// Remote reports whether the repository is the local cache of a remote.
func (r *Repo) Remote() bool { return r.conf.Remote() }

// URL is a remote's base URL; empty for a local repository.
func (r *Repo) URL() string { return r.conf.URL }

// Name is the repository's name in the configuration.
func (r *Repo) Name() string { return r.conf.Name }

// Dir is the repository directory.
func (r *Repo) Dir() string { return r.store.Dir() }

// Index reads the repository's index. A repository without one has an
// empty index. Readers need no lock: the index file is replaced by rename.
// A remote's cached index must still carry a valid signature when its
// configuration requires one.
//
// A local repository's index is read once while index.yaml does not
// change: later calls, and Update, get the same object (an index of
// 100,000 images takes a quarter of a second to read). Callers must not
// change it; [Repo.Update]'s fn is the one place to, and after an Update
// it is the index written.
func (r *Repo) Index() (*index.Index, error) {
	if r.conf.Remote() {
		return r.remoteIndex()
	}
	f, size, err := openFile(filepath.Join(r.Dir(), IndexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return index.New(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	r.mu.Lock()
	id, ok := idOf(fi)
	if ok && r.cached != nil && r.cachedAt == id {
		ix := r.cached
		r.mu.Unlock()
		return ix, nil
	}
	r.mu.Unlock()
	// Streamed: an index of 100,000 images is 40 MB of text, which need
	// not be in memory beside the index it makes.
	ix, err := index.Decode(f, size)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %s: %w", r.Name(), IndexFile, err)
	}
	r.remember(ix, fi)
	return ix, nil
}

// Update runs fn on the current index under the repository lock and
// writes the result atomically when fn succeeds. fn may publish blobs:
// gc waits for the lock.
func (r *Repo) Update(ctx context.Context, fn func(ix *index.Index) error) error {
	if r.conf.Remote() {
		return fmt.Errorf("%w: %s is the cache of %s", ErrRemote, r.Name(), r.conf.URL)
	}
	lk, err := r.store.Lock(ctx)
	if err != nil {
		return fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	defer lk.Unlock()
	ix, err := r.Index()
	if err != nil {
		return err
	}
	// ix is the cached index: a failed edit must not stay in it.
	if err := fn(ix); err != nil {
		r.remember(nil, nil)
		return err
	}
	// Written as it is encoded: 40 MB for 100,000 images, which need
	// not be in memory beside the index.
	var invalid error // the index's own error, not the disk's
	err = r.store.WriteAtomic(IndexFile, indexPerm, func(w io.Writer) error {
		ew := &errWriter{w: w}
		err := ix.Encode(ew)
		if err != nil && ew.err == nil {
			invalid = err
		}
		return err
	})
	if err != nil {
		r.remember(nil, nil)
		if invalid != nil {
			return invalid
		}
		return fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	r.changed = true
	if fi, err := os.Lstat(filepath.Join(r.Dir(), IndexFile)); err == nil {
		r.remember(ix, fi) // we hold the lock: it is the file just written
	} else {
		r.remember(nil, nil)
	}
	return nil
}

// errWriter remembers whether its writer failed.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// BlobPath is where an image's blob is, or would be once pulled.
func (r *Repo) BlobPath(e *index.Entry) (string, error) {
	if e.Blob == "" {
		if e.Legacy == nil {
			return "", errors.New("repo: entry without a blob")
		}
		return filepath.Join(r.Dir(), e.Legacy.File), nil
	}
	return r.store.Path(e.Blob)
}

// Present reports whether an image's blob is in the repository.
func (r *Repo) Present(e *index.Entry) bool {
	p, err := r.BlobPath(e)
	if err != nil {
		return false
	}
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

// PresentAll is [Repo.Present] for many images at once: one read of the
// blob directory instead of a stat per image, which is what listing a
// repository of 100,000 images costs.
func (r *Repo) PresentAll(ctx context.Context) (func(e *index.Entry) bool, error) {
	blobs, _, err := r.store.Digests(ctx)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	// Keyed by the digest's bytes: a third of the memory of the strings,
	// and no pointers for the garbage collector to follow.
	set := make(map[[sha256.Size]byte]struct{}, len(blobs))
	for _, b := range blobs {
		if k, ok := blobKey(b); ok {
			set[k] = struct{}{}
		}
	}
	return func(e *index.Entry) bool {
		if e.Blob == "" {
			return r.Present(e) // a Cangallo file, beside the index
		}
		k, ok := blobKey(e.Blob)
		if !ok {
			return false
		}
		_, ok = set[k]
		return ok
	}, nil
}

// blobKey is the SHA-256 of a blob digest.
func blobKey(d digest.Digest) (k [sha256.Size]byte, ok bool) {
	_, err := hex.Decode(k[:], []byte(d.Encoded()))
	return k, err == nil && len(d.Encoded()) == 2*sha256.Size
}

// OpenImage opens an image with its chain. Each blob may name exactly its
// parent's blob as backing file, as the index says, in the same
// directory: nothing in a repository makes canga open another file.
func (r *Repo) OpenImage(ix *index.Index, id digest.Digest) (qcow2.Disk, error) {
	e, err := ix.Entry(id)
	if err != nil {
		return nil, err
	}
	chain, err := ix.Chain(id)
	if err != nil {
		return nil, err
	}
	// Every blob of the chain must be there.
	names := map[string]digest.Digest{} // blob file name -> parent blob file name's image
	for i, cid := range chain {
		ce, _ := ix.Entry(cid)
		if !r.Present(ce) {
			return nil, fmt.Errorf("%w: %s (in the chain of %s)", ErrNotPulled, index.ShortID(cid), index.ShortID(id))
		}
		p, _ := r.BlobPath(ce)
		if i+1 < len(chain) {
			names[filepath.Base(p)] = chain[i+1]
		}
	}
	resolve := func(image, name, format string) (string, string, error) {
		parent, ok := names[filepath.Base(image)]
		if !ok {
			return "", "", fmt.Errorf("repo: %s names backing file %q but the index gives it no parent", filepath.Base(image), name)
		}
		pe, _ := ix.Entry(parent)
		pp, _ := r.BlobPath(pe)
		if name != filepath.Base(pp) || (format != "" && format != qcow2.FormatQcow2) {
			return "", "", fmt.Errorf("repo: %s names backing file %q (%s), the index says %s", filepath.Base(image), name, format, filepath.Base(pp))
		}
		return pp, qcow2.FormatQcow2, nil
	}
	p, err := r.BlobPath(e)
	if err != nil {
		return nil, err
	}
	d, err := qcow2.OpenFile(p, qcow2.WithFormat(qcow2.FormatQcow2), qcow2.WithBackingResolver(resolve))
	if err != nil {
		return nil, err
	}
	if img, ok := d.(*qcow2.Image); ok && len(chain) == 1 && img.Header().BackingFile != "" {
		d.Close()
		return nil, fmt.Errorf("repo: base image %s has a backing file %q", index.ShortID(id), img.Header().BackingFile)
	}
	return d, nil
}
