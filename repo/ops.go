package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
)

// Tag points tag at id, and returns the image it pointed at before, if
// any.
func (r *Repo) Tag(ctx context.Context, tag string, id digest.Digest) (prev digest.Digest, err error) {
	err = r.Update(ctx, func(ix *index.Index) error {
		prev, err = ix.SetTag(tag, id)
		return err
	})
	return prev, err
}

// DeleteTag removes a tag and returns the image it pointed at.
func (r *Repo) DeleteTag(ctx context.Context, tag string) (id digest.Digest, err error) {
	err = r.Update(ctx, func(ix *index.Index) error {
		id, err = ix.DeleteTag(tag)
		return err
	})
	return id, err
}

// Delete removes an image, its tags and its blob. While the image has
// children it refuses, unless recursive, which removes them too. It
// returns the removed images, leaves first.
func (r *Repo) Delete(ctx context.Context, id digest.Digest, recursive bool) ([]digest.Digest, error) {
	var removed []digest.Digest
	var blobs []digest.Digest
	err := r.Update(ctx, func(ix *index.Index) error {
		for _, d := range ix.Descendants(id) {
			if e, err := ix.Entry(d); err == nil && e.Blob != "" {
				blobs = append(blobs, e.Blob)
			}
		}
		if e, err := ix.Entry(id); err == nil && e.Blob != "" {
			blobs = append(blobs, e.Blob)
		}
		var err error
		removed, err = ix.Remove(id, recursive)
		return err
	})
	if err != nil {
		return nil, err
	}
	// The index no longer references the blobs; removing them is now
	// safe, and what a crash leaves behind is gc's.
	lk, err := r.store.Lock(ctx)
	if err != nil {
		return removed, err
	}
	defer lk.Unlock()
	ix, err := r.Index()
	if err != nil {
		return removed, err
	}
	for _, b := range blobs {
		if referenced(ix, b) {
			continue
		}
		if err := r.store.Remove(b); err != nil && !errors.Is(err, cas.ErrNotFound) {
			return removed, err
		}
	}
	return removed, nil
}

func referenced(ix *index.Index, blob digest.Digest) bool {
	for _, e := range ix.Images {
		if e.Blob == blob {
			return true
		}
	}
	return false
}

// GC removes .tmp/ leftovers of dead processes and blobs no image
// references.
func (r *Repo) GC(ctx context.Context) (cas.GCReport, error) {
	lk, err := r.store.Lock(ctx)
	if err != nil {
		return cas.GCReport{}, err
	}
	defer lk.Unlock()
	ix, err := r.Index()
	if err != nil {
		return cas.GCReport{}, err
	}
	keep := map[digest.Digest]bool{}
	for _, e := range ix.Images {
		keep[e.Blob] = true
	}
	return r.store.GC(ctx, lk, func(d digest.Digest) bool { return keep[d] })
}

// ExportOptions says how to write an exported image.
type ExportOptions struct {
	Raw         bool
	Compression qcow2.Compression // qcow2 output; "" is none
	Progress    func(done int64)
}

// Export writes an image, its chain flattened, as one standalone file.
func (r *Repo) Export(ctx context.Context, ix *index.Index, id digest.Digest, f *os.File, opt ExportOptions) error {
	d, err := r.OpenImage(ix, id)
	if err != nil {
		return err
	}
	defer d.Close()
	if opt.Raw {
		return qcow2.ConvertRaw(ctx, f, d, qcow2.ScanOptions{Progress: opt.Progress})
	}
	_, err = qcow2.Convert(ctx, f, d, qcow2.ConvertOptions{Compression: opt.Compression, Progress: opt.Progress})
	return err
}

// Overlay writes to w a new, empty qcow2 image whose backing file is the
// image's blob, by absolute path, so that a VM can run on it.
func (r *Repo) Overlay(ix *index.Index, id digest.Digest, w io.WriterAt) error {
	e, err := ix.Entry(id)
	if err != nil {
		return err
	}
	d, err := r.OpenImage(ix, id) // the chain must be complete and sound
	if err != nil {
		return err
	}
	d.Close()
	p, err := r.BlobPath(e)
	if err != nil {
		return err
	}
	return qcow2.Create(w, e.VirtualSize, qcow2.ConvertOptions{BackingFile: p, BackingFormat: qcow2.FormatQcow2})
}

// OverlayLazy writes to w a new, empty qcow2 image whose backing file is
// the NBD export of image id on the unix socket sock (format raw), as
// canga nbd serves it (SPEC §9): a VM boots on it before the image is
// downloaded.
func (r *Repo) OverlayLazy(ix *index.Index, id digest.Digest, sock string, w io.WriterAt) error {
	e, err := ix.Entry(id)
	if err != nil {
		return err
	}
	if !filepath.IsAbs(sock) {
		return fmt.Errorf("socket %s: give an absolute path, which the overlay keeps", sock)
	}
	return qcow2.Create(w, e.VirtualSize, qcow2.ConvertOptions{BackingFile: "nbd+unix:///?socket=" + sock, BackingFormat: qcow2.FormatRaw})
}

