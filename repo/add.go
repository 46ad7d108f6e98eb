package repo

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// AddOptions describes an image being added.
type AddOptions struct {
	Tag         string
	Description string
	OS          string
	// Parent, when set, makes the image a delta against that image of the
	// repository, whatever the file's backing chain says.
	Parent      digest.Digest
	Compression qcow2.Compression // default zlib
	Cangafile   *yaml.Node
	// ChunkSize is the chunk size of the blob's chunk list
	// (DefaultChunkSize when 0).
	ChunkSize int64
	// Progress receives guest bytes processed out of total.
	Progress func(done, total int64)
	// Notice receives what the user should know (the parent found in the
	// file's backing chain, a tag moved).
	Notice func(string)
}

// AddResult is what [Repo.Add] did.
type AddResult struct {
	ID      digest.Digest
	Entry   *index.Entry
	Existed bool // the image was there already; only the tag may have changed
	// Restored is set when the image was there but its blob was lost:
	// the new blob takes its place.
	Restored bool
	Tag      string        // the tag given, if any
	Moved    digest.Digest // the image the tag was moved from, if it moved
}

// Add stores the disk image at file: one pass over it computes the image
// ID and writes the compressed blob together. When file's backing chain
// leads to an image of the repository (by blob file or by content), or
// opt.Parent names one, the blob is a delta against that image, with the
// parent's blob as backing file.
func (r *Repo) Add(ctx context.Context, file string, opt AddOptions) (*AddResult, error) {
	if opt.Tag != "" {
		if err := index.ValidateTag(opt.Tag); err != nil {
			return nil, err
		}
	}
	comp := opt.Compression
	if comp == "" {
		comp = qcow2.CompressionZlib
	}
	if !comp.Valid() {
		return nil, fmt.Errorf("unknown compression %q (zlib, zstd or none)", comp)
	}
	chunkSize := opt.ChunkSize
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if !index.ValidChunkSize(chunkSize) {
		return nil, fmt.Errorf("chunk size %d: want a power of two from %d to %d", chunkSize, index.MinChunkSize, index.MaxChunkSize)
	}
	src, err := qcow2.OpenFile(file)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	ix, err := r.Index()
	if err != nil {
		return nil, err
	}

	parent, base, same, closeBase, err := r.findParent(ctx, ix, src, opt)
	if err != nil {
		return nil, err
	}
	defer closeBase()

	tmp, err := r.store.CreateTemp("add-*.qcow2")
	if err != nil {
		return nil, err
	}
	defer tmp.Discard()
	// Blobs keep qemu's 64 KiB clusters whatever the compression: they
	// are delta bases and VM backing files, where a finer grain wins.
	copt := qcow2.ConvertOptions{Hash: sha256.New(), Base: base, SameAsBase: same, ClusterSize: qcow2.DefaultClusterSize, Compression: comp}
	if opt.Progress != nil {
		total := src.Size()
		copt.Progress = func(done int64) { opt.Progress(done, total) }
	}
	var pe *index.Entry
	if parent != "" {
		pe, _ = ix.Entry(parent)
		copt.BackingFile, copt.BackingFormat = pe.Blob.Encoded(), qcow2.FormatQcow2
	}
	st, err := qcow2.Convert(ctx, tmp.File, src, copt)
	if err != nil {
		return nil, fmt.Errorf("add %s: %w", file, err)
	}
	id := digest.NewDigest(digest.SHA256, copt.Hash)
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	// The conversion's buffers (tens of MiB) are garbage now: collected
	// here, their memory serves the hashing of the blob that follows
	// instead of growing the process by its buffers.
	runtime.GC()

	res := &AddResult{ID: id, Tag: opt.Tag}
	err = r.Update(ctx, func(ix *index.Index) error {
		if e, err := ix.Entry(id); err == nil {
			res.Existed, res.Entry = true, e
			if !r.Present(e) {
				if parent != e.Parent {
					return fmt.Errorf("%w: image %s lost its blob, and this file would store it on %s where the index says %s", ErrWrongParent, index.ShortID(id), describeParent(parent), describeParent(e.Parent))
				}
				if err := r.restoreBlob(ctx, ix, id, e, tmp); err != nil {
					return err
				}
				res.Restored = true
			}
			return r.tagLocked(ix, opt.Tag, id, res)
		}
		if parent != "" {
			if _, err := ix.Entry(parent); err != nil {
				return fmt.Errorf("parent %s was deleted while adding: %w", index.ShortID(parent), err)
			}
		}
		blob, err := r.store.CommitFile(ctx, tmp, "", nil, cas.WithChunks(chunkSize))
		if err != nil {
			return err
		}
		e := &index.Entry{
			Blob:        blob.Digest,
			BlobSize:    blob.Size,
			Parent:      parent,
			VirtualSize: st.VirtualSize,
			ClusterSize: qcow2.DefaultClusterSize,
			Compression: comp,
			Created:     time.Now().UTC().Truncate(time.Second),
			Description: opt.Description,
			OS:          opt.OS,
			Cangafile:   opt.Cangafile,
		}
		if err := r.setChunks(ctx, e, blob, chunkSize, ""); err != nil {
			return err
		}
		if err := ix.Put(id, e); err != nil {
			return err
		}
		res.Entry = e
		return r.tagLocked(ix, opt.Tag, id, res)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

var (
	// ErrWrongParent: a file would restore the lost blob of an image
	// on another parent than the index's; AddOptions.Parent says which.
	ErrWrongParent = errors.New("repo: not the image's parent")
	// ErrLostBlob: an image's blob is missing and cannot be restored.
	ErrLostBlob = errors.New("repo: blob lost")
)

// describeParent names a parent in a message.
func describeParent(id digest.Digest) string {
	if id == "" {
		return "no parent (a base image)"
	}
	return "parent " + index.ShortID(id)
}

// restoreBlob puts back the lost blob of image id from the blob just
// written (tmp). The same bytes restore it as it was; other bytes (another
// compression, another parent found) replace it, unless children name the
// old blob as their backing file.
func (r *Repo) restoreBlob(ctx context.Context, ix *index.Index, id digest.Digest, e *index.Entry, tmp *cas.TempFile) error {
	size := chunkSizeOf(e)
	blob, err := r.store.CommitFile(ctx, tmp, "", nil, cas.WithChunks(size))
	if err != nil {
		return err
	}
	if blob.Digest == e.Blob {
		if e.Chunks != "" {
			// Put the chunk list back too, if it went with the blob.
			return r.setChunks(ctx, &index.Entry{}, blob, size, e.Chunks)
		}
		ne := *e
		if err := r.setChunks(ctx, &ne, blob, size, ""); err != nil {
			return err
		}
		return ix.Put(id, &ne)
	}
	if kids := ix.Children(id); len(kids) > 0 {
		return fmt.Errorf("%w: image %s lost its blob %s and its children name that blob: restore the blob from a copy, or delete the image and its children", ErrLostBlob, index.ShortID(id), e.Blob)
	}
	ne := *e
	ne.Blob, ne.BlobSize = blob.Digest, blob.Size
	if err := r.setChunks(ctx, &ne, blob, size, ""); err != nil {
		return err
	}
	return ix.Put(id, &ne)
}

func (r *Repo) tagLocked(ix *index.Index, tag string, id digest.Digest, res *AddResult) error {
	if tag == "" {
		return nil
	}
	prev, err := ix.SetTag(tag, id)
	if err != nil {
		return err
	}
	if prev != "" && prev != id {
		res.Moved = prev
	}
	return nil
}

// findParent decides what the new image is a delta against. It returns
// the parent's ID (empty for a base image), the disk to compare with, and,
// when the parent is a layer of src's own chain, which ranges of src are
// the parent's unchanged.
func (r *Repo) findParent(ctx context.Context, ix *index.Index, src qcow2.Disk, opt AddOptions) (id digest.Digest, base qcow2.Disk, same func(off, n int64) (qcow2.Extent, error), closeFn func(), err error) {
	closeFn = func() {}
	notice := func(format string, args ...any) {
		if opt.Notice != nil {
			opt.Notice(fmt.Sprintf(format, args...))
		}
	}
	layers := chainOf(src)
	if opt.Parent != "" {
		pe, err := ix.Entry(opt.Parent)
		if err != nil {
			return "", nil, nil, closeFn, err
		}
		p, err := r.BlobPath(pe)
		if err != nil {
			return "", nil, nil, closeFn, err
		}
		for i, l := range layers[1:] {
			if sameFile(l.name, p) {
				return opt.Parent, l.disk, aboveLayer(layers[:i+1]), closeFn, nil
			}
		}
		d, err := r.OpenImage(ix, opt.Parent)
		if err != nil {
			return "", nil, nil, closeFn, fmt.Errorf("parent: %w", err)
		}
		return opt.Parent, d, nil, func() { d.Close() }, nil
	}
	if len(layers) < 2 {
		return "", nil, nil, closeFn, nil
	}
	// A backing file that is a blob of this repository.
	byBlob := map[string]digest.Digest{}
	for _, id := range ix.IDs() {
		e := ix.Images[id]
		if p, err := r.BlobPath(e); err == nil && r.Present(e) {
			byBlob[p] = id
		}
	}
	for i, l := range layers[1:] {
		for p, id := range byBlob {
			if sameFile(l.name, p) {
				notice("parent %s: the file's backing chain reaches its blob", index.ShortID(id))
				return id, l.disk, aboveLayer(layers[:i+1]), closeFn, nil
			}
		}
	}
	// A backing file whose content is an image of this repository.
	for i, l := range layers[1:] {
		d, err := qcow2.Digest(ctx, l.disk, qcow2.ScanOptions{})
		if err != nil {
			return "", nil, nil, closeFn, fmt.Errorf("digest of backing file %s: %w", l.name, err)
		}
		if _, err := ix.Entry(d); err == nil {
			notice("parent %s: backing file %s has its content", index.ShortID(d), l.name)
			return d, l.disk, aboveLayer(layers[:i+1]), closeFn, nil
		}
	}
	notice("the file's backing chain is not in repository %s: storing the whole image", r.Name())
	return "", nil, nil, closeFn, nil
}

// layer is one file of a backing chain.
type layer struct {
	name string
	disk qcow2.Disk
}

// chainOf lists src and its backing files, top first.
func chainOf(src qcow2.Disk) []layer {
	var out []layer
	for d := src; d != nil; {
		img, ok := d.(*qcow2.Image)
		if !ok {
			if raw, ok := d.(*qcow2.Raw); ok {
				out = append(out, layer{raw.Name(), d})
			}
			break
		}
		out = append(out, layer{img.Name(), d})
		d = img.Backing()
	}
	return out
}

// aboveLayer reports, for a range, whether any of the given layers (those
// above the parent) allocates it: [qcow2.Unallocated] means none does, so
// the range reads as the parent's.
func aboveLayer(above []layer) func(off, n int64) (qcow2.Extent, error) {
	return func(off, n int64) (qcow2.Extent, error) {
		ext := qcow2.Extent{Offset: off, Length: n, Kind: qcow2.Unallocated}
		for _, l := range above {
			img, ok := l.disk.(*qcow2.Image)
			if !ok {
				return qcow2.Extent{Offset: off, Length: n, Kind: qcow2.Data}, nil
			}
			e, err := img.Layer(off, ext.Length)
			if err != nil {
				return qcow2.Extent{}, err
			}
			if e.Length <= 0 {
				// Past the end of a smaller layer: the parent shows through
				// only if the layer is not smaller than the parent.
				return qcow2.Extent{Offset: off, Length: n, Kind: qcow2.Data}, nil
			}
			if e.Kind != qcow2.Unallocated {
				return qcow2.Extent{Offset: off, Length: e.Length, Kind: qcow2.Data}, nil
			}
			ext.Length = min(ext.Length, e.Length)
		}
		return ext, nil
	}
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}
