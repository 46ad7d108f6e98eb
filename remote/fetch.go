package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
)

// Names of the index files, in a repository and on a server (SPEC §2).
const (
	IndexFile = "index.yaml"
	SigFile   = "index.yaml.sig"
)

// indexPerm is the mode of the cached index files: readable by everyone,
// like the blobs.
const indexPerm = 0o644

// FetchIndex downloads index.yaml and index.yaml.sig from the repository
// at baseURL and returns their bytes exactly as served. index.yaml must
// exist and hold at most [index.MaxIndexSize] bytes; the signature may be
// missing (404 or 410 gives a nil sig) and holds at most
// [signing.MaxSignatureSize] bytes. Nothing is parsed or checked here:
// see [ValidateIndex].
func (c *Client) FetchIndex(ctx context.Context, baseURL string) (indexBytes, sig []byte, err error) {
	iu, err := resolve(baseURL, IndexFile)
	if err != nil {
		return nil, nil, err
	}
	su, err := resolve(baseURL, SigFile)
	if err != nil {
		return nil, nil, err
	}
	indexBytes, err = c.getSmall(ctx, iu, index.MaxIndexSize, false)
	if err != nil {
		return nil, nil, err
	}
	sig, err = c.getSmall(ctx, su, signing.MaxSignatureSize, true)
	if err != nil {
		return nil, nil, err
	}
	return indexBytes, sig, nil
}

// getSmall downloads a file that is read whole into memory, with at most
// limit bytes. A missing optional file is nil, nil.
func (c *Client) getSmall(ctx context.Context, u string, limit int64, optional bool) ([]byte, error) {
	var out []byte
	err := c.retry(ctx, func() (bool, error) {
		// no-cache: a proxy or CDN must ask the origin, or a fetch would
		// not see a new index.
		resp, err := c.get(ctx, u, 0, http.Header{"Cache-Control": {"no-cache"}})
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusNotFound, http.StatusGone:
			if optional {
				out = nil
				return false, nil
			}
			return false, statusError(u, resp)
		default:
			return false, statusError(u, resp)
		}
		tooLarge := &permanent{fmt.Errorf("%w: %s holds more than %d bytes", ErrTooLarge, redactURL(u), limit)}
		if resp.ContentLength > limit {
			return false, tooLarge
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return false, fmt.Errorf("remote: GET %s: %w", redactURL(u), err)
		}
		if int64(len(b)) > limit {
			return false, tooLarge
		}
		out = b
		return false, nil
	})
	return out, err
}

// Fetched is an index that passed [ValidateIndex]: only such an index can
// be saved by [SaveIndex].
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
	// when nobody checks it, for a later "canga verify").
	HasSignature bool

	indexBytes, sig []byte
}

// IndexBytes returns the bytes of index.yaml, as served.
func (f *Fetched) IndexBytes() []byte { return f.indexBytes }

// Signature returns the bytes of index.yaml.sig as served, nil if none.
func (f *Fetched) Signature() []byte { return f.sig }

// ValidateIndex checks fetched index bytes. With allowed signers (not nil)
// the signature must be present and valid, by a key they list, at now
// (SPEC §6); it is checked before the index is parsed, so that an
// unsigned document never reaches the YAML parser. Then the index must
// parse ([index.Parse] treats it as hostile). A nil signers means that no
// signature is required: the caller must pass nil only when no
// allowed_signers is configured, never when loading the file failed.
func ValidateIndex(indexBytes, sig []byte, signers *signing.AllowedSigners, now time.Time) (*Fetched, error) {
	if len(sig) == 0 {
		sig = nil // an empty file signs nothing
	}
	f := &Fetched{indexBytes: indexBytes, sig: sig, HasSignature: sig != nil}
	if signers != nil {
		principal, fp, err := signing.Verify(indexBytes, sig, signers, now)
		if err != nil {
			return nil, fmt.Errorf("remote: signature of %s: %w", IndexFile, err)
		}
		f.Signed, f.Principal, f.Fingerprint = true, principal, fp
	} else if sig != nil {
		if fp, err := signing.CheckSignature(indexBytes, sig); err == nil {
			f.Fingerprint = fp
		}
	}
	x, err := index.Parse(indexBytes)
	if err != nil {
		return nil, fmt.Errorf("remote: %s: %w", IndexFile, err)
	}
	f.Index = x
	return f, nil
}

