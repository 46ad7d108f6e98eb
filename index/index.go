package index

import (
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// Version is the index.yaml version this package writes.
const Version = 1

// qcow2's own limits on the cluster size.
const (
	minClusterSize = 512
	maxClusterSize = 2 << 20
)

// Bounds of chunk-size. Below 64 KiB a chunk list of a multi-GiB blob
// grows past a megabyte and every read costs a request per qcow2
// cluster; above 64 MiB a single read fetches more than most boots read
// in total, and a chunk is held in memory while it is checked.
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
)

// Entry is one image of an index, keyed by its image ID.
type Entry struct {
	Blob        digest.Digest     // blob digest; empty only for a Cangallo entry (see Legacy)
	BlobSize    int64             // bytes of the blob
	Parent      digest.Digest     // image ID of the parent; empty for a base image
	VirtualSize int64             // guest-visible bytes
	ClusterSize int64             // 0 when unknown
	Compression qcow2.Compression // empty when unknown
	Created     time.Time         // UTC; zero when unknown
	Description string
	OS          string
	// Cangafile is the mapping node of the Cangafile a built image came
	// from, kept as given (comments and anchors dropped, aliases expanded).
	Cangafile *yaml.Node
	// Chunks is the digest of the blob's chunk list (SPEC §9), itself a
	// blob: the SHA-256 of each ChunkSize piece of the blob. Both are
	// empty for an image that cannot be read lazily.
	Chunks    digest.Digest
	ChunkSize int64
	// Extra holds keys this version does not know, written back sorted
	// after the known ones.
	Extra []Field
	// Legacy is set for entries read from a Cangallo (version 0) index,
	// which have no blob digest: their file must be checked by image ID
	// after download. Marshal refuses such entries.
	Legacy *Legacy
}

// Legacy is what a Cangallo (version 0) index says about an image beyond
// the fields of [Entry].
type Legacy struct {
	File       string // file name beside index.yaml: HEX.qcow2
	ActualSize int64  // qemu-img's actual-size of the stored file; 0 when absent
	Format     string // qemu-img's format, "qcow2" in practice
	// FileSHA256 is the SHA-256 of the file handed to Cangallo, not of the
	// stored blob, so it must never be used to check a download.
	FileSHA256 string
}

// Field is a key of a YAML mapping this package does not interpret.
type Field struct {
	Key   string
	Value *yaml.Node
}

// Index is the catalog of one repository.
//
// The maps may be read directly. Edits should go through the methods,
// which keep the index valid; [Index.Marshal] checks everything again
// anyway.
type Index struct {
	Version int // the version read: 0 for Cangallo, 1; Marshal writes 1
	Images  map[digest.Digest]*Entry
	Tags    map[string]digest.Digest
	Extra   []Field // unknown top-level keys
}

// New returns an empty version 1 index.
func New() *Index {
	return &Index{
		Version: Version,
		Images:  map[digest.Digest]*Entry{},
		Tags:    map[string]digest.Digest{},
	}
}

// IDs returns every image ID, sorted.
func (x *Index) IDs() []digest.Digest {
	ids, _ := x.sorted()
	return ids
}

// Entry returns the entry of an image ID, or a [*NotFoundError].
func (x *Index) Entry(id digest.Digest) (*Entry, error) {
	e := x.Images[id]
	if e == nil {
		return nil, &NotFoundError{What: "image", Name: string(id)}
	}
	return e, nil
}

