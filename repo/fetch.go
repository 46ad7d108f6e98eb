package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cangallo/canga/cas"
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
	// Index is the parsed index; nil when NotModified.
	Index *index.Index
	// NotModified: the server answered that the cached index is current
	// (304), so it was not downloaded or read again.
	NotModified bool
	// Signed is set when the signature was verified against the allowed
	// signers; Principal then names the signer as "ssh-keygen -Y
	// find-principals" would.
	Signed    bool
	Principal string
	// Fingerprint is the SHA256 fingerprint of the signing key. Without
	// allowed signers it is set when the signature is well formed, which
	// says nothing about who made it (and not when NotModified).
	Fingerprint string
	// HasSignature reports whether index.yaml.sig exists (it is kept even
	// when nobody checks it, for a later verify).
	HasSignature bool
	// Changed reports whether a fetch changed the cache.
	Changed bool

	sig []byte
	// tmp holds a fetched index.yaml, checked, until it replaces the
	// cached one.
	tmp *cas.TempFile
	// The validators of the index and signature fetched, for the next
	// fetch.
	indexVal, sigVal remote.Validators
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
	f := &Fetched{sig: sig, HasSignature: sig != nil}
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

// validateFile is [validateIndex] of the size bytes of an index in fh,
// read as they stream: the signature first, then the index.
func validateFile(fh io.ReaderAt, size int64, sig []byte, signers *signing.AllowedSigners) (*Fetched, error) {
	if len(sig) == 0 {
		sig = nil
	}
	f := &Fetched{sig: sig, HasSignature: sig != nil}
	if signers != nil {
		principal, fp, err := signing.VerifyReader(io.NewSectionReader(fh, 0, size), sig, signers, time.Now())
		if err != nil {
			return nil, fmt.Errorf("signature of %s: %w", IndexFile, err)
		}
		f.Signed, f.Principal, f.Fingerprint = true, principal, fp
	} else if sig != nil {
		if fp, err := signing.CheckSignatureReader(io.NewSectionReader(fh, 0, size), sig); err == nil {
			f.Fingerprint = fp
		}
	}
	x, err := index.Decode(fh, size)
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
//
// The requests are conditional on the validators kept from the previous
// fetch (see fetchState), so an unchanged index costs one request
// answered 304 Not Modified, and is neither downloaded nor read again. A
// remote that requires a signature must present a valid one on every
// fetch: its signature is asked for too (conditionally, a second small
// request) and the pair is verified, whichever of the two changed: a new
// signature over the cached index is kept alone; a new index under the
// cached signature must verify like any other pair.
func (r *Repo) Fetch(ctx context.Context) (*Fetched, error) {
	src, err := r.remoteSource()
	if err != nil {
		return nil, err
	}
	have := r.loadFetchState()
	// The index is downloaded to a temp file of the cache (gc leaves it
	// alone) and checked there: 40 MB for 100,000 images, which need not
	// be in memory beside the index they make.
	tmp, err := r.store.CreateTemp("fetch-*")
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", r.Name(), err)
	}
	defer tmp.Discard()
	f, err := r.fetchFrom(ctx, src, have, tmp)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w (the previous index is kept)", r.Name(), err)
	}
	if f.NotModified && f.sig == nil {
		return f, nil // nothing new to keep
	}
	// Two fetches interleaving their writes could pair one's index with
	// the other's signature.
	lk, err := r.store.Lock(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", r.Name(), err)
	}
	defer lk.Unlock()
	if f.NotModified {
		// A new signature of the cached index: that index must still be
		// the one it was verified with.
		if id, ok := idOfPath(filepath.Join(r.Dir(), IndexFile)); !ok || have.Index == nil || id != have.Index.File {
			return nil, fmt.Errorf("fetch %s: the cached index changed during the fetch; fetch again", r.Name())
		}
		if err := r.store.WriteFileAtomic(SigFile, f.sig, indexPerm); err != nil {
			return nil, fmt.Errorf("fetch %s: %w", r.Name(), err)
		}
		f.Changed = true
	} else if f.Changed, err = r.saveIndex(f); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", r.Name(), err)
	}
	if err := r.saveFetchState(have, f); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", r.Name(), err)
	}
	return f, lk.Unlock()
}

