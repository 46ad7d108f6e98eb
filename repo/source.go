package repo

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
	"github.com/cangallo/canga/remote"
	"github.com/opencontainers/go-digest"
)

// A Source is a repository that images are copied from: another
// repository directory on this machine (a local repository, or the cache
// of a remote), a static web server, an OCI registry. A source only
// reads; every check of what it gives is [Repo.Copy]'s, the same for all.
type Source interface {
	// String names the source in messages.
	String() string
	// Index is the source's catalog, checked as the source requires: a
	// remote's signature, for one.
	Index(ctx context.Context) (*index.Index, error)
	// Open streams the stored file of image id (entry e of the source's
	// index) from byte off on.
	Open(ctx context.Context, id digest.Digest, e *index.Entry, off int64) (io.ReadCloser, error)
}

// fileSource is a Source whose files are on this machine: cas copies them
// (or clones them, where the file system can) instead of streaming.
type fileSource interface {
	Source
	file(id digest.Digest, e *index.Entry) (string, error)
}

// dirSource is a repository directory of this machine as a Source.
type dirSource struct{ r *Repo }

// AsSource is the repository as a source for [Repo.Copy]: its own files,
// or, for the cache of a remote, the files pulled so far.
func (r *Repo) AsSource() Source { return dirSource{r} }

func (s dirSource) String() string { return "repository " + s.r.Name() }

func (s dirSource) Index(context.Context) (*index.Index, error) { return s.r.Index() }

func (s dirSource) file(id digest.Digest, e *index.Entry) (string, error) {
	if !s.r.Present(e) {
		return "", fmt.Errorf("%w: %s in %s", ErrNotPulled, index.ShortID(id), s.r.Name())
	}
	return s.r.BlobPath(e)
}

func (s dirSource) Open(_ context.Context, id digest.Digest, e *index.Entry, off int64) (io.ReadCloser, error) {
	p, err := s.file(id, e)
	if err != nil {
		return nil, err
	}
	f, _, err := openFile(p)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// httpSource is a static repository on a web server (package remote).
type httpSource struct {
	c       *remote.Client
	url     string
	signers signersFunc
}

// signersFunc loads the allowed signers a source's index must be signed
// by; nil signers mean that no signature is required.
type signersFunc func() (*signing.AllowedSigners, error)

func (s httpSource) String() string { return remote.Redact(s.url) }

// fetch downloads the index and its signature and checks them.
func (s httpSource) fetch(ctx context.Context) (*Fetched, error) {
	ib, err := s.c.Get(ctx, s.url, remote.IndexFile, index.MaxIndexSize)
	if err != nil {
		return nil, err
	}
	sig, err := s.c.Get(ctx, s.url, remote.SigFile, signing.MaxSignatureSize)
	if errors.Is(err, remote.ErrNotFound) {
		sig, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	signers, err := s.signers()
	if err != nil {
		return nil, err
	}
	return validateIndex(ib, sig, signers)
}

func (s httpSource) Index(ctx context.Context) (*index.Index, error) {
	f, err := s.fetch(ctx)
	if err != nil {
		return nil, err
	}
	return f.Index, nil
}

func (s httpSource) Open(ctx context.Context, id digest.Digest, e *index.Entry, off int64) (io.ReadCloser, error) {
	if e.Blob == "" {
		// A Cangallo image: named by its image ID, size unknown.
		return s.c.Open(ctx, s.url, index.LegacyFileName(id), off, -1)
	}
	return s.c.Open(ctx, s.url, remote.BlobPath(e.Blob.Encoded()), off, e.BlobSize)
}