// Put adds the image id, or replaces its entry. The entry is copied and
// must have a blob digest; its parent must already be in the index, and
// replacing an entry must not make a parent loop or share a blob with
// another image.
func (x *Index) Put(id digest.Digest, e *Entry) error {
	if _, err := ParseID(string(id)); err != nil {
		return err
	}
	if e == nil {
		return fmt.Errorf("%w: nil entry for %s", ErrInvalid, id)
	}
	if e.Blob == "" {
		// Cangallo entries are only ever read; one copied into an index
		// gets its blob digest first.
		return fmt.Errorf("%w: image %s: no blob digest", ErrInvalid, ShortID(id))
	}
	c := *e
	c.Created = c.Created.UTC().Round(0)
	b := newBudget(0)
	if c.Cangafile != nil {
		n, err := cleanNode(c.Cangafile, b)
		if err != nil {
			return fmt.Errorf("%w: image %s: cangafile: %v", ErrInvalid, ShortID(id), err)
		}
		if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
			n = n.Content[0]
		}
		c.Cangafile = n
	}
	c.Extra = slices.Clone(c.Extra)
	for i, f := range c.Extra {
		if f.Value == nil {
			continue // entryProblem reports it
		}
		n, err := cleanNode(f.Value, b)
		if err != nil {
			return fmt.Errorf("%w: image %s: %s: %v", ErrInvalid, ShortID(id), f.Key, err)
		}
		c.Extra[i].Value = n
	}
	if err := entryProblem(id, &c); err != nil {
		return err
	}
	if c.Parent != "" {
		if x.Images[c.Parent] == nil {
			return fmt.Errorf("%w: image %s: parent %s is not in the index", ErrNotFound, ShortID(id), c.Parent)
		}
		// Only a replaced entry can close a loop: walk up from the new
		// parent and make sure we never come back to id.
		seen := 0
		for p := c.Parent; p != ""; {
			if p == id {
				return fmt.Errorf("%w: image %s: parent %s would make a parent loop", ErrInvalid, ShortID(id), ShortID(c.Parent))
			}
			pe := x.Images[p]
			if pe == nil || seen > len(x.Images) {
				break // already broken; Validate reports it
			}
			seen++
			p = pe.Parent
		}
	}
	if c.Blob != "" {
		for other, oe := range x.Images {
			if other != id && oe.Blob == c.Blob {
				return fmt.Errorf("%w: image %s: blob %s already belongs to image %s", ErrInvalid, ShortID(id), c.Blob, other)
			}
		}
	}
	if x.Images == nil {
		x.Images = map[digest.Digest]*Entry{}
	}
	x.Images[id] = &c
	return nil
}

// Children returns the images whose parent is id, sorted.
func (x *Index) Children(id digest.Digest) []digest.Digest {
	var kids []digest.Digest
	for cid, e := range x.Images {
		if e.Parent == id && cid != id {
			kids = append(kids, cid)
		}
	}
	slices.Sort(kids)
	return kids
}

// Descendants returns every image that has id in its chain, id excluded,
// leaves first: removing them in this order never leaves an image without
// its parent. The order is deterministic.
func (x *Index) Descendants(id digest.Digest) []digest.Digest {
	kids := map[digest.Digest][]digest.Digest{}
	for cid, e := range x.Images {
		if e.Parent != "" && e.Parent != cid {
			kids[e.Parent] = append(kids[e.Parent], cid)
		}
	}
	for _, k := range kids {
		slices.Sort(k)
	}
	// Iterative post-order: a chain can be as long as the index.
	type frame struct {
		id   digest.Digest
		next int
	}
	var out []digest.Digest
	seen := map[digest.Digest]bool{id: true}
	stack := []frame{{id: id}}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if top.next < len(kids[top.id]) {
			k := kids[top.id][top.next]
			top.next++
			if !seen[k] {
				seen[k] = true
				stack = append(stack, frame{id: k})
			}
			continue
		}
		if top.id != id {
			out = append(out, top.id)
		}
		stack = stack[:len(stack)-1]
	}
	return out
}

// Remove deletes the image id and the tags that point at it. An image
// with children is refused with a [*HasChildrenError] unless recursive,
// which removes its descendants first. It returns the removed images in
// the order removed (leaves first, id last), so the caller can delete
// their blobs.
func (x *Index) Remove(id digest.Digest, recursive bool) ([]digest.Digest, error) {
	if x.Images[id] == nil {
		return nil, &NotFoundError{What: "image", Name: string(id)}
	}
	if kids := x.Children(id); len(kids) > 0 && !recursive {
		return nil, &HasChildrenError{ID: id, Children: kids}
	}
	gone := append(x.Descendants(id), id)
	dead := map[digest.Digest]bool{}
	for _, g := range gone {
		dead[g] = true
		delete(x.Images, g)
	}
	for t, target := range x.Tags {
		if dead[target] {
			delete(x.Tags, t)
		}
	}
	return gone, nil
}