// Fault is one problem fsck found.
type Fault struct {
	Image   digest.Digest // empty for problems of no image
	Problem string
}

// FsckReport is what [Repo.Fsck] found.
type FsckReport struct {
	Images     int
	Blobs      int
	NotPulled  int      // images of a remote's cache not downloaded: not a fault
	Unused     []string // blobs no image references: gc removes them
	Faults     []Fault
	CheckedIDs int
}

// Fsck checks every blob's digest, every image ID, every chain and
// backing name, and each blob's qcow2 metadata.
func (r *Repo) Fsck(ctx context.Context, progress func(what string, done, total int64)) (*FsckReport, error) {
	rep := &FsckReport{}
	ix, err := r.Index()
	if err != nil {
		return nil, err
	}
	if err := ix.Validate(); err != nil {
		rep.Faults = append(rep.Faults, Fault{Problem: err.Error()})
	}
	fault := func(id digest.Digest, format string, args ...any) {
		rep.Faults = append(rep.Faults, Fault{Image: id, Problem: fmt.Sprintf(format, args...)})
	}
	blobs, junk, err := r.store.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, j := range junk {
		fault("", "junk in the blob store: %s (%s)", j.Path, j.Reason)
	}
	used := map[digest.Digest]bool{}
	for _, e := range ix.Images {
		used[e.Blob] = true
	}
	for _, b := range blobs {
		rep.Blobs++
		if b.Mode.Perm()&0o222 != 0 {
			fault("", "blob %s is writable (mode %v)", b.Digest, b.Mode.Perm())
		}
		if !used[b.Digest] {
			rep.Unused = append(rep.Unused, string(b.Digest))
		}
	}
	ids := ix.IDs()
	rep.Images = len(ids)
	present := map[digest.Digest]bool{}
	for _, id := range ids {
		e := ix.Images[id]
		if !r.Present(e) {
			if r.conf.Remote() {
				rep.NotPulled++
			} else {
				fault(id, "blob %s is missing", e.Blob)
			}
			continue
		}
		present[id] = true
		p, _ := r.BlobPath(e)
		if e.Blob != "" {
			if err := r.store.Verify(ctx, e.Blob, nil); err != nil {
				fault(id, "blob: %v", err)
				present[id] = false
				continue
			}
			if fi, err := os.Stat(p); err == nil && fi.Size() != e.BlobSize {
				fault(id, "blob is %d bytes, the index says %d", fi.Size(), e.BlobSize)
			}
		}
		if err := checkBlob(ix, r, id, p); err != nil {
			fault(id, "%v", err)
			present[id] = false
		}
	}
	// Image IDs, parents first so a broken parent is reported once.
	for n, id := range ids {
		if progress != nil {
			progress("image IDs", int64(n), int64(len(ids)))
		}
		chain, err := ix.Chain(id)
		if err != nil {
			fault(id, "chain: %v", err)
			continue
		}
		if !slices.ContainsFunc(chain, func(c digest.Digest) bool { return !present[c] }) {
			d, err := r.OpenImage(ix, id)
			if err != nil {
				fault(id, "open: %v", err)
				continue
			}
			got, err := qcow2.Digest(ctx, d, qcow2.ScanOptions{})
			d.Close()
			if err != nil {
				fault(id, "read: %v", err)
				continue
			}
			rep.CheckedIDs++
			if got != id {
				fault(id, "content digest is %s: the image ID does not match", got)
			}
			if d.Size() != ix.Images[id].VirtualSize {
				fault(id, "virtual size is %d, the index says %d", d.Size(), ix.Images[id].VirtualSize)
			}
		}
	}
	return rep, nil
}

// checkBlob checks a blob's header against the index (format, backing
// name and format) and its qcow2 metadata.
func checkBlob(ix *index.Index, r *Repo, id digest.Digest, path string) error {
	f, size, err := openFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h, err := qcow2.ReadHeader(f, size)
	if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	e := ix.Images[id]
	want := ""
	if e.Parent != "" {
		pe, err := ix.Entry(e.Parent)
		if err != nil {
			return err
		}
		pp, err := r.BlobPath(pe)
		if err != nil {
			return err
		}
		want = filepath.Base(pp)
	}
	if h.BackingFile != want {
		return fmt.Errorf("blob names backing file %q, want %q", h.BackingFile, want)
	}
	if want != "" && h.BackingFormat != qcow2.FormatQcow2 {
		return fmt.Errorf("blob's backing format is %q, want qcow2", h.BackingFormat)
	}
	res, err := qcow2.Check(f, size)
	if err != nil {
		return fmt.Errorf("blob metadata: %w", err)
	}
	if res.Corruptions+res.CheckErrors > 0 {
		return fmt.Errorf("blob metadata: %d corruptions, %d check errors", res.Corruptions, res.CheckErrors)
	}
	if res.Leaks > 0 {
		return fmt.Errorf("blob metadata: %d leaked clusters", res.Leaks)
	}
	return nil
}
