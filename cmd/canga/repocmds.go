package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/internal/atomicfile"
	"github.com/cangallo/canga/qcow2"
	"github.com/cangallo/canga/repo"
	"github.com/opencontainers/go-digest"
)

// openHome loads CANGA_HOME once per command.
func (e *env) openHome() (*repo.Home, error) {
	if e.h == nil {
		h, err := repo.OpenHome(e.home)
		if err != nil {
			return nil, err
		}
		e.h = h
	}
	return e.h, nil
}

// openRepo opens a configured repository by name ("" is the default).
func (e *env) openRepo(name string) (*repo.Repo, error) {
	h, err := e.openHome()
	if err != nil {
		return nil, err
	}
	return h.Repo(name)
}

// resolve finds IMAGE across the configured repositories.
func (e *env) resolve(name string) (*repo.Repo, *index.Index, digest.Digest, error) {
	h, err := e.openHome()
	if err != nil {
		return nil, nil, "", err
	}
	return h.Resolve(name)
}

// resolveBlobPath returns the blob file of IMAGE, for --backing.
func (e *env) resolveBlobPath(name string) (string, error) {
	r, ix, id, err := e.resolve(name)
	if err != nil {
		return "", err
	}
	if _, err := r.OpenImage(ix, id); err != nil {
		return "", err
	}
	return r.BlobPath(ix.Images[id])
}

// notice tells the user something that is not the command's output.
func (e *env) notice(format string, args ...any) {
	fmt.Fprintf(e.stderr, "canga: "+format+"\n", args...)
}

type addCmd struct {
	File        string `arg:"" name:"FILE" help:"Disk image to store (qcow2 with its backing chain, or raw)."`
	Repo        string `arg:"" optional:"" name:"REPO" help:"Repository (default: the default one)."`
	Tag         string `short:"t" help:"Tag the image."`
	Description string `short:"d" help:"Description."`
	OS          string `name:"os" help:"Operating system."`
	Parent      string `short:"p" placeholder:"IMAGE" help:"Store the image as a delta against this image of the repository."`
	Compression string `enum:"zlib,zstd,none" default:"zlib" help:"Compression of the stored blob: zlib, zstd or none."`
	// bench/lazy.sh measures the chunk sizes against each other with it;
	// the default was chosen so.
	ChunkSize int64 `name:"chunk-size" placeholder:"BYTES" help:"Chunk size of the blob's chunk list, which canga nbd checks each fetched chunk against: a power of two from 65536 to 67108864 (default 1048576)."`
	repoOption
}

func (c *addCmd) Run(e *env) error {
	h, err := e.openHome()
	if err != nil {
		return err
	}
	r, err := h.Repo(c.Repo)
	if err != nil {
		return err
	}
	if c.Tag != "" {
		if err := h.CheckTag(c.Tag); err != nil {
			return err
		}
	}
	opt := repo.AddOptions{
		Tag: c.Tag, Description: c.Description, OS: c.OS,
		Compression: qcow2.Compression(c.Compression),
		ChunkSize:   c.ChunkSize,
		Notice:      func(s string) { e.notice("%s", s) },
	}
	if c.Parent != "" {
		_, id, err := h.ResolveIn(r, c.Parent)
		if err != nil {
			return fmt.Errorf("--parent: %w", err)
		}
		opt.Parent = id
	}
	return e.add(r, c.File, opt)
}

// add runs an add with a progress bar and prints its result.
func (e *env) add(r *repo.Repo, file string, opt repo.AddOptions) error {
	var bar *progress
	opt.Progress = func(done, total int64) {
		if bar == nil {
			bar = e.newProgress(filepath.Base(file), total)
		}
		bar.set(done)
	}
	res, err := r.Add(e.ctx, file, opt)
	if bar != nil {
		bar.done(err == nil)
	}
	if errors.Is(err, repo.ErrWrongParent) {
		return fmt.Errorf("%w (give it with --parent)", err)
	}
	if err != nil {
		return err
	}
	e.addResult(r, res)
	return nil
}

// addResult says what an add did.
func (e *env) addResult(r *repo.Repo, res *repo.AddResult) {
	switch {
	case res.Restored:
		e.notice("image %s was in repository %s without its blob: the blob is back", index.ShortID(res.ID), r.Name())
	case res.Existed:
		e.notice("image %s is already in repository %s", index.ShortID(res.ID), r.Name())
	}
	if res.Moved != "" {
		e.notice("tag %s moved from %s to %s", res.Tag, index.ShortID(res.Moved), index.ShortID(res.ID))
	}
	fmt.Fprintln(e.stdout, res.ID)
}