// SaveIndex stores a validated index in a repository directory (the local
// cache of a remote), byte for byte: index.yaml.sig (or its removal when
// the remote has none) first, then index.yaml, each by
// [cas.Store.WriteFileAtomic]. It reports whether anything changed. The
// caller holds the repository lock: two fetches interleaving their writes
// could pair one's index with the other's signature.
//
// The signature goes first so that index.yaml, the file every reader
// starts from, is the commit point: whoever sees a new index.yaml also
// sees its signature. A crash between the two writes leaves the old index
// with the new signature (or without one), a pair that fails verification
// and so is refused by a reader that checks ([ReadIndex] with allowed
// signers), and that the next fetch repairs. No order could let a stale
// signature pass for a new index: a signature covers the exact bytes.
func SaveIndex(store *cas.Store, f *Fetched) (changed bool, err error) {
	if f == nil || f.Index == nil {
		return false, errors.New("remote: save index: not validated")
	}
	dir := store.Dir()
	oldIndex, _ := readCapped(filepath.Join(dir, IndexFile), index.MaxIndexSize)
	oldSig, sigErr := readCapped(filepath.Join(dir, SigFile), signing.MaxSignatureSize)
	sigSame := (f.sig == nil && errors.Is(sigErr, fs.ErrNotExist)) || (f.sig != nil && sigErr == nil && bytes.Equal(oldSig, f.sig))
	if sigSame && oldIndex != nil && bytes.Equal(oldIndex, f.indexBytes) {
		return false, nil
	}
	if f.sig != nil {
		if err := store.WriteFileAtomic(SigFile, f.sig, indexPerm); err != nil {
			return false, fmt.Errorf("remote: save index: %w", err)
		}
	} else if err := removeDurably(filepath.Join(dir, SigFile)); err != nil {
		return false, fmt.Errorf("remote: save index: %w", err)
	}
	if err := store.WriteFileAtomic(IndexFile, f.indexBytes, indexPerm); err != nil {
		return false, fmt.Errorf("remote: save index: %w", err)
	}
	return true, nil
}

// Fetch downloads the index of the remote at baseURL, validates it
// ([ValidateIndex], with signers as there) and saves it in store
// ([SaveIndex]) under the repository lock. On any error the index and
// signature already in store stay as they were.
func (c *Client) Fetch(ctx context.Context, store *cas.Store, baseURL string, signers *signing.AllowedSigners) (f *Fetched, changed bool, err error) {
	ib, sig, err := c.FetchIndex(ctx, baseURL)
	if err != nil {
		return nil, false, err
	}
	f, err = ValidateIndex(ib, sig, signers, time.Now())
	if err != nil {
		return nil, false, fmt.Errorf("%w (the previous index is kept)", err)
	}
	lk, err := store.Lock(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("remote: fetch: %w", err)
	}
	defer lk.Unlock()
	changed, err = SaveIndex(store, f)
	if err != nil {
		return nil, false, err
	}
	return f, changed, lk.Unlock()
}

// ReadIndex reads the cached index of a remote from its repository
// directory and validates it as [ValidateIndex] does: with allowed
// signers, a cache whose signature does not verify (an index written by
// hand, a crash between the two writes of SaveIndex) is refused, not
// trusted because it is local. A cache without index.yaml gives an error
// matching [ErrNoIndex].
func ReadIndex(dir string, signers *signing.AllowedSigners, now time.Time) (*Fetched, error) {
	ib, err := readCapped(filepath.Join(dir, IndexFile), index.MaxIndexSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", ErrNoIndex, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("remote: read cached index: %w", err)
	}
	sig, err := readCapped(filepath.Join(dir, SigFile), signing.MaxSignatureSize)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remote: read cached index: %w", err)
	}
	f, err := ValidateIndex(ib, sig, signers, now)
	if err != nil {
		return nil, fmt.Errorf("%w (cached in %s; fetch again)", err, dir)
	}
	return f, nil
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
		return nil, fmt.Errorf("%w: %s holds more than %d bytes", ErrTooLarge, path, limit)
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
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
