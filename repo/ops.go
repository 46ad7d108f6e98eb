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
	"runtime"
	"slices"
	"sync/atomic"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
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
				if e.Chunks != "" {
					blobs = append(blobs, e.Chunks)
				}
			}
		}
		if e, err := ix.Entry(id); err == nil && e.Blob != "" {
			blobs = append(blobs, e.Blob)
			if e.Chunks != "" {
				blobs = append(blobs, e.Chunks)
			}
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
	used := referenced(ix)
	for _, b := range blobs {
		if used[b] {
			continue
		}
		if err := r.store.Remove(b); err != nil && !errors.Is(err, cas.ErrNotFound) {
			return removed, err
		}
	}
	return removed, nil
}

// referenced is the set of blobs the images of ix use: their blobs and
// their chunk lists.
func referenced(ix *index.Index) map[digest.Digest]bool {
	used := make(map[digest.Digest]bool, 2*len(ix.Images))
	for _, e := range ix.Images {
		used[e.Blob] = true
		if e.Chunks != "" {
			used[e.Chunks] = true
		}
	}
	return used
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
	keep := referenced(ix)
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
	Quick      bool `json:",omitempty"` // blob digests, image IDs and qcow2 metadata were not checked
}

// FsckOptions say how much [Repo.FsckWith] reads.
type FsckOptions struct {
	// Quick skips what reads the content of blobs: every blob's digest,
	// every image ID, and each blob's qcow2 metadata (refcounts, L1 and
	// L2 tables). What is left reads the index, the blob directory and
	// the header of each blob: seconds for 100,000 images, where the rest
	// reads every byte of the repository.
	Quick bool
	// Progress hears the image IDs checked out of the total.
	Progress func(what string, done, total int64)
}

// Fsck checks every blob's digest, every image ID, every chain and
// backing name, and each blob's qcow2 metadata.
func (r *Repo) Fsck(ctx context.Context, progress func(what string, done, total int64)) (*FsckReport, error) {
	return r.FsckWith(ctx, FsckOptions{Progress: progress})
}