type listCmd struct {
	Repo string `arg:"" optional:"" name:"REPO" help:"Only this repository; oci://HOST/NAME lists a registry repository's images."`
	JSON bool   `name:"json" help:"Print one JSON document."`
	registryFlags
	repoOption
}

type listItem struct {
	Repo        string        `json:"repo"`
	ID          digest.Digest `json:"id"`
	Tags        []string      `json:"tags"`
	Parent      digest.Digest `json:"parent,omitempty"`
	Blob        digest.Digest `json:"blob,omitempty"`
	BlobSize    int64         `json:"blob-size"`
	VirtualSize int64         `json:"virtual-size"`
	Created     *time.Time    `json:"created,omitempty"`
	Description string        `json:"description,omitempty"`
	OS          string        `json:"os,omitempty"`
	Present     bool          `json:"present"`
}

// newListItem describes image id of r, whose index is ix, whose tags are
// tags, and whose blob is present or not.
func newListItem(r *repo.Repo, ix *index.Index, id digest.Digest, tags []string, present bool) listItem {
	en := ix.Images[id]
	it := listItem{Repo: r.Name(), ID: id, Tags: tags, Parent: en.Parent, Blob: en.Blob,
		BlobSize: en.BlobSize, VirtualSize: en.VirtualSize, Description: en.Description, OS: en.OS, Present: present}
	if it.Tags == nil {
		it.Tags = []string{}
	}
	if !en.Created.IsZero() {
		t := en.Created
		it.Created = &t
	}
	if en.Legacy != nil && it.BlobSize == 0 {
		it.BlobSize = en.Legacy.ActualSize
	}
	return it
}

func (c *listCmd) Run(e *env) error {
	if isOCI(c.Repo) {
		return c.listRegistry(e)
	}
	h, err := e.openHome()
	if err != nil {
		return err
	}
	names := h.Config.SearchOrder()
	if c.Repo != "" {
		if _, err := h.Config.Repo(c.Repo); err != nil {
			return err
		}
		names = []string{c.Repo}
	}
	type listed struct {
		r       *repo.Repo
		ix      *index.Index
		ids     []digest.Digest
		tags    map[digest.Digest][]string
		present []bool
	}
	var repos []listed
	var broken []error
	for _, name := range names {
		r, err := h.Repo(name)
		var ix *index.Index
		if err == nil {
			ix, err = r.Index()
		}
		var present func(*index.Entry) bool
		if err == nil {
			present, err = r.PresentAll(e.ctx)
		}
		if err != nil {
			// One unusable repository (a tampered cache, a bad
			// allowed_signers) must not hide the others.
			broken = append(broken, err)
			continue
		}
		// One pass over the tags and one read of the blob directory, not
		// one of each per image.
		l := listed{r: r, ix: ix, ids: ix.IDs(), tags: ix.TagsByImage()}
		l.present = make([]bool, len(l.ids))
		for i, id := range l.ids {
			l.present[i] = present(ix.Images[id])
		}
		repos = append(repos, l)
	}
	// Items are made and printed one at a time (twice for the table,
	// whose columns are as wide as their widest cell): a repository can
	// hold 100,000 images, which need not be in memory twice.
	each := func(fn func(it *listItem) error) error {
		for _, l := range repos {
			for i, id := range l.ids {
				it := newListItem(l.r, l.ix, id, l.tags[id], l.present[i])
				if err := fn(&it); err != nil {
					return err
				}
			}
		}
		return nil
	}
	var err2 error
	if c.JSON {
		l := newJSONList(e.stdout)
		if err2 = each(l.item); err2 == nil {
			err2 = l.close()
		}
	} else {
		t := newTable(e.stdout, time.Now())
		each(t.measure)
		if err2 = each(t.print); err2 == nil {
			err2 = t.close()
		}
	}
	if err2 != nil {
		return err2
	}
	if len(broken) > 0 {
		return &exitError{code: 1, err: errors.Join(broken...)}
	}
	return nil
}

// table prints the seed's table in two passes over the items: measure
// finds the width of each column, as text/tabwriter would (the widest
// cell, in runes, and two spaces), and print writes the rows; so the rows
// of 100,000 images are never held in memory.
type table struct {
	w     *bufio.Writer
	now   time.Time
	width [4]int
	rows  bool // the header is printed
}