// fetchFrom makes the requests of a fetch and checks what they bring; it
// writes nothing.
func (r *Repo) fetchFrom(ctx context.Context, src httpSource, have fetchState, tmp *cas.TempFile) (*Fetched, error) {
	signers, err := src.signers()
	if err != nil {
		return nil, err
	}
	ir, err := src.c.GetIfTo(ctx, src.url, remote.IndexFile, index.MaxIndexSize, have.Index.validators(), tmp.File)
	if err != nil {
		return nil, err
	}
	cachedSig := filepath.Join(r.Dir(), SigFile)
	if ir.NotModified && signers == nil {
		// Nobody requires the signature: one request, and the cache
		// stays as it is.
		_, err := os.Lstat(cachedSig)
		return &Fetched{NotModified: true, HasSignature: err == nil}, nil
	}
	var sig []byte
	var sigVal remote.Validators
	sr, err := src.c.GetIf(ctx, src.url, remote.SigFile, signing.MaxSignatureSize, have.Sig.validators())
	switch {
	case errors.Is(err, remote.ErrNotFound):
	case err != nil:
		return nil, err
	case sr.NotModified:
		// The signature we have: validators are only sent for the very
		// file they came with.
		if sig, err = readCapped(cachedSig, signing.MaxSignatureSize); err != nil {
			return nil, fmt.Errorf("read the cached signature: %w", err)
		}
		sigVal = sr.Validators
	default:
		sig, sigVal = sr.Data, sr.Validators
	}
	if len(sig) == 0 {
		sig = nil
	}
	if !ir.NotModified {
		f, err := validateFile(tmp.File, ir.Size, sig, signers)
		if err != nil {
			return nil, err
		}
		f.tmp, f.indexVal, f.sigVal = tmp, ir.Validators, sigVal
		return f, nil
	}
	// The cached index, under the signature the remote presents now.
	fh, size, err := openFile(filepath.Join(r.Dir(), IndexFile))
	if err != nil {
		return nil, fmt.Errorf("read the cached index: %w", err)
	}
	defer fh.Close()
	principal, fp, err := signing.VerifyReader(io.NewSectionReader(fh, 0, size), sig, signers, time.Now())
	if err != nil {
		return nil, fmt.Errorf("signature of %s: %w", IndexFile, err)
	}
	f := &Fetched{NotModified: true, Signed: true, Principal: principal, Fingerprint: fp, HasSignature: true,
		indexVal: ir.Validators, sigVal: sigVal}
	if !sr.NotModified {
		f.sig = sig // a new signature, to keep
	}
	return f, nil
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
	oldSig, sigErr := readCapped(filepath.Join(r.Dir(), SigFile), signing.MaxSignatureSize)
	sigSame := (f.sig == nil && errors.Is(sigErr, fs.ErrNotExist)) || (f.sig != nil && sigErr == nil && bytes.Equal(oldSig, f.sig))
	if sigSame && sameContent(filepath.Join(r.Dir(), IndexFile), f.tmp.File) {
		return false, nil
	}
	if f.sig != nil {
		if err := r.store.WriteFileAtomic(SigFile, f.sig, indexPerm); err != nil {
			return false, err
		}
	} else if err := removeDurably(filepath.Join(r.Dir(), SigFile)); err != nil {
		return false, err
	}
	if err := r.store.ReplaceFile(f.tmp, IndexFile, indexPerm); err != nil {
		return false, err
	}
	return true, nil
}

// sameContent reports whether the regular file at path holds what f
// holds, read in chunks.
func sameContent(path string, f *os.File) bool {
	old, size, err := openFile(path)
	if err != nil {
		return false
	}
	defer old.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() != size {
		return false
	}
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(a)) {
		n := int(min(int64(len(a)), size-off))
		if _, err := old.ReadAt(a[:n], off); err != nil {
			return false
		}
		if _, err := f.ReadAt(b[:n], off); err != nil {
			return false
		}
		if !bytes.Equal(a[:n], b[:n]) {
			return false
		}
	}
	return true
}

