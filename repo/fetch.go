package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
	"github.com/cangallo/canga/internal/atomicfile"
	"github.com/cangallo/canga/remote"
)

// ErrNoIndex: the cache of a remote has no index.yaml yet (never fetched).
var ErrNoIndex = errors.New("repo: no index fetched")

// indexPerm is the mode of index files: readable by everyone, like blobs.
const indexPerm = 0o644

// Fetched is an index whose bytes passed [validateIndex]: only such an
// index is saved in a remote's cache.
type Fetched struct {
	// Index is the parsed index.
	Index *index.Index
	// Signed is set when the signature was verified against the allowed
	// signers; Principal then names the signer as "ssh-keygen -Y
	// find-principals" would.
	Signed    bool
	Principal string
	// Fingerprint is the SHA256 fingerprint of the signing key. Without
	// allowed signers it is set when the signature is well formed, which
	// says nothing about who made it.
	Fingerprint string
	// HasSignature reports whether index.yaml.sig exists (it is kept even
	// when nobody checks it, for a later verify).
	HasSignature bool
	// Changed reports whether a fetch changed the cache.
	Changed bool

	indexBytes, sig []byte
}

// validateIndex checks index bytes and their signature. With allowed
// signers (not nil) the signature must be present and valid, by a key they
// list, now (SPEC §6); it is checked before the index is parsed, so that
// an unsigned document never reaches the YAML parser. Then the index must
// parse ([index.Parse] treats it as hostile). nil signers mean that no
// signature is required: only when no allowed_signers is configured,
// never when loading the file failed.
func validateIndex(indexBytes, sig []byte, signers *signing.AllowedSigners) (*Fetched, error) {
	if len(sig) == 0 {
		sig = nil // an empty file signs nothing
	}
	f := &Fetched{indexBytes: indexBytes, sig: sig, HasSignature: sig != nil}
	if signers != nil {
		principal, fp, err := signing.Verify(indexBytes, sig, signers, time.Now())
		if err != nil {
			return nil, fmt.Errorf("signature of %s: %w", IndexFile, err)
		}
		f.Signed, f.Principal, f.Fingerprint = true, principal, fp
	} else if sig != nil {
		if fp, err := signing.CheckSignature(indexBytes, sig); err == nil {
			f.Fingerprint = fp
		}
	}
	x, err := index.Parse(indexBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", IndexFile, err)
	}
	f.Index = x
	return f, nil
}

// Fetch downloads a remote's index and signature, checks them (the
// signature when allowed_signers is configured, SPEC §6) and keeps them,
// byte for byte, in the remote's cache. A failed or refused fetch keeps
// the previous index and signature.
func (r *Repo) Fetch(ctx context.Context) (*Fetched, error) {
	src, err := r.remoteSource()
	if err != nil {
		return nil, err
	}
	f, err := src.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w (the previous index is kept)", r.Name(), err)
	}
	// Two fetches interleaving their writes could pair one's index with
	// the other's signature.
	lk, err := r.store.Lock(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", r.Name(), err)
	}
	defer lk.Unlock()
	if f.Changed, err = r.saveIndex(f); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", r.Name(), err)
	}
	return f, lk.Unlock()
}

// saveIndex stores a checked index in the cache, byte for byte:
// index.yaml.sig (or its removal when the remote has none) first, then
// index.yaml. It reports whether anything changed.
//
// The signature goes first so that index.yaml, the file every reader
// starts from, is the commit point: whoever sees a new index.yaml also
// sees its signature. A crash between the two writes leaves the old index
// with the new signature (or without one), a pair that fails
// verification, so a reader that checks refuses it ([Repo.Index]) and the
// next fetch repairs it. No order could let a stale signature pass for a
// new index: a signature covers the exact bytes.
func (r *Repo) saveIndex(f *Fetched) (changed bool, err error) {
	oldIndex, _ := readCapped(filepath.Join(r.Dir(), IndexFile), index.MaxIndexSize)
	oldSig, sigErr := readCapped(filepath.Join(r.Dir(), SigFile), signing.MaxSignatureSize)
	sigSame := (f.sig == nil && errors.Is(sigErr, fs.ErrNotExist)) || (f.sig != nil && sigErr == nil && bytes.Equal(oldSig, f.sig))
	if sigSame && oldIndex != nil && bytes.Equal(oldIndex, f.indexBytes) {
		return false, nil
	}
	if f.sig != nil {
		if err := r.store.WriteFileAtomic(SigFile, f.sig, indexPerm); err != nil {
			return false, err
		}
	} else if err := removeDurably(filepath.Join(r.Dir(), SigFile)); err != nil {
		return false, err
	}
	if err := r.store.WriteFileAtomic(IndexFile, f.indexBytes, indexPerm); err != nil {
		return false, err
	}
	return true, nil
}

// cachedIndex reads the cached index of a remote and checks it as a fetch
// does: with allowed signers, a cache whose signature does not verify (an
// index written by hand, a crash between the two writes of saveIndex) is
// refused, not trusted because it is local. A remote never fetched has an
// error matching [ErrNoIndex].
func (r *Repo) cachedIndex() (*Fetched, error) {
	ib, err := readCapped(filepath.Join(r.Dir(), IndexFile), index.MaxIndexSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), ErrNoIndex)
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: read the cached index: %w", r.Name(), err)
	}
	sig, err := readCapped(filepath.Join(r.Dir(), SigFile), signing.MaxSignatureSize)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repository %s: read the cached index: %w", r.Name(), err)
	}
	signers, err := r.Signers()
	if err != nil {
		return nil, err
	}
	f, err := validateIndex(ib, sig, signers)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w (cached in %s; fetch again)", r.Name(), err, r.Dir())
	}
	return f, nil
}

// remoteIndex is the cached index of a remote; one never fetched has an
// empty index.
func (r *Repo) remoteIndex() (*index.Index, error) {
	f, err := r.cachedIndex()
	if errors.Is(err, ErrNoIndex) {
		return index.New(), nil
	}
	if err != nil {
		return nil, err
	}
	return f.Index, nil
}

// remoteSource is the web server of a remote, as a [Source].
func (r *Repo) remoteSource() (httpSource, error) {
	if !r.Remote() {
		return httpSource{}, fmt.Errorf("%w: %s has no url to fetch from", ErrLocal, r.Name())
	}
	return httpSource{c: r.httpClient(), url: r.conf.URL, signers: r.Signers}, nil
}

func (r *Repo) httpClient() *remote.Client {
	if r.h != nil {
		return r.h.httpClient()
	}
	return remote.NewClient("")
}

// readCapped reads a regular file of at most limit bytes.
func readCapped(path string, limit int64) ([]byte, error) {
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s holds more than %d bytes", path, limit)
	}
	return b, nil
}

// removeDurably removes path, if it exists, and syncs its directory so
// that the removal survives a crash before the next write.
func removeDurably(path string) error {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}