var tableHeader = [5]string{"  NAME", "SIZE", "BLOB", "CREATED", "DESCRIPTION"}

func newTable(w io.Writer, now time.Time) *table {
	t := &table{w: bufio.NewWriterSize(w, 64<<10), now: now}
	t.fit(tableHeader)
	return t
}

// lines calls fn with the cells of each line of an item: one per tag.
func (t *table) lines(it *listItem, fn func(cells [5]string)) {
	flags := []byte("  ")
	if it.Parent != "" {
		flags[0] = '^'
	}
	if !it.Present {
		flags[1] = '*'
	}
	names := it.Tags
	if len(names) == 0 {
		names = []string{index.ShortID(it.ID)}
	}
	age := "-"
	if it.Created != nil {
		age = humanAge(t.now.Sub(*it.Created))
	}
	for _, n := range names {
		fn([5]string{string(flags) + it.Repo + ":" + n, humanSize(it.VirtualSize), humanSize(it.BlobSize), age, it.Description})
	}
}

func (t *table) fit(cells [5]string) {
	for i := range t.width {
		t.width[i] = max(t.width[i], utf8.RuneCountInString(cells[i])+2)
	}
}

func (t *table) measure(it *listItem) error {
	t.lines(it, t.fit)
	return nil
}

func (t *table) write(cells [5]string) {
	for i, w := range t.width {
		t.w.WriteString(cells[i])
		for n := utf8.RuneCountInString(cells[i]); n < w; n++ {
			t.w.WriteByte(' ')
		}
	}
	t.w.WriteString(cells[4])
	t.w.WriteByte('\n')
}

func (t *table) print(it *listItem) error {
	if !t.rows {
		t.write(tableHeader)
		t.rows = true
	}
	t.lines(it, t.write)
	return nil
}

func (t *table) close() error {
	if !t.rows {
		t.write(tableHeader)
	}
	return t.w.Flush()
}

func humanAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute") + " ago"
	case d < 48*time.Hour:
		return plural(int(d/time.Hour), "hour") + " ago"
	case d < 60*24*time.Hour:
		return plural(int(d/(24*time.Hour)), "day") + " ago"
	case d < 730*24*time.Hour:
		return plural(int(d/(30*24*time.Hour)), "month") + " ago"
	}
	return plural(int(d/(365*24*time.Hour)), "year") + " ago"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

func writeJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type showCmd struct {
	Image string `arg:"" name:"IMAGE" help:"Image: tag, ID or unique ID prefix, optionally REPO:NAME."`
	JSON  bool   `name:"json" help:"Print one JSON document."`
}

func (c *showCmd) Run(e *env) error {
	r, ix, id, err := e.resolve(c.Image)
	if err != nil {
		return err
	}
	en := ix.Images[id]
	chain, err := ix.Chain(id)
	if err != nil {
		return err
	}
	item := struct {
		Version int `json:"version"`
		listItem
		ClusterSize int64           `json:"cluster-size,omitempty"`
		Compression string          `json:"compression,omitempty"`
		Chunks      digest.Digest   `json:"chunks,omitempty"`
		ChunkSize   int64           `json:"chunk-size,omitempty"`
		Chain       []digest.Digest `json:"chain"`
		Children    []digest.Digest `json:"children"`
		Cangafile   any             `json:"cangafile,omitempty"`
	}{
		Version:     jsonVersion,
		listItem:    newListItem(r, ix, id, ix.TagsOf(id), r.Present(en)),
		ClusterSize: en.ClusterSize, Compression: string(en.Compression), Chain: chain, Children: ix.Children(id),
		Chunks: en.Chunks, ChunkSize: en.ChunkSize,
	}
	if item.Children == nil {
		item.Children = []digest.Digest{}
	}
	if en.Cangafile != nil {
		var v any
		if err := en.Cangafile.Decode(&v); err == nil {
			item.Cangafile = v
		}
	}
	if c.JSON {
		return writeJSON(e, item)
	}
	w := e.stdout
	fmt.Fprintf(w, "image:        %s\nrepository:   %s\n", id, r.Name())
	if len(item.Tags) > 0 {
		fmt.Fprintf(w, "tags:         %s\n", strings.Join(item.Tags, ", "))
	}
	if en.Description != "" {
		fmt.Fprintf(w, "description:  %s\n", en.Description)
	}
	if en.OS != "" {
		fmt.Fprintf(w, "os:           %s\n", en.OS)
	}
	fmt.Fprintf(w, "virtual size: %s (%d bytes)\n", humanSize(en.VirtualSize), en.VirtualSize)
	if en.Blob != "" {
		fmt.Fprintf(w, "blob:         %s\nblob size:    %s (%d bytes)\n", en.Blob, humanSize(en.BlobSize), en.BlobSize)
	}
	if en.Compression != "" {
		fmt.Fprintf(w, "compression:  %s\n", en.Compression)
	}
	if en.Chunks != "" {
		fmt.Fprintf(w, "chunk list:   %s (%s chunks: canga nbd can serve it before it is pulled)\n", en.Chunks, humanSize(en.ChunkSize))
	}
	if !en.Created.IsZero() {
		fmt.Fprintf(w, "created:      %s (%s)\n", en.Created.Format(time.RFC3339), humanAge(time.Since(en.Created)))
	}
	if !item.Present {
		fmt.Fprintf(w, "downloaded:   no (canga pull %s)\n", index.ShortID(id))
	}
	fmt.Fprintf(w, "chain:\n")
	for i, cid := range chain {
		ce := ix.Images[cid]
		name := index.ShortID(cid)
		if t := ix.TagsOf(cid); len(t) > 0 {
			name += " (" + strings.Join(t, ", ") + ")"
		}
		fmt.Fprintf(w, "  %s%s  %s\n", strings.Repeat("  ", i), name, humanSize(ce.BlobSize))
	}
	if len(item.Children) > 0 {
		fmt.Fprintf(w, "children:\n")
		for _, cid := range item.Children {
			fmt.Fprintf(w, "  %s\n", index.ShortID(cid))
		}
	}
	return nil
}

