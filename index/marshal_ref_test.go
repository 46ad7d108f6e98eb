package index

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// marshalNodes is how Marshal wrote index.yaml before it wrote the lines
// itself: through a yaml.v3 node tree. It is the reference that the
// canonical encoder must match byte for byte (FuzzCanonical).
func (x *Index) marshalNodes() (out []byte, err error) {
	if err := x.Validate(); err != nil {
		return nil, err
	}
	for _, id := range x.IDs() {
		if x.Images[id].Blob == "" {
			return nil, fmt.Errorf("%w: image %s has no blob digest (a Cangallo entry): pull it before writing the index", ErrInvalid, ShortID(id))
		}
	}
	// The yaml.v3 encoder panics rather than returning some errors; a
	// Node we built from validated fields should never trip it, but a
	// panic must not escape a library.
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("%w: cannot encode: %v", ErrInvalid, r)
		}
	}()

	root := mapNode()
	addPair(root, "version", intNode(Version))

	images := mapNode()
	for _, id := range x.IDs() {
		en, err := entryNode(x.Images[id])
		if err != nil {
			return nil, fmt.Errorf("%w: image %s: %v", ErrInvalid, ShortID(id), err)
		}
		addPair(images, string(id), en)
	}
	addPair(root, "images", images)

	tags := mapNode()
	names := make([]string, 0, len(x.Tags))
	for t := range x.Tags {
		names = append(names, t)
	}
	slices.Sort(names)
	for _, t := range names {
		addPair(tags, t, strNode(string(x.Tags[t])))
	}
	addPair(root, "tags", tags)
	if err := addExtra(root, x.Extra, newBudget(0)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("%w: cannot encode: %v", ErrInvalid, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("%w: cannot encode: %v", ErrInvalid, err)
	}
	return buf.Bytes(), nil
}

func entryNode(e *Entry) (*yaml.Node, error) {
	// Each entry gets its own budget: stored nodes are already clean,
	// the budget only stops an alias cycle a caller built by hand.
	b := newBudget(0)
	m := mapNode()
	addPair(m, "blob", strNode(string(e.Blob)))
	addPair(m, "blob-size", intNode(e.BlobSize))
	if e.Parent != "" {
		addPair(m, "parent", strNode(string(e.Parent)))
	}
	addPair(m, "virtual-size", intNode(e.VirtualSize))
	if e.ClusterSize != 0 {
		addPair(m, "cluster-size", intNode(e.ClusterSize))
	}
	if e.Compression != "" {
		addPair(m, "compression", strNode(string(e.Compression)))
	}
	if !e.Created.IsZero() {
		// A plain timestamp, as in SPEC §2; Parse reads its text.
		addPair(m, "created", &yaml.Node{Kind: yaml.ScalarNode, Tag: tagTime,
			Value: e.Created.UTC().Format(time.RFC3339Nano)})
	}
	if e.Description != "" {
		addPair(m, "description", strNode(e.Description))
	}
	if e.OS != "" {
		addPair(m, "os", strNode(e.OS))
	}
	if e.Cangafile != nil {
		c, err := cleanNode(e.Cangafile, b)
		if err != nil {
			return nil, fmt.Errorf("cangafile: %v", err)
		}
		addPair(m, "cangafile", c)
	}
	if e.Chunks != "" {
		addPair(m, "chunks", strNode(string(e.Chunks)))
		addPair(m, "chunk-size", intNode(e.ChunkSize))
	}
	if err := addExtra(m, e.Extra, b); err != nil {
		return nil, err
	}
	return m, nil
}

func addExtra(m *yaml.Node, extra []Field, b *budget) error {
	sorted := slices.Clone(extra)
	slices.SortFunc(sorted, func(a, b Field) int { return strings.Compare(a.Key, b.Key) })
	for _, f := range sorted {
		c, err := cleanNode(f.Value, b)
		if err != nil {
			return fmt.Errorf("%s: %v", f.Key, err)
		}
		addPair(m, f.Key, c)
	}
	return nil
}
