package repo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
	"github.com/cangallo/canga/qcow2"
	"github.com/cangallo/canga/remote"
	"github.com/opencontainers/go-digest"
)

// Signers loads the allowed_signers of a remote, or returns nil when none
// is configured (then no signature is required). A file that is
// configured but cannot be loaded is an error: it must never turn the
// requirement off.
func (r *Repo) Signers() (*signing.AllowedSigners, error) {
	if r.Conf.AllowedSigners == "" {
		return nil, nil
	}
	s, err := signing.LoadAllowedSigners(r.Conf.AllowedSigners)
	if err != nil {
		return nil, fmt.Errorf("repository %s: allowed_signers: %w", r.Name(), err)
	}
	return s, nil
}

// remoteIndex reads the cached index of a remote, checking its signature
// again when one is required. A remote never fetched has an empty index.
func (r *Repo) remoteIndex() (*index.Index, error) {
	signers, err := r.Signers()
	if err != nil {
		return nil, err
	}
	f, err := remote.ReadIndex(r.Dir(), signers, time.Now())
	if errors.Is(err, remote.ErrNoIndex) {
		return index.New(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	return f.Index, nil
}

// Fetch downloads a remote's index (and signature) into its cache. A
// failed or refused fetch keeps the previous index.
func (r *Repo) Fetch(ctx context.Context, c *remote.Client) (*remote.Fetched, error) {
	if !r.Conf.Remote() {
		return nil, fmt.Errorf("repository %s is local: there is nothing to fetch", r.Name())
	}
	signers, err := r.Signers()
	if err != nil {
		return nil, err
	}
	f, _, err := c.Fetch(ctx, r.Store, r.Conf.URL, signers)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", r.Name(), err)
	}
	return f, nil
}

// Pull downloads an image of a remote and its ancestors into the cache,
// every blob verified while it streams.
func (r *Repo) Pull(ctx context.Context, c *remote.Client, ix *index.Index, id digest.Digest, progress func(done, total int64)) error {
	if !r.Conf.Remote() {
		return nil // a local image is always there
	}
	if _, err := c.PullImage(ctx, r.Store, r.Conf.URL, ix, id, progress); err != nil {
		return fmt.Errorf("pull %s from %s: %w", index.ShortID(id), r.Name(), err)
	}
	return nil
}

// Import copies an image and its ancestors from src into r, blob by blob
// (a hard link when both are on one file system), and adds their index
// entries; tag, if set, names the image in r. Images r has already are
// kept. The source's blobs must be present (pull first).
func (r *Repo) Import(ctx context.Context, src *Repo, six *index.Index, id digest.Digest, tag string) error {
	chain, err := six.Chain(id)
	if err != nil {
		return err
	}
	for _, cid := range chain {
		if !src.Present(six.Images[cid]) {
			return fmt.Errorf("%w: %s in %s", ErrNotPulled, index.ShortID(cid), src.Name())
		}
	}
	return r.Update(ctx, func(ix *index.Index, _ *cas.Lock) error {
		// Base first, so that each image's parent is in place.
		for i := len(chain) - 1; i >= 0; i-- {
			cid := chain[i]
			if _, err := ix.Entry(cid); err == nil {
				continue
			}
			se := six.Images[cid]
			e := *se
			e.Legacy = nil
			var parentBlob, srcParentBlob digest.Digest
			if se.Parent != "" {
				pe, err := ix.Entry(se.Parent)
				if err != nil {
					return err
				}
				parentBlob, srcParentBlob = pe.Blob, six.Images[se.Parent].Blob
			}
			blob, err := r.importBlob(ctx, src, se, parentBlob, srcParentBlob)
			if err != nil {
				return fmt.Errorf("import %s: %w", index.ShortID(cid), err)
			}
			e.Blob, e.BlobSize = blob.Digest, blob.Size
			if e.Created.IsZero() {
				e.Created = time.Now().UTC().Truncate(time.Second)
			}
			if err := ix.Put(cid, &e); err != nil {
				return err
			}
		}
		if tag != "" {
			if _, err := ix.SetTag(tag, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// importBlob puts the blob of entry se (in src) into r's store. A canga
// blob keeps its bytes, linked or copied and verified, when its parent's
// blob in r is the one it names. Otherwise (a Cangallo file names its
// parent PARENTHEX.qcow2; r may hold the same parent image as other bytes,
// say with another compression) a copy gets r's parent blob as backing
// file, which makes it a new blob.
func (r *Repo) importBlob(ctx context.Context, src *Repo, se *index.Entry, parentBlob, srcParentBlob digest.Digest) (cas.BlobInfo, error) {
	p, err := src.BlobPath(se)
	if err != nil {
		return cas.BlobInfo{}, err
	}
	if se.Blob != "" && parentBlob == srcParentBlob {
		if info, err := r.Store.Stat(se.Blob); err == nil {
			return info, nil
		}
		dst, err := r.Store.Path(se.Blob)
		if err != nil {
			return cas.BlobInfo{}, err
		}
		err = os.Link(p, dst)
		if err == nil || errors.Is(err, fs.ErrExist) {
			if err := syncDir(filepath.Dir(dst)); err != nil {
				return cas.BlobInfo{}, err
			}
			return r.Store.Stat(se.Blob)
		}
		if !errors.Is(err, syscall.EXDEV) && !errors.Is(err, fs.ErrPermission) {
			return cas.BlobInfo{}, err
		}
		f, err := os.Open(p)
		if err != nil {
			return cas.BlobInfo{}, err
		}
		defer f.Close()
		return r.Store.Ingest(ctx, f, se.Blob, se.BlobSize, nil)
	}
	// Copy, then point the copy at its parent's blob in r.
	tmp, err := r.Store.CreateTemp("import-*.qcow2")
	if err != nil {
		return cas.BlobInfo{}, err
	}
	defer tmp.Discard()
	in, err := os.Open(p)
	if err != nil {
		return cas.BlobInfo{}, err
	}
	defer in.Close()
	n, err := tmp.ReadFrom(in)
	if err != nil {
		return cas.BlobInfo{}, err
	}
	backing, format := "", ""
	if parentBlob != "" {
		backing, format = parentBlob.Encoded(), qcow2.FormatQcow2
	}
	if err := qcow2.SetBacking(tmp.File, n, backing, format); err != nil {
		return cas.BlobInfo{}, err
	}
	return r.Store.CommitFile(ctx, tmp, "", nil)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