// fetchFile keeps, in the cache of a remote, what its last fetch was
// told of index.yaml and index.yaml.sig: the server's validators (ETag,
// Last-Modified) and the identity of the file each was saved as. A
// fetch sends a file's validators only while that file is still the one
// they came with, so that a crash between the writes of a fetch, or a
// file changed by hand, makes the next request unconditional instead of
// wrongly answered 304. It is written last, after the files it
// describes, atomically like them.
const fetchFile = ".fetch.json"

// fetchState is the content of fetchFile.
type fetchState struct {
	Index *savedFile `json:"index,omitempty"`
	Sig   *savedFile `json:"sig,omitempty"`
}

// savedFile is a cached file and the validators the server gave for it.
type savedFile struct {
	remote.Validators
	File fileID `json:"file"`
}

func (s *savedFile) validators() remote.Validators {
	if s == nil {
		return remote.Validators{}
	}
	return s.Validators
}

// loadFetchState reads fetchFile, keeping the entries whose file is still
// there as it was saved. Anything wrong with it is an empty state: the
// requests are then unconditional, which is always correct.
func (r *Repo) loadFetchState() fetchState {
	var st fetchState
	b, err := readCapped(filepath.Join(r.Dir(), fetchFile), 64<<10)
	if err != nil || json.Unmarshal(b, &st) != nil {
		return fetchState{}
	}
	for _, e := range []struct {
		s    **savedFile
		name string
	}{{&st.Index, IndexFile}, {&st.Sig, SigFile}} {
		if *e.s == nil {
			continue
		}
		if id, ok := idOfPath(filepath.Join(r.Dir(), e.name)); !ok || id != (*e.s).File {
			*e.s = nil
		}
	}
	return st
}

// saveFetchState writes the validators of what f saved, after the files.
func (r *Repo) saveFetchState(have fetchState, f *Fetched) error {
	var st fetchState
	if id, ok := idOfPath(filepath.Join(r.Dir(), IndexFile)); ok {
		v := f.indexVal
		if f.NotModified {
			v = have.Index.validators()
		}
		st.Index = &savedFile{Validators: v, File: id}
	}
	if id, ok := idOfPath(filepath.Join(r.Dir(), SigFile)); ok {
		st.Sig = &savedFile{Validators: f.sigVal, File: id}
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if old, err := readCapped(filepath.Join(r.Dir(), fetchFile), 64<<10); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return r.store.WriteFileAtomic(fetchFile, b, indexPerm)
}

// cachedIndex reads the cached index of a remote and checks it as a fetch
// does: with allowed signers, a cache whose signature does not verify (an
// index written by hand, a crash between the two writes of saveIndex) is
// refused, not trusted because it is local. A remote never fetched has an
// error matching [ErrNoIndex]. The index file is read as it streams,
// twice with allowed signers (hashed, then parsed): it need not be in
// memory beside the index it makes.
func (r *Repo) cachedIndex() (*Fetched, error) {
	fh, size, err := openFile(filepath.Join(r.Dir(), IndexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), ErrNoIndex)
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: read the cached index: %w", r.Name(), err)
	}
	defer fh.Close()
	if size > index.MaxIndexSize {
		return nil, fmt.Errorf("repository %s: read the cached index: %s holds more than %d bytes", r.Name(), IndexFile, index.MaxIndexSize)
	}
	sig, err := readCapped(filepath.Join(r.Dir(), SigFile), signing.MaxSignatureSize)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repository %s: read the cached index: %w", r.Name(), err)
	}
	if len(sig) == 0 {
		sig = nil
	}
	signers, err := r.Signers()
	if err != nil {
		return nil, err
	}
	refused := func(err error) error {
		return fmt.Errorf("repository %s: %w (cached in %s; fetch again)", r.Name(), err, r.Dir())
	}
	f := &Fetched{HasSignature: sig != nil}
	if signers != nil {
		principal, fp, err := signing.VerifyReader(io.NewSectionReader(fh, 0, size), sig, signers, time.Now())
		if err != nil {
			return nil, refused(fmt.Errorf("signature of %s: %w", IndexFile, err))
		}
		f.Signed, f.Principal, f.Fingerprint = true, principal, fp
	}
	if f.Index, err = index.Decode(fh, size); err != nil {
		return nil, refused(fmt.Errorf("%s: %w", IndexFile, err))
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
