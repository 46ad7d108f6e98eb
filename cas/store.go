package cas

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/cangallo/canga/internal/atomicfile"
	"github.com/opencontainers/go-digest"
)

const (
	blobsDir  = "blobs"
	algoDir   = "sha256"
	tmpDir    = ".tmp"
	lockName  = ".lock"
	blobPerm  = 0o444
	dirPerm   = 0o755
	bufSize   = 1 << 20
	partialNm = "partial-"
)

// Store is a repository directory seen as a blob store. It is safe for
// concurrent use by several goroutines, and several processes may use the
// same directory at once (see the package comment for what needs the lock).
type Store struct {
	dir     string // absolute, so that Path gives names usable as backing files
	blobs   string // dir/blobs/sha256/, for blobPath
	laidOut atomic.Bool
}

// BlobInfo describes one stored blob.
type BlobInfo struct {
	Digest digest.Digest
	Size   int64
	// Mode is the permission bits found on disk (0444 when written by cas);
	// fsck may complain about anything else.
	Mode fs.FileMode
	// Chunks is the blob's chunk list, when the write was asked for it
	// ([WithChunks]).
	Chunks []byte
}

// Junk is an entry under blobs/ that is not a blob: a bad name, a directory,
// a symlink. List and GC report junk and never remove it.
type Junk struct {
	Path   string // relative to the repository directory, slash-separated
	Reason string
}

// Open returns the store of an existing repository directory. It creates
// nothing, so it works on read-only copies; the layout is created on demand by
// the first write, or up front by [Init].
func Open(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, wrap("open", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, wrap("open", dir, fmt.Errorf("%w: %w", ErrNotFound, err))
		}
		return nil, wrap("open", dir, err)
	}
	if !fi.IsDir() {
		return nil, wrap("open", dir, errors.New("not a directory"))
	}
	return &Store{dir: abs, blobs: filepath.Join(abs, blobsDir, algoDir) + string(filepath.Separator)}, nil
}

// Init creates the repository directory (and its parents) and the store's
// layout, and returns the store. It is harmless on an existing repository.
func Init(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, wrap("init", dir, notWritable(err))
	}
	s, err := Open(dir)
	if err != nil {
		return nil, err
	}
	if err := s.ensureLayout(); err != nil {
		return nil, wrap("init", dir, err)
	}
	return s, nil
}

// Dir is the repository directory, absolute.
func (s *Store) Dir() string { return s.dir }

func (s *Store) blobDir() string { return filepath.Join(s.dir, blobsDir, algoDir) }
func (s *Store) tmpPath() string { return filepath.Join(s.dir, tmpDir) }

// blobPath is only called with validated digests.
func (s *Store) blobPath(d digest.Digest) string {
	// A concatenation, not filepath.Join: fsck and list make one for
	// each of 100,000 images.
	return s.blobs + string(d)[len(sha256Prefix):]
}

// ensureLayout creates blobs/sha256 and .tmp, fsyncing each parent whose
// entries changed so that a crash cannot lose a directory a blob was renamed
// into.
func (s *Store) ensureLayout() error {
	if s.laidOut.Load() {
		return nil
	}
	for _, rel := range []string{blobsDir, filepath.Join(blobsDir, algoDir), tmpDir} {
		p := filepath.Join(s.dir, rel)
		err := os.Mkdir(p, dirPerm)
		if err == nil {
			if err := atomicfile.SyncDir(filepath.Dir(p)); err != nil {
				return err
			}
			continue
		}
		if !errors.Is(err, fs.ErrExist) {
			return notWritable(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
	}
	s.laidOut.Store(true)
	return nil
}

// relayout reports whether err says that .tmp/ (or blobs/) went away since
// the layout was made, say by an rsync --delete from a copy without it, and
// makes it again if so: the caller then retries once more.
func (s *Store) relayout(err error) bool {
	if !errors.Is(err, fs.ErrNotExist) || !s.laidOut.Load() {
		return false
	}
	s.laidOut.Store(false)
	return s.ensureLayout() == nil
}

// Path is the file name of blob d (which may or may not exist). It is
// absolute, so it can serve as a qcow2 backing file name.
func (s *Store) Path(d digest.Digest) (string, error) {
	if err := ValidateDigest(d); err != nil {
		return "", wrap("path", "", err)
	}
	return s.blobPath(d), nil
}

// lstatBlob finds blob d; only a regular file counts, the same rule List uses.
func (s *Store) lstatBlob(d digest.Digest) (fs.FileInfo, error) {
	fi, err := os.Lstat(s.blobPath(d))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w (%s is not a regular file)", ErrNotFound, s.blobPath(d))
	}
	return fi, nil
}

// Has reports whether blob d is stored.
func (s *Store) Has(d digest.Digest) (bool, error) {
	if err := ValidateDigest(d); err != nil {
		return false, wrap("has", "", err)
	}
	_, err := s.lstatBlob(d)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	default:
		return false, wrap("has", string(d), err)
	}
}

// Stat returns the size of blob d, or an error matching [ErrNotFound].
func (s *Store) Stat(d digest.Digest) (BlobInfo, error) {
	if err := ValidateDigest(d); err != nil {
		return BlobInfo{}, wrap("stat", "", err)
	}
	fi, err := s.lstatBlob(d)
	if err != nil {
		return BlobInfo{}, wrap("stat", string(d), err)
	}
	return BlobInfo{Digest: d, Size: fi.Size(), Mode: fi.Mode().Perm()}, nil
}

