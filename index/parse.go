package index

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// MaxIndexSize bounds the index.yaml accepted by [Parse]; callers reading
// a remote index should stop reading past it.
const MaxIndexSize = 64 << 20

// Known keys, in the order Marshal writes them (SPEC §2).
var (
	topKeys   = []string{"version", "images", "tags"}
	entryKeys = []string{"blob", "blob-size", "parent", "virtual-size", "cluster-size",
		"compression", "created", "description", "os", "cangafile", "chunks", "chunk-size"}
)

// Parse reads an index.yaml: version 1 (SPEC §2) or Cangallo's version 0.
// The input is treated as hostile; see the package documentation for
// what is checked. Errors are [*ParseError]s.
//
// An index in the layout [Index.Marshal] writes is read line by line
// (see canonical.go); anything else goes through the YAML parser.
func Parse(data []byte) (*Index, error) {
	if len(data) > MaxIndexSize {
		return nil, &ParseError{Msg: fmt.Sprintf("larger than %d bytes", MaxIndexSize)}
	}
	if x, ok := parseCanonical(bytes.NewReader(data), int64(len(data))); ok {
		return x, nil
	}
	return parseGeneral(data)
}

// Decode reads an index.yaml of size bytes from r, as [Parse] does. An
// index in the canonical layout is read as it streams, so that memory
// holds the index and not also its text (which is as large); any other is
// read whole and parsed.
func Decode(r io.ReaderAt, size int64) (*Index, error) {
	if size > MaxIndexSize {
		return nil, &ParseError{Msg: fmt.Sprintf("larger than %d bytes", MaxIndexSize)}
	}
	if x, ok := parseCanonical(io.NewSectionReader(r, 0, size), size); ok {
		return x, nil
	}
	data := make([]byte, size)
	if _, err := r.ReadAt(data, 0); err != nil && !(err == io.EOF && size == 0) {
		return nil, fmt.Errorf("index: read: %w", err)
	}
	return parseGeneral(data)
}

// parseGeneral is Parse through a YAML node tree: any layout, and the
// errors with their lines.
func parseGeneral(data []byte) (x *Index, err error) {
	if len(data) > MaxIndexSize {
		return nil, &ParseError{Msg: fmt.Sprintf("larger than %d bytes", MaxIndexSize)}
	}
	// yaml.v3 has panicked on crafted input before (CVE-2022-28948); a bad
	// document must stay an error.
	defer func() {
		if r := recover(); r != nil {
			x, err = nil, &ParseError{Msg: fmt.Sprintf("YAML parser failed: %v", r)}
		}
	}()
	root, line, err := decodeOne(data)
	if err != nil {
		return nil, &ParseError{Line: line, Msg: err.Error()}
	}
	p := &parser{budget: newBudget(len(data)), lines: map[digest.Digest]int{}}
	return p.document(root)
}

type parser struct {
	budget *budget
	lines  map[digest.Digest]int // line of each image's key, for graph errors
}