// FsckWith is [Repo.Fsck] with options.
func (r *Repo) FsckWith(ctx context.Context, opt FsckOptions) (*FsckReport, error) {
	rep := &FsckReport{Quick: opt.Quick}
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
	// One read of the blob directory; each image's blob is then opened
	// once, and its size and mode come from that open file rather than
	// from a stat of every blob first (100,000 of them).
	blobs, junk, err := r.store.Digests(ctx)
	if err != nil {
		return nil, err
	}
	for _, j := range junk {
		fault("", "junk in the blob store: %s (%s)", j.Path, j.Reason)
	}
	ids := ix.IDs()
	rep.Images, rep.Blobs = len(ids), len(blobs)
	pos := make(map[digest.Digest]int32, len(blobs))
	for i, b := range blobs {
		pos[b] = int32(i)
	}
	type result struct {
		problems []string
		ok       bool // the blob can be read for the image ID
		blob     int32
		mode     fs.FileMode
	}
	results := make([]result, len(ids))
	used := make([]bool, len(blobs))
	var jobs []int
	for n, id := range ids {
		e := ix.Images[id]
		res := &results[n]
		res.blob = -1
		present := false
		if e.Blob == "" {
			present = r.Present(e) // a Cangallo file, beside the index
		} else if i, ok := pos[e.Blob]; ok {
			present, res.blob, used[i] = true, i, true
		}
		if e.Chunks != "" {
			if i, ok := pos[e.Chunks]; ok {
				used[i] = true
			} else if present && !r.conf.Remote() {
				// A remote's cache may lack the chunk list of an image
				// pulled before its remote had one: lazy reads fetch it.
				res.problems = append(res.problems, fmt.Sprintf("chunk list %s is missing", e.Chunks))
			}
		}
		if !present {
			if r.conf.Remote() {
				rep.NotPulled++
			} else {
				res.problems = []string{fmt.Sprintf("blob %s is missing", e.Blob)}
			}
			continue
		}
		jobs = append(jobs, n)
	}
	// The blobs of the images in parallel: 100,000 headers in quick mode,
	// 100,000 blobs to hash otherwise.
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range runtime.GOMAXPROCS(0) {
		g.Go(func() error {
			for {
				j := int(next.Add(1) - 1)
				if j >= len(jobs) {
					return nil
				}
				if err := gctx.Err(); err != nil {
					return err
				}
				n := jobs[j]
				res := &results[n]
				var problems []string
				problems, res.ok, res.mode = r.checkImage(gctx, ix, ids[n], ix.Images[ids[n]], opt.Quick)
				res.problems = append(res.problems, problems...)
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// Blobs first, in digest order, as a stat of each would find them.
	modes := make([]fs.FileMode, len(blobs))
	for _, res := range results {
		if res.blob >= 0 {
			modes[res.blob] = res.mode
		}
	}
	for i, b := range blobs {
		if !used[i] {
			rep.Unused = append(rep.Unused, string(b))
			if bi, err := r.store.Stat(b); err == nil {
				modes[i] = bi.Mode
			}
		}
		if modes[i].Perm()&0o222 != 0 {
			fault("", "blob %s is writable (mode %v)", b, modes[i].Perm())
		}
	}
	for n, id := range ids {
		for _, p := range results[n].problems {
			fault(id, "%s", p)
		}
	}
	if opt.Quick {
		return rep, nil
	}
	// Image IDs, parents first so a broken parent is reported once.
	for n, id := range ids {
		if opt.Progress != nil {
			opt.Progress("image IDs", int64(n), int64(len(ids)))
		}
		chain, err := ix.Chain(id)
		if err != nil {
			fault(id, "chain: %v", err)
			continue
		}
		if !slices.ContainsFunc(chain, func(c digest.Digest) bool {
			i, ok := slices.BinarySearch(ids, c)
			return !ok || !results[i].ok
		}) {
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

// checkImage checks the blob of image id: its digest unless quick, its
// size, its header and, unless quick, its qcow2 metadata. It returns the
// problems found, whether the blob can be read for the image ID, and the
// blob's mode.
func (r *Repo) checkImage(ctx context.Context, ix *index.Index, id digest.Digest, e *index.Entry, quick bool) (problems []string, ok bool, mode fs.FileMode) {
	p, err := r.BlobPath(e)
	if err != nil {
		return []string{err.Error()}, false, 0
	}
	f, size, mode, err := openFD(p)
	if err != nil {
		return []string{err.Error()}, false, 0
	}
	defer f.Close()
	if e.Blob != "" {
		if !quick {
			listErr, err := r.verifyBlob(ctx, e)
			if err != nil {
				return []string{fmt.Sprintf("blob: %v", err)}, false, mode
			}
			if listErr != nil {
				problems = append(problems, listErr.Error())
			}
		}
		if size != e.BlobSize {
			problems = append(problems, fmt.Sprintf("blob is %d bytes, the index says %d", size, e.BlobSize))
		}
	}
	if err := checkBlob(ix, r, id, f, size, quick); err != nil {
		return append(problems, err.Error()), false, mode
	}
	return problems, true, mode
}

// verifyBlob re-hashes the blob of entry e and, when its chunk list is
// stored, checks in the same pass that the list is the blob's: its digest
// and length (storedChunkList), then its sums. err is a problem of the
// blob; listErr one of its chunk list alone.
func (r *Repo) verifyBlob(ctx context.Context, e *index.Entry) (listErr, err error) {
	list, ok, listErr := r.storedChunkList(e)
	if listErr != nil || !ok {
		// A missing list was reported with the blob store's listing.
		return listErr, r.store.Verify(ctx, e.Blob, nil)
	}
	got, err := r.store.VerifyChunkList(ctx, e.Blob, e.ChunkSize, nil)
	if err == nil && !bytes.Equal(got, list) {
		listErr = fmt.Errorf("chunk list %s is not the list of the blob's bytes", e.Chunks)
	}
	return listErr, err
}

// checkBlob checks a blob's header against the index (format, backing
// name and format) and, unless quick, its qcow2 metadata; quick checks
// the virtual size of the header instead, which the image ID check does
// otherwise.
func checkBlob(ix *index.Index, r *Repo, id digest.Digest, f io.ReaderAt, size int64, quick bool) error {
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
	if quick {
		if h.VirtualSize() != e.VirtualSize {
			return fmt.Errorf("virtual size is %d, the index says %d", h.VirtualSize(), e.VirtualSize)
		}
		return nil
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