// Open opens blob d for reading. The *os.File is an [io.ReaderAt]; its Stat
// gives the size. A missing blob is an error matching [ErrNotFound].
func (s *Store) Open(d digest.Digest) (*os.File, error) {
	if err := ValidateDigest(d); err != nil {
		return nil, wrap("open", "", err)
	}
	f, err := s.openBlob(d)
	if err != nil {
		return nil, wrap("open", string(d), err)
	}
	return f, nil
}

func (s *Store) openBlob(d digest.Digest) (*os.File, error) {
	// Checking the type first keeps a FIFO planted under a blob name from
	// blocking the open.
	if _, err := s.lstatBlob(d); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(s.blobPath(d), os.O_RDONLY|noFollow, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = ErrNotFound
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = ErrNotFound
	}
	if err != nil {
		_ = f.Close() // the error that matters is err
		return nil, err
	}
	return f, nil
}

// Verify re-hashes blob d and returns a [*DigestMismatchError] if its bytes
// no longer match its name.
func (s *Store) Verify(ctx context.Context, d digest.Digest, progress func(n int64)) error {
	_, err := s.verify(ctx, d, 0, progress)
	return err
}

// VerifyChunkList re-hashes blob d as Verify does and, in the same pass,
// computes its chunk list in chunks of chunkSize, which it returns once the
// blob matches its name.
func (s *Store) VerifyChunkList(ctx context.Context, d digest.Digest, chunkSize int64, progress func(n int64)) ([]byte, error) {
	if err := CheckChunkSize(chunkSize); err != nil {
		return nil, wrap("verify", string(d), err)
	}
	return s.verify(ctx, d, chunkSize, progress)
}

func (s *Store) verify(ctx context.Context, d digest.Digest, chunkSize int64, progress func(n int64)) ([]byte, error) {
	if err := ValidateDigest(d); err != nil {
		return nil, wrap("verify", "", err)
	}
	f, err := s.openBlob(d)
	if err != nil {
		return nil, wrap("verify", string(d), err)
	}
	defer f.Close() // read-only: Close has nothing to report
	h := sha256.New()
	hw, ch := hashers(h, options{chunkSize: chunkSize})
	if _, err := copyHashed(ctx, nil, f, hw, 0, -1, progress); err != nil {
		return nil, wrap("verify", string(d), err)
	}
	if actual := digest.NewDigest(digest.SHA256, h); actual != d {
		return nil, wrap("verify", string(d), &DigestMismatchError{Expected: d, Actual: actual})
	}
	if ch == nil {
		return nil, nil
	}
	return ch.list(), nil
}

// List returns every blob, sorted by digest, and every junk entry under
// blobs/. A repository without blobs/ has no blobs.
func (s *Store) List(ctx context.Context) ([]BlobInfo, []Junk, error) {
	var blobs []BlobInfo
	junk, err := s.scan(ctx, func(d digest.Digest, e fs.DirEntry) error {
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed since ReadDir: not a blob any more
		}
		if err != nil {
			return err
		}
		blobs = append(blobs, BlobInfo{Digest: d, Size: fi.Size(), Mode: fi.Mode().Perm()})
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return blobs, junk, nil
}

// Digests is [Store.List] without sizes and modes: one read of the blob
// directory, no blob opened or stat'ed (the directory says which entries
// are regular files), which matters in a store of 100,000 blobs. A blob
// removed meanwhile may still be listed.
func (s *Store) Digests(ctx context.Context) ([]digest.Digest, []Junk, error) {
	var blobs []digest.Digest
	junk, err := s.scan(ctx, func(d digest.Digest, _ fs.DirEntry) error {
		blobs = append(blobs, d)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return blobs, junk, nil
}

// scan calls fn for every blob of blobs/sha256, in digest order, and
// returns the junk under blobs/.
func (s *Store) scan(ctx context.Context, fn func(d digest.Digest, e fs.DirEntry) error) ([]Junk, error) {
	var junk []Junk
	top, err := os.ReadDir(filepath.Join(s.dir, blobsDir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, wrap("list", s.dir, err)
	}
	for _, e := range top {
		if e.Name() == algoDir && e.IsDir() {
			continue
		}
		junk = append(junk, Junk{Path: blobsDir + "/" + e.Name(), Reason: "unexpected entry"})
	}
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return junk, nil
		}
		return nil, wrap("list", s.dir, err)
	}
	for i, e := range entries {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, wrap("list", s.dir, err)
			}
		}
		rel := blobsDir + "/" + algoDir + "/" + e.Name()
		if !isHex64(e.Name()) {
			junk = append(junk, Junk{Path: rel, Reason: "not a lowercase sha256 hex name"})
			continue
		}
		if !e.Type().IsRegular() {
			junk = append(junk, Junk{Path: rel, Reason: "not a regular file"})
			continue
		}
		if err := fn(digest.Digest(sha256Prefix+e.Name()), e); err != nil {
			return nil, wrap("list", s.dir, err)
		}
	}
	return junk, nil
}

// Remove deletes blob d. The caller holds the repository lock (see the
// package comment). A missing blob is an error matching [ErrNotFound].
func (s *Store) Remove(d digest.Digest) error {
	if err := ValidateDigest(d); err != nil {
		return wrap("remove", "", err)
	}
	if _, err := s.lstatBlob(d); err != nil {
		return wrap("remove", string(d), err)
	}
	if err := os.Remove(s.blobPath(d)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = ErrNotFound
		}
		return wrap("remove", string(d), notWritable(err))
	}
	return wrap("remove", string(d), atomicfile.SyncDir(s.blobDir()))
}