func (p *parser) fail(n *yaml.Node, path string, sentinel error, format string, args ...any) *ParseError {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &ParseError{Line: line, Path: path, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

// pairs calls fn for each key and value of a mapping, keys read as the
// text they were written as (a hex ID made of digits and one "e" is a
// float to YAML), aliases resolved, duplicate keys refused.
func (p *parser) pairs(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.fail(n, path, nil, "want a mapping")
	}
	if len(n.Content)%2 != 0 {
		return p.fail(n, path, nil, "mapping with a key and no value")
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i < len(n.Content); i += 2 {
		k, err := deref(n.Content[i])
		if err != nil {
			return p.fail(n.Content[i], path, nil, "%v", err)
		}
		if k.Kind != yaml.ScalarNode {
			return p.fail(n.Content[i], path, nil, "mapping keys must be scalars")
		}
		if first, dup := seen[k.Value]; dup {
			return p.fail(n.Content[i], path, nil, "duplicate key %s (first at line %d)", quote(k.Value), first)
		}
		seen[k.Value] = n.Content[i].Line
		v, err := deref(n.Content[i+1])
		if err != nil {
			return p.fail(n.Content[i+1], path, nil, "%v", err)
		}
		if err := fn(k.Value, n.Content[i], v); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) document(root *yaml.Node) (*Index, error) {
	root, err := deref(root)
	if err != nil {
		return nil, p.fail(root, "", nil, "%v", err)
	}
	if root.Kind != yaml.MappingNode {
		return nil, p.fail(root, "", nil, "top level must be a mapping with version, images and tags")
	}
	var versionN, imagesN, tagsN *yaml.Node
	x := &Index{Images: map[digest.Digest]*Entry{}, Tags: map[string]digest.Digest{}}
	err = p.pairs(root, "", func(key string, k, v *yaml.Node) error {
		switch key {
		case "version":
			versionN = v
		case "images":
			imagesN = v
		case "tags":
			tagsN = v
		default:
			f, err := p.extra(key, k, v, "")
			if err != nil {
				return err
			}
			x.Extra = append(x.Extra, f)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	switch {
	case versionN != nil:
		if x.Version, err = p.version(versionN); err != nil {
			return nil, err
		}
	case cangalloShape(imagesN, tagsN, x.Extra):
		// Cangallo always wrote version: 0, but hand-edited copies exist.
		x.Version = 0
	default:
		return nil, p.fail(root, "", nil, "missing version")
	}

	if imagesN != nil && !isNull(imagesN) {
		err = p.pairs(imagesN, "images", func(key string, k, v *yaml.Node) error {
			path := "images[" + quote(key) + "]"
			id, err := p.imageKey(x.Version, key, k, path)
			if err != nil {
				return err
			}
			var e *Entry
			if x.Version == 0 {
				e, err = p.entryV0(id, v, path)
			} else {
				e, err = p.entryV1(k, v, path)
			}
			if err != nil {
				return err
			}
			p.lines[id] = k.Line
			x.Images[id] = e
			return nil
		})
		if err != nil {
			return nil, err
		}
	}

	if tagsN != nil && !isNull(tagsN) {
		err = p.pairs(tagsN, "tags", func(tag string, k, v *yaml.Node) error {
			path := "tags[" + quote(tag) + "]"
			if why := tagProblem(tag); why != "" {
				return p.fail(k, path, ErrInvalidTag, "invalid tag: %s", why)
			}
			id, err := p.ref(x.Version, v, path)
			if err != nil {
				return err
			}
			if x.Images[id] == nil {
				return p.fail(v, path, nil, "dangling tag: image %s is not in the index", id)
			}
			x.Tags[tag] = id
			return nil
		})
		if err != nil {
			return nil, err
		}
	}

	ids, ents := x.sorted()
	if g := checkGraph(ids, ents, true); g != nil {
		return nil, &ParseError{Line: p.lines[g.id], Path: "images[" + quote(string(g.id)) + "]", Msg: g.msg}
	}
	blobs := make(map[digest.Digest]digest.Digest, len(ids))
	for i, id := range ids {
		b := ents[i].Blob
		if b == "" {
			continue
		}
		if other, dup := blobs[b]; dup {
			return nil, &ParseError{Line: p.lines[id], Path: "images[" + quote(string(id)) + "].blob",
				Msg: fmt.Sprintf("blob %s already belongs to image %s", b, other)}
		}
		blobs[b] = id
	}
	slices.SortFunc(x.Extra, func(a, b Field) int { return strings.Compare(a.Key, b.Key) })
	return x, nil
}

func (p *parser) version(n *yaml.Node) (int, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, p.fail(n, "version", nil, "want an integer")
	}
	if n.Tag == tagInt {
		switch n.Value {
		case "0":
			return 0, nil
		case "1":
			return 1, nil
		}
	}
	if n.Tag == tagStr {
		return 0, p.fail(n, "version", ErrUnsupportedVersion, "unsupported index version %s: want an integer, not a string", quote(n.Value))
	}
	return 0, p.fail(n, "version", ErrUnsupportedVersion, "unsupported index version %s (this canga reads 0 and 1)", quote(n.Value))
}

// cangalloShape reports whether a document without a version looks like
// a Cangallo index: only images and tags, images keyed by bare hex.
func cangalloShape(images, tags *yaml.Node, extra []Field) bool {
	if len(extra) > 0 || images == nil && tags == nil {
		return false
	}
	if images == nil || isNull(images) {
		return true
	}
	if images.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i < len(images.Content); i += 2 {
		k, err := deref(images.Content[i])
		if err != nil || k.Kind != yaml.ScalarNode || !isLowerHex(k.Value) || len(k.Value) != hexLen && len(k.Value) != 40 {
			return false
		}
	}
	return true
}

// imageKey checks the key of an image entry: sha256:HEX in version 1,
// bare HEX in version 0.
func (p *parser) imageKey(version int, key string, k *yaml.Node, path string) (digest.Digest, error) {
	if version == 0 {
		if len(key) == 40 && isLowerHex(key) {
			return "", p.fail(k, path, ErrInvalidID, "Cangallo SHA-1 image IDs are not supported, only SHA-256")
		}
		if !isFullHex(key) {
			return "", p.fail(k, path, ErrInvalidID, "invalid image ID: want 64 lowercase hex digits (Cangallo index)")
		}
		return digest.Digest(idPrefix + key), nil
	}
	if why := idProblem(key); why != "" {
		return "", p.fail(k, path, ErrInvalidID, "invalid image ID: %s", why)
	}
	return digest.Digest(key), nil
}

// ref reads a scalar that names an image: a parent or a tag target.
func (p *parser) ref(version int, n *yaml.Node, path string) (digest.Digest, error) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return "", p.fail(n, path, ErrInvalidID, "want an image ID")
	}
	if version == 0 {
		if !isFullHex(n.Value) {
			return "", p.fail(n, path, ErrInvalidID, "invalid image ID %s: want 64 lowercase hex digits (Cangallo index)", quote(n.Value))
		}
		return digest.Digest(idPrefix + n.Value), nil
	}
	if why := idProblem(n.Value); why != "" {
		return "", p.fail(n, path, ErrInvalidID, "invalid image ID %s: %s", quote(n.Value), why)
	}
	return digest.Digest(n.Value), nil
}

func (p *parser) extra(key string, k, v *yaml.Node, path string) (Field, error) {
	c, err := cleanNode(v, p.budget)
	if err != nil {
		return Field{}, p.fail(k, join(path, key), nil, "%v", err)
	}
	return Field{Key: key, Value: c}, nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// field helpers shared by both versions.

func (p *parser) size(v *yaml.Node, path string) (int64, error) {
	n, err := decimal(v)
	if err != nil {
		return 0, p.fail(v, path, nil, "%v", err)
	}
	return n, nil
}

func (p *parser) text(v *yaml.Node, path string) (string, error) {
	s, err := str(v)
	if err != nil {
		return "", p.fail(v, path, nil, "%v", err)
	}
	return s, nil
}

func (p *parser) cangafile(v *yaml.Node, path string) (*yaml.Node, error) {
	if isNull(v) {
		return nil, nil
	}
	if v.Kind != yaml.MappingNode {
		return nil, p.fail(v, path, nil, "want a mapping")
	}
	c, err := cleanNode(v, p.budget)
	if err != nil {
		return nil, p.fail(v, path, nil, "%v", err)
	}
	return c, nil
}

func (p *parser) entryV1(k, n *yaml.Node, path string) (*Entry, error) {
	e := &Entry{}
	var have haveFields
	err := p.pairs(n, path, func(key string, kn, v *yaml.Node) error {
		return p.entryField(e, &have, key, kn, v, path)
	})
	if err != nil {
		return nil, err
	}
	if err := have.missing(); err != "" {
		return nil, p.fail(k, path, nil, "%s", err)
	}
	if why := chunksProblem(e.Chunks, e.ChunkSize); why != "" {
		return nil, p.fail(k, path, nil, "%s", why)
	}
	slices.SortFunc(e.Extra, func(a, b Field) int { return strings.Compare(a.Key, b.Key) })
	return e, nil
}

// haveFields records the required keys of a version 1 entry seen so far.
type haveFields struct{ blob, blobSize, virtualSize bool }

// missing names the first required key not seen, or is "".
func (h haveFields) missing() string {
	switch {
	case !h.blob:
		return "missing blob"
	case !h.blobSize:
		return "missing blob-size"
	case !h.virtualSize:
		return "missing virtual-size"
	}
	return ""
}

// entryField reads key: v of a version 1 entry into e. Both the general
// parser and the fast path (for values it does not read itself) go
// through here, so the two cannot differ on what a value means.
func (p *parser) entryField(e *Entry, have *haveFields, key string, kn, v *yaml.Node, path string) error {
	fp := join(path, key)
	var err error
	switch key {
	case "blob":
		if v.Kind != yaml.ScalarNode {
			return p.fail(v, fp, ErrInvalidID, "want a blob digest")
		}
		if why := idProblem(v.Value); why != "" {
			return p.fail(v, fp, ErrInvalidID, "invalid blob digest %s: %s", quote(v.Value), why)
		}
		e.Blob, have.blob = digest.Digest(v.Value), true
	case "blob-size":
		if e.BlobSize, err = p.size(v, fp); err == nil && e.BlobSize == 0 {
			err = p.fail(v, fp, nil, "must be positive")
		}
		have.blobSize = true
	case "parent":
		if !isNull(v) {
			e.Parent, err = p.ref(1, v, fp)
		}
	case "virtual-size":
		e.VirtualSize, err = p.size(v, fp)
		have.virtualSize = true
	case "cluster-size":
		if e.ClusterSize, err = p.size(v, fp); err == nil && !validClusterSize(e.ClusterSize) {
			err = p.fail(v, fp, nil, "%d: want a power of two from 512 to 2097152", e.ClusterSize)
		}
	case "compression":
		var s string
		if s, err = p.text(v, fp); err == nil {
			e.Compression = qcow2.Compression(s)
			if s != "" && !e.Compression.Valid() {
				err = p.fail(v, fp, nil, "%s: want zlib, zstd or none", quote(s))
			}
		}
	case "created":
		var s string
		if s, err = p.text(v, fp); err == nil && s != "" {
			t, perr := time.Parse(time.RFC3339Nano, s)
			if perr != nil {
				return p.fail(v, fp, nil, "%s: want an RFC 3339 time like 2026-11-25T17:00:00Z", quote(s))
			}
			e.Created = t.UTC()
		}
	case "description":
		e.Description, err = p.text(v, fp)
	case "os":
		e.OS, err = p.text(v, fp)
	case "cangafile":
		e.Cangafile, err = p.cangafile(v, fp)
	case "chunks":
		if v.Kind != yaml.ScalarNode {
			return p.fail(v, fp, ErrInvalidID, "want a chunk list digest")
		}
		if why := idProblem(v.Value); why != "" {
			return p.fail(v, fp, ErrInvalidID, "invalid chunk list digest %s: %s", quote(v.Value), why)
		}
		e.Chunks = digest.Digest(v.Value)
	case "chunk-size":
		if e.ChunkSize, err = p.size(v, fp); err == nil && !ValidChunkSize(e.ChunkSize) {
			err = p.fail(v, fp, nil, "%d: want a power of two from %d to %d", e.ChunkSize, MinChunkSize, MaxChunkSize)
		}
	default:
		var f Field
		if f, err = p.extra(key, kn, v, path); err == nil {
			e.Extra = append(e.Extra, f)
		}
	}
	return err
}

// Layouts of Cangallo's creation-time. Ruby's Time#to_yaml writes
// "2016-03-13 16:52:28.123456789 +01:00" (or " Z"); Time#to_s and YAML
// timestamps appear in hand-edited files. Go accepts a fractional second
// after the seconds even where a layout has none.
var legacyTimeLayouts = []string{
	"2006-01-02 15:04:05 Z07:00",
	"2006-01-02 15:04:05 -0700",
	time.RFC3339Nano,
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05",
	"2006-01-02",
}

func parseLegacyTime(s string) (time.Time, bool) {
	for _, layout := range legacyTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

func (p *parser) entryV0(id digest.Digest, n *yaml.Node, path string) (*Entry, error) {
	hex := strings.TrimPrefix(string(id), idPrefix)
	e := &Entry{Legacy: &Legacy{File: hex + ".qcow2"}}
	err := p.pairs(n, path, func(key string, k, v *yaml.Node) error {
		fp := join(path, key)
		var err error
		switch key {
		case "sha256":
			var s string
			if s, err = p.text(v, fp); err == nil && s != hex {
				err = p.fail(v, fp, ErrInvalidID, "%s does not match the image key", quote(s))
			}
		case "parent":
			if !isNull(v) {
				e.Parent, err = p.ref(0, v, fp)
			}
		case "virtual-size":
			e.VirtualSize, err = p.size(v, fp)
		case "actual-size":
			e.Legacy.ActualSize, err = p.size(v, fp)
		case "format":
			e.Legacy.Format, err = p.text(v, fp)
		case "file-sha256":
			e.Legacy.FileSHA256, err = p.text(v, fp)
		case "creation-time":
			var s string
			if s, err = p.text(v, fp); err == nil && s != "" {
				t, ok := parseLegacyTime(s)
				if !ok {
					return p.fail(v, fp, nil, "%s: not a time", quote(s))
				}
				e.Created = t
			}
		case "description":
			e.Description, err = p.text(v, fp)
		case "os":
			e.OS, err = p.text(v, fp)
		case "cangafile":
			e.Cangafile, err = p.cangafile(v, fp)
		default:
			// format-specific and the like: a Cangallo entry is never
			// written back, so there is nothing to keep them for. They
			// are still walked, so the node budget applies.
			_, err = p.extra(key, k, v, path)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if e.Parent == id {
		return nil, p.fail(n, join(path, "parent"), nil, "parent loop: the image is its own parent")
	}
	return e, nil
}