// SetTag points tag at image id. It returns the image the tag pointed at
// before, empty if none: the tag moved when that is neither empty nor id.
func (x *Index) SetTag(tag string, id digest.Digest) (previous digest.Digest, err error) {
	if err := ValidateTag(tag); err != nil {
		return "", err
	}
	if x.Images[id] == nil {
		return "", &NotFoundError{What: "image", Name: string(id)}
	}
	if x.Tags == nil {
		x.Tags = map[string]digest.Digest{}
	}
	previous = x.Tags[tag]
	x.Tags[tag] = id
	return previous, nil
}

// DeleteTag removes a tag and returns the image it pointed at.
func (x *Index) DeleteTag(tag string) (digest.Digest, error) {
	id, ok := x.Tags[tag]
	if !ok {
		return "", &NotFoundError{What: "tag", Name: tag}
	}
	delete(x.Tags, tag)
	return id, nil
}

// TagsOf returns the tags that point at id, sorted.
func (x *Index) TagsOf(id digest.Digest) []string {
	var tags []string
	for t, target := range x.Tags {
		if target == id {
			tags = append(tags, t)
		}
	}
	slices.Sort(tags)
	return tags
}

// TagsByImage returns the tags of every tagged image, each list sorted:
// [Index.TagsOf] for all images at once, in time linear in the tags.
func (x *Index) TagsByImage() map[digest.Digest][]string {
	m := make(map[digest.Digest][]string, len(x.Tags))
	for t, id := range x.Tags {
		m[id] = append(m[id], t)
	}
	for _, tags := range m {
		slices.Sort(tags)
	}
	return m
}

// Chain returns the ancestry of id: id first, its base image last. It
// fails on a missing parent or a loop instead of walking forever.
func (x *Index) Chain(id digest.Digest) ([]digest.Digest, error) {
	e := x.Images[id]
	if e == nil {
		return nil, &NotFoundError{What: "image", Name: string(id)}
	}
	chain := []digest.Digest{id}
	for e.Parent != "" {
		if len(chain) > len(x.Images) {
			return nil, fmt.Errorf("%w: image %s: parent loop", ErrInvalid, ShortID(id))
		}
		p := e.Parent
		e = x.Images[p]
		if e == nil {
			return nil, fmt.Errorf("%w: image %s: dangling parent %s", ErrInvalid, ShortID(chain[len(chain)-1]), p)
		}
		chain = append(chain, p)
	}
	return chain, nil
}

// Validate checks the whole index as [Parse] would: IDs, entries, tags,
// parents and loops. Legacy (Cangallo) entries pass; Marshal refuses them.
func (x *Index) Validate() error {
	_, _, err := x.validate()
	return err
}

