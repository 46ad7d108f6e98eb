package index

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// Marshal returns the index as version 1 index.yaml bytes. The output is
// canonical: images and tags sorted, keys in the order of SPEC §2, unknown
// keys sorted after them, 2-space indent; so equal indexes give equal
// bytes, which matters because these bytes are what gets signed. They are
// the bytes the YAML encoder (yaml.v3, indent 2) writes for this document,
// and the layout that [Parse] reads fastest.
//
// The index is validated first. Entries without a blob digest (read from
// a Cangallo index) cannot be written.
func (x *Index) Marshal() ([]byte, error) {
	var b bytes.Buffer
	// Most entries take 400 to 500 bytes: one allocation for the lot.
	b.Grow(64 + 480*len(x.Images) + 96*len(x.Tags))
	if err := x.Encode(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Encode writes what [Index.Marshal] returns to w, without holding it
// all in memory. Nothing is written when the index is invalid; an error
// of w, or of the YAML encoder on a cangafile or an unknown key, can stop
// it midway, so w should be a temporary file.
func (x *Index) Encode(w io.Writer) error {
	ids, ents, err := x.validate()
	if err != nil {
		return err
	}
	for i, id := range ids {
		if ents[i].Blob == "" {
			return fmt.Errorf("%w: image %s has no blob digest (a Cangallo entry): pull it before writing the index", ErrInvalid, ShortID(id))
		}
	}
	e := &encoder{w: w, buf: make([]byte, 0, 64<<10)}
	e.str("version: 1\n")
	if len(ids) == 0 {
		e.str("images: {}\n")
	} else {
		e.str("images:\n")
	}
	for i, id := range ids {
		if err := e.entry(id, ents[i]); err != nil {
			return err
		}
		e.next()
	}
	tags := make([]string, 0, len(x.Tags))
	for t := range x.Tags {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	if len(tags) == 0 {
		e.str("tags: {}\n")
	} else {
		e.str("tags:\n")
	}
	for _, t := range tags {
		if plainKey(t) {
			e.str("  ")
			e.str(t)
			e.str(": ")
			e.str(string(x.Tags[t]))
			e.str("\n")
			e.next()
		} else if err := e.yaml(1, t, strNode(string(x.Tags[t]))); err != nil {
			return fmt.Errorf("%w: tag %s: %v", ErrInvalid, quote(t), err)
		}
	}
	if err := e.extra(0, x.Extra, newBudget(0)); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return e.flush()
}

// encoder writes the canonical layout through a buffer; its first error
// sticks.
type encoder struct {
	w   io.Writer
	buf []byte
	err error
}

func (e *encoder) str(s string) { e.buf = append(e.buf, s...) }

// next flushes the buffer when it is nearly full; called between lines.
func (e *encoder) next() {
	if len(e.buf) >= cap(e.buf)-4096 {
		e.flush()
	}
}

func (e *encoder) int(key string, v int64) {
	e.str(key)
	e.buf = strconv.AppendInt(e.buf, v, 10)
	e.str("\n")
}

func (e *encoder) flush() error {
	if e.err == nil && len(e.buf) > 0 {
		_, e.err = e.w.Write(e.buf)
	}
	e.buf = e.buf[:0]
	return e.err
}

func (e *encoder) entry(id digest.Digest, en *Entry) error {
	e.str("  ")
	e.str(string(id))
	e.str(":\n    blob: ")
	e.str(string(en.Blob))
	e.str("\n")
	e.int("    blob-size: ", en.BlobSize)
	if en.Parent != "" {
		e.str("    parent: ")
		e.str(string(en.Parent))
		e.str("\n")
	}
	e.int("    virtual-size: ", en.VirtualSize)
	if en.ClusterSize != 0 {
		e.int("    cluster-size: ", en.ClusterSize)
	}
	if en.Compression != "" {
		e.str("    compression: ")
		e.str(string(en.Compression)) // validated: zlib, zstd or none
		e.str("\n")
	}
	if !en.Created.IsZero() {
		e.str("    created: ")
		e.buf = en.Created.UTC().AppendFormat(e.buf, time.RFC3339Nano)
		e.str("\n")
	}
	if err := e.text("description", en.Description); err != nil {
		return fmt.Errorf("%w: image %s: %v", ErrInvalid, ShortID(id), err)
	}
	if err := e.text("os", en.OS); err != nil {
		return fmt.Errorf("%w: image %s: %v", ErrInvalid, ShortID(id), err)
	}
	// Each entry gets its own budget: stored nodes are already clean,
	// the budget only stops an alias cycle a caller built by hand.
	b := newBudget(0)
	if en.Cangafile != nil {
		c, err := cleanNode(en.Cangafile, b)
		if err == nil {
			err = e.yaml(2, "cangafile", c)
		}
		if err != nil {
			return fmt.Errorf("%w: image %s: cangafile: %v", ErrInvalid, ShortID(id), err)
		}
	}
	if en.Chunks != "" {
		e.str("    chunks: ")
		e.str(string(en.Chunks)) // validated: sha256:HEX
		e.str("\n")
		e.int("    chunk-size: ", en.ChunkSize)
	}
	if err := e.extra(2, en.Extra, b); err != nil {
		return fmt.Errorf("%w: image %s: %v", ErrInvalid, ShortID(id), err)
	}
	return nil
}

// text writes an optional string value of an entry.
func (e *encoder) text(key, s string) error {
	switch {
	case s == "":
		return nil
	case plainValue(s):
		e.str("    ")
		e.str(key)
		e.str(": ")
		e.str(s)
		e.str("\n")
		return nil
	}
	return e.yaml(2, key, strNode(s))
}

// extra writes unknown keys, sorted, at depth.
func (e *encoder) extra(depth int, extra []Field, b *budget) error {
	sorted := slices.Clone(extra)
	slices.SortFunc(sorted, func(a, b Field) int { return strings.Compare(a.Key, b.Key) })
	for _, f := range sorted {
		c, err := cleanNode(f.Value, b)
		if err == nil {
			err = e.yaml(depth, f.Key, c)
		}
		if err != nil {
			return fmt.Errorf("%s: %v", f.Key, err)
		}
	}
	return nil
}

// yaml writes key: v as the YAML encoder writes it at depth (0 top level,
// 1 in images or tags, 2 in an entry): v is encoded inside as many
// enclosing mappings, whose lines are then dropped, so that quoting,
// indents and line breaks are exactly those of the whole document.
func (e *encoder) yaml(depth int, key string, v *yaml.Node) error {
	n := mapNode()
	addPair(n, key, v)
	for range depth {
		outer := mapNode()
		addPair(outer, "x", n)
		n = outer
	}
	out, err := encodeNode(n)
	if err != nil {
		return err
	}
	for range depth {
		i := bytes.IndexByte(out, '\n')
		if i < 0 {
			return fmt.Errorf("cannot encode %s", quote(key))
		}
		out = out[i+1:]
	}
	e.buf = append(e.buf, out...)
	return nil
}

// plainValue reports whether canga writes s, a string value, as it is:
// what the YAML encoder writes plain and [plainSafe] reads back as itself.
// It must start with a letter, so that it cannot read as a number, a
// time or another YAML type, and must not be a word YAML reads as a bool
// or null. Anything else goes through the YAML encoder.
func plainValue(s string) bool {
	if s == "" || !('a' <= s[0] && s[0] <= 'z' || 'A' <= s[0] && s[0] <= 'Z') {
		return false
	}
	switch s {
	case "true", "True", "TRUE", "false", "False", "FALSE", "null", "Null", "NULL":
		return false
	}
	return plainSafe(s)
}

// plainKey: the same for a tag, which is a key.
func plainKey(s string) bool { return plainValue(s) && s[len(s)-1] != ':' }