type tagCmd struct {
	Tag   string `arg:"" name:"TAG" help:"Tag name, like ubuntu:16.04."`
	Image string `arg:"" name:"IMAGE" help:"Image to tag."`
}

func (c *tagCmd) Run(e *env) error {
	h, err := e.openHome()
	if err != nil {
		return err
	}
	if err := h.CheckTag(c.Tag); err != nil {
		return err
	}
	r, _, id, err := h.Resolve(c.Image)
	if err != nil {
		return err
	}
	prev, err := r.Tag(e.ctx, c.Tag, id)
	if err != nil {
		return err
	}
	if prev != "" && prev != id {
		e.notice("tag %s moved from %s to %s", c.Tag, index.ShortID(prev), index.ShortID(id))
	}
	return nil
}

type deltagCmd struct {
	Tag string `arg:"" name:"TAG" help:"Tag to remove (REPO:TAG for another repository than the first that has it)."`
}

func (c *deltagCmd) Run(e *env) error {
	h, err := e.openHome()
	if err != nil {
		return err
	}
	_, _, err = h.DeleteTag(e.ctx, c.Tag)
	if errors.Is(err, index.ErrNotFound) {
		return fmt.Errorf("no tag %q", c.Tag)
	}
	return err
}

type delCmd struct {
	Image     string `arg:"" name:"IMAGE" help:"Image to delete."`
	Recursive bool   `short:"r" help:"Delete its descendants too."`
}

func (c *delCmd) Run(e *env) error {
	r, _, id, err := e.resolve(c.Image)
	if err != nil {
		return err
	}
	removed, err := r.Delete(e.ctx, id, c.Recursive)
	if err != nil {
		return err
	}
	for _, d := range removed {
		fmt.Fprintf(e.stdout, "deleted %s\n", d)
	}
	return nil
}

type exportCmd struct {
	Image       string `arg:"" name:"IMAGE" help:"Image to export."`
	Output      string `arg:"" name:"OUTPUT" help:"File to write: a standalone image, its chain flattened."`
	Format      string `short:"O" name:"output-format" enum:"qcow2,raw" default:"qcow2" help:"qcow2 or raw."`
	Compress    bool   `short:"c" help:"Compress a qcow2 output (zlib unless --compression says otherwise)."`
	Compression string `enum:",zlib,zstd" default:"" help:"Compression type (implies -c)."`
}