// validate is Validate that also returns the sorted image IDs and their
// entries.
func (x *Index) validate() ([]digest.Digest, []*Entry, error) {
	ids, ents := x.sorted()
	for i, id := range ids {
		if why := idProblem(string(id)); why != "" {
			return nil, nil, fmt.Errorf("%w: image ID %s: %s", ErrInvalidID, quote(string(id)), why)
		}
		e := ents[i]
		if e == nil {
			return nil, nil, fmt.Errorf("%w: image %s: nil entry", ErrInvalid, ShortID(id))
		}
		if err := entryProblem(id, e); err != nil {
			return nil, nil, err
		}
	}
	if err := checkExtra(x.Extra, topKeys); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if g := checkGraph(ids, ents, false); g != nil {
		return nil, nil, fmt.Errorf("%w: image %s: %s", ErrInvalid, ShortID(g.id), g.msg)
	}
	tags := make([]string, 0, len(x.Tags))
	for t := range x.Tags {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	for _, t := range tags {
		if err := ValidateTag(t); err != nil {
			return nil, nil, err
		}
		if x.Images[x.Tags[t]] == nil {
			return nil, nil, fmt.Errorf("%w: tag %s: dangling tag: image %s is not in the index", ErrInvalid, quote(t), quote(string(x.Tags[t])))
		}
	}
	return ids, ents, nil
}

// entryProblem checks the fields of one entry on their own.
func entryProblem(id digest.Digest, e *Entry) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: image %s: %s", ErrInvalid, ShortID(id), fmt.Sprintf(format, args...))
	}
	switch {
	case e.Blob == "" && e.Legacy == nil:
		return bad("no blob digest")
	case e.Blob != "":
		if why := idProblem(string(e.Blob)); why != "" {
			return bad("blob %s: %s", quote(string(e.Blob)), why)
		}
		if e.BlobSize <= 0 {
			return bad("blob-size %d: must be positive", e.BlobSize)
		}
	}
	if e.Parent != "" {
		if why := idProblem(string(e.Parent)); why != "" {
			return bad("parent %s: %s", quote(string(e.Parent)), why)
		}
		if e.Parent == id {
			return bad("parent loop: the image is its own parent")
		}
	}
	if e.VirtualSize < 0 {
		return bad("virtual-size %d: negative", e.VirtualSize)
	}
	if e.ClusterSize != 0 && !validClusterSize(e.ClusterSize) {
		return bad("cluster-size %d: want a power of two from 512 to 2097152", e.ClusterSize)
	}
	if why := chunksProblem(e.Chunks, e.ChunkSize); why != "" {
		return bad("%s", why)
	}
	if e.Compression != "" && !e.Compression.Valid() {
		return bad("compression %s: want zlib, zstd or none", quote(string(e.Compression)))
	}
	if !e.Created.IsZero() && (e.Created.Year() < 0 || e.Created.Year() > 9999) {
		return bad("created %v: year out of range", e.Created)
	}
	if !utf8.ValidString(e.Description) || !utf8.ValidString(e.OS) {
		return bad("description and os must be UTF-8")
	}
	if e.Cangafile != nil && e.Cangafile.Kind != yaml.MappingNode {
		return bad("cangafile must be a mapping")
	}
	if err := checkExtra(e.Extra, entryKeys); err != nil {
		return bad("%v", err)
	}
	return nil
}

// ValidChunkSize reports whether n is a chunk-size an index may hold: a
// power of two from [MinChunkSize] to [MaxChunkSize].
func ValidChunkSize(n int64) bool {
	return n >= MinChunkSize && n <= MaxChunkSize && n&(n-1) == 0
}

// chunksProblem says what is wrong with the chunks and chunk-size of an
// entry, or is "": both or neither, a digest and a valid size.
func chunksProblem(chunks digest.Digest, size int64) string {
	switch {
	case chunks == "" && size == 0:
		return ""
	case chunks == "":
		return "chunk-size without chunks"
	case size == 0:
		return "chunks without chunk-size"
	}
	if why := idProblem(string(chunks)); why != "" {
		return fmt.Sprintf("chunks %s: %s", quote(string(chunks)), why)
	}
	if !ValidChunkSize(size) {
		return fmt.Sprintf("chunk-size %d: want a power of two from %d to %d", size, MinChunkSize, MaxChunkSize)
	}
	return ""
}

func validClusterSize(n int64) bool {
	return n >= minClusterSize && n <= maxClusterSize && n&(n-1) == 0
}

// checkExtra makes sure unknown fields can be written back: unique,
// UTF-8 keys that do not shadow a known key.
func checkExtra(extra []Field, known []string) error {
	seen := map[string]bool{}
	for _, f := range extra {
		switch {
		case !utf8.ValidString(f.Key):
			return fmt.Errorf("key %s: not UTF-8", quote(f.Key))
		case slices.Contains(known, f.Key):
			return fmt.Errorf("extra key %s shadows a known key", quote(f.Key))
		case seen[f.Key]:
			return fmt.Errorf("duplicate key %s", quote(f.Key))
		case f.Value == nil:
			return fmt.Errorf("key %s: no value", quote(f.Key))
		}
		seen[f.Key] = true
	}
	return nil
}