func (c *exportCmd) Run(e *env) error {
	r, ix, id, err := e.resolve(c.Image)
	if err != nil {
		return err
	}
	opt := repo.ExportOptions{Raw: c.Format == qcow2.FormatRaw, Compression: compression(c.Compress, c.Compression)}
	if opt.Raw && opt.Compression != "" {
		return errors.New("-c and --compression need a qcow2 output")
	}
	bar := e.newProgress(filepath.Base(c.Output), ix.Images[id].VirtualSize)
	opt.Progress = bar.set
	err = atomicfile.Write(c.Output, 0o644, func(f *os.File) error { return r.Export(e.ctx, ix, id, f, opt) })
	bar.done(err == nil)
	return err
}

type overlayCmd struct {
	Image  string `arg:"" name:"IMAGE" help:"Image to run."`
	File   string `arg:"" name:"FILE" help:"New qcow2 file backed by the image's blob."`
	Lazy   bool   `help:"Back the overlay by canga nbd's export of the image (format raw) instead of its blob: boot at once, before the image is pulled (run canga nbd IMAGE first)."`
	Socket string `placeholder:"PATH" help:"With --lazy: canga nbd's socket (default: CANGA_HOME/run/ID.sock)."`
}

func (c *overlayCmd) Run(e *env) error {
	r, ix, id, err := e.resolve(c.Image)
	if err != nil {
		return err
	}
	if !c.Lazy {
		if c.Socket != "" {
			return errors.New("--socket is for --lazy")
		}
		return atomicfile.Write(c.File, 0o644, func(f *os.File) error { return r.Overlay(ix, id, f) })
	}
	sock := c.Socket
	if sock == "" {
		sock = e.h.NBDSocket(id)
	}
	if abs, err := filepath.Abs(sock); err == nil {
		sock = abs
	}
	if err := atomicfile.Write(c.File, 0o644, func(f *os.File) error { return r.OverlayLazy(ix, id, sock, f) }); err != nil {
		return err
	}
	e.notice("%s is backed by nbd+unix:///?socket=%s: keep canga nbd %s running while it is used", c.File, sock, index.ShortID(id))
	return nil
}

type fsckCmd struct {
	Repo  string `arg:"" optional:"" name:"REPO" help:"Repository (default: the default one)."`
	JSON  bool   `name:"json" help:"Print one JSON document."`
	Quick bool   `help:"Skip what reads the content of blobs: blob digests, image IDs and qcow2 metadata (refcounts, L1/L2 tables). The index, the blob directory and each blob's header (backing file, virtual size) are still checked."`
	repoOption
}

func (c *fsckCmd) Run(e *env) error {
	r, err := e.openRepo(c.Repo)
	if err != nil {
		return err
	}
	rep, err := r.FsckWith(e.ctx, repo.FsckOptions{Quick: c.Quick})
	if err != nil {
		return err
	}
	if c.JSON {
		if err := writeJSON(e, newFsckDoc(r, rep)); err != nil {
			return err
		}
	} else {
		for _, f := range rep.Faults {
			if f.Image != "" {
				fmt.Fprintf(e.stdout, "FAULT %s: %s\n", index.ShortID(f.Image), f.Problem)
			} else {
				fmt.Fprintf(e.stdout, "FAULT %s\n", f.Problem)
			}
		}
		if rep.Quick {
			fmt.Fprintf(e.stdout, "%d images, %d blobs (quick: blob digests, image IDs and qcow2 metadata not checked)", rep.Images, rep.Blobs)
		} else {
			fmt.Fprintf(e.stdout, "%d images, %d blobs, %d image IDs verified", rep.Images, rep.Blobs, rep.CheckedIDs)
		}
		if rep.NotPulled > 0 {
			fmt.Fprintf(e.stdout, ", %d not downloaded", rep.NotPulled)
		}
		if len(rep.Unused) > 0 {
			fmt.Fprintf(e.stdout, ", %d unused blobs (canga gc removes them)", len(rep.Unused))
		}
		fmt.Fprintf(e.stdout, ", %d faults\n", len(rep.Faults))
	}
	if len(rep.Faults) > 0 {
		return &exitError{code: 1, err: fmt.Errorf("repository %s: %d faults", r.Name(), len(rep.Faults))}
	}
	return nil
}

type gcCmd struct {
	Repo string `arg:"" optional:"" name:"REPO" help:"Repository (default: the default one)."`
	repoOption
}

func (c *gcCmd) Run(e *env) error {
	r, err := e.openRepo(c.Repo)
	if err != nil {
		return err
	}
	rep, err := r.GC(e.ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed %d blobs and %d temporary files, %s freed\n", len(rep.Blobs), len(rep.Temp), humanSize(rep.BytesFreed))
	return nil
}
