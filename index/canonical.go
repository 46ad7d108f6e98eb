package index

import (
	"bufio"
	"bytes"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// The canonical layout is the one [Index.Marshal] writes, which is what
// every index.yaml that canga wrote looks like:
//
//	version: 1
//	images:
//	  sha256:ID:
//	    blob: sha256:HEX
//	    blob-size: N
//	    parent: sha256:ID
//	    ...
//	tags:
//	  TAG: sha256:ID
//
// one line per key, keys in the order of SPEC §2 (unknown ones sorted
// after), images and tags sorted, two-space indents, `images: {}` and
// `tags: {}` when empty. Going through a YAML node tree costs about 20
// times more time and 10 times more memory than reading these lines
// directly (see bench/RESULTS.md), so [Parse] first tries parseCanonical,
// which reads exactly this layout, and falls back to the general parser for
// anything else: a hand-edited file, comments, another key order, Cangallo
// indexes, a document with an error.
//
// parseCanonical only ever accepts or declines; it never decides that a
// document is wrong. A document it accepts is one the general parser
// accepts, to the same index (FuzzCanonical checks this), and everything
// it is unsure of (a value in a YAML style it does not read, a rule of
// the package documentation broken) makes it decline, so that the general
// parser reports the error, with its line and key. Values it does not read
// itself (a cangafile, unknown keys, quoted or multi-line text) are parsed
// by the YAML parser one key at a time and go through the same code as in
// the general parser, within the same node budget.

// parseCanonical reads an index from r if it is in the canonical layout,
// line by line, without holding the document in memory. ok is false when
// it is not canonical, when anything in it is wrong, or when r fails.
// size is the length of the document.
func parseCanonical(r io.Reader, size int64) (x *Index, ok bool) {
	defer func() {
		// The YAML parser runs on parts of the document; whatever upsets
		// it is for the general parser to report.
		if rec := recover(); rec != nil {
			x, ok = nil, false
		}
	}()
	if size < 0 || size > MaxIndexSize {
		return nil, false
	}
	// The general parser's budget, spent on the same nodes.
	d := &decoder{br: bufio.NewReaderSize(r, 64<<10), p: &parser{budget: newBudget(int(size))}, oss: map[string]string{}}
	// An entry written by canga takes about 450 bytes: size the map once.
	if !d.document(int(size / 450)) {
		return nil, false
	}
	return d.x, true
}

type decoder struct {
	br   *bufio.Reader
	line []byte // the current line, without its newline: valid until next
	have bool   // line is read and not consumed
	eof  bool   // every line is consumed
	bad  bool   // r failed, or its last line has no newline
	long []byte // holds a line longer than br's buffer
	snip []byte // a key and its value, for the YAML parser
	p    *parser
	x    *Index
	ids  []digest.Digest // image IDs as read: sorted
	ents []*Entry        // their entries
	tab  *idTable        // finds IDs in ids
	// oss interns the values of os, which are few and repeated.
	oss map[string]string
	// keep holds the bytes of the strings of the index, tmp those needed
	// only while reading it (parents, until they share their ID's bytes).
	keep, tmp arena
	slab      []Entry // entries are allocated 256 at a time
}

// arena makes strings out of large shared blocks instead of one
// allocation each: an index of 100,000 images has 400,000 strings, whose
// allocation and scanning cost more than reading them.
type arena struct{ b strings.Builder }

// str returns a string with the bytes of p. A [strings.Builder] never
// changes the bytes it has written, so its String can be cut into pieces
// that stay valid while it grows within its capacity.
func (a *arena) str(p []byte) string {
	const block = 64 << 10
	if len(p) > block/8 {
		return string(p)
	}
	if a.b.Cap()-a.b.Len() < len(p) {
		a.b = strings.Builder{}
		a.b.Grow(block)
	}
	start := a.b.Len()
	a.b.Write(p)
	return a.b.String()[start:]
}

// peek returns the current line.
func (d *decoder) peek() ([]byte, bool) {
	if d.have {
		return d.line, true
	}
	if d.eof || d.bad {
		return nil, false
	}
	l, err := d.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		d.long = append(d.long[:0], l...)
		for err == bufio.ErrBufferFull {
			l, err = d.br.ReadSlice('\n')
			d.long = append(d.long, l...)
		}
		l = d.long
	}
	switch {
	case err == io.EOF && len(l) == 0:
		d.eof = true
		return nil, false
	case err != nil:
		// A document whose last line has no newline is not canonical.
		d.bad = true
		return nil, false
	}
	d.line, d.have = l[:len(l)-1], true
	return d.line, true
}

// next consumes the current line.
func (d *decoder) next() { d.have = false }

// take consumes the current line into snip.
func (d *decoder) take(l []byte) {
	d.snip = append(append(d.snip[:0], l...), '\n')
	d.next()
}

// lineIs consumes the current line if it is exactly want.
func (d *decoder) lineIs(want string) bool {
	l, ok := d.peek()
	if !ok || string(l) != want {
		return false
	}
	d.next()
	return true
}

// continued consumes the lines that continue a value started on a line
// indented by indent: blank lines, lines indented more, and lines at the
// same indent that start with ": " (the value of a "? " key, as yaml.v3
// writes keys longer than 128 bytes) or "- " (a sequence that is a
// mapping's value may sit at the mapping's indent). With collect, they go
// to snip. It reports whether there were any.
func (d *decoder) continued(indent int, collect bool) bool {
	any := false
	for {
		l, ok := d.peek()
		if !ok {
			break
		}
		n := 0
		for n < len(l) && l[n] == ' ' {
			n++
		}
		if n < len(l) && n <= indent {
			rest := l[n:]
			if n < indent || !(rest[0] == ':' || rest[0] == '-') || len(rest) > 1 && rest[1] != ' ' {
				break
			}
		}
		if collect {
			d.snip = append(append(d.snip, l...), '\n')
		}
		d.next()
		any = true
	}
	return any
}

func (d *decoder) document(hint int) bool {
	if !d.lineIs("version: 1") {
		return false
	}
	d.x = &Index{Version: 1, Images: make(map[digest.Digest]*Entry, hint), Tags: map[string]digest.Digest{}}
	d.ids = make([]digest.Digest, 0, hint)
	d.ents = make([]*Entry, 0, hint)
	switch {
	case d.lineIs("images: {}"):
	case d.lineIs("images:"):
		if !d.images() {
			return false
		}
	default:
		return false
	}
	d.tab = newIDTable(d.ids)
	switch {
	case d.lineIs("tags: {}"):
	case d.lineIs("tags:"):
		if !d.tags() {
			return false
		}
	default:
		return false
	}
	for {
		l, ok := d.peek()
		if !ok {
			break
		}
		d.take(l)
		d.continued(0, true)
		f, ok := d.extra(0, "", topKeys)
		if !ok || len(d.x.Extra) > 0 && f.Key <= d.x.Extra[len(d.x.Extra)-1].Key {
			return false
		}
		d.x.Extra = append(d.x.Extra, f)
	}
	return !d.bad && d.graph()
}

// extra reads an unknown key at indent, with its value, from snip through
// the YAML parser.
func (d *decoder) extra(indent int, path string, known []string) (Field, bool) {
	k, v, ok := d.snippet(indent)
	if !ok || slices.Contains(known, k.Value) {
		return Field{}, false
	}
	f, err := d.p.extra(k.Value, k, v, path)
	return f, err == nil
}

// snippet parses snip, a key indented by indent and the lines that
// continue its value, as a YAML document of its own. It is the same
// mapping pair as in the whole document: the lines continuing a value are
// those indented more (a value that continues less indented, or refers to
// an anchor outside, fails to parse alone and the document is declined).
func (d *decoder) snippet(indent int) (k, v *yaml.Node, ok bool) {
	l := d.snip
	if len(l) <= indent+1 || l[indent] == ' ' || l[indent] == '#' {
		return nil, nil, false
	}
	root, _, err := decodeOne(l)
	if err != nil || root.Kind != yaml.MappingNode || len(root.Content) != 2 || root.Column != indent+1 {
		return nil, nil, false
	}
	k, v = root.Content[0], root.Content[1]
	if k.Kind != yaml.ScalarNode || v.Kind == yaml.AliasNode {
		return nil, nil, false
	}
	return k, v, true
}

func (d *decoder) images() bool {
	const keyLen = 2 + len(idPrefix) + hexLen + 1 // "  sha256:HEX:"
	var last digest.Digest
	for {
		l, ok := d.peek()
		if !ok || !bytes.HasPrefix(l, []byte("  sha256:")) {
			break
		}
		if len(l) != keyLen || l[keyLen-1] != ':' || !isLowerHexBytes(l[2+len(idPrefix):keyLen-1]) {
			return false
		}
		id := digest.Digest(d.keep.str(l[2 : keyLen-1]))
		d.next()
		if id <= last { // sorted, so no duplicates
			return false
		}
		last = id
		e, ok := d.entry(id)
		if !ok {
			return false
		}
		d.x.Images[id] = e
		d.ids = append(d.ids, id)
		d.ents = append(d.ents, e)
	}
	return len(d.ids) > 0
}

// entryRank is the place of a known key of an entry in canonical order
// (entryKeys); unknown keys come after them.
func entryRank(key []byte) (int, bool) {
	switch string(key) {
	case "blob":
		return 0, true
	case "blob-size":
		return 1, true
	case "parent":
		return 2, true
	case "virtual-size":
		return 3, true
	case "cluster-size":
		return 4, true
	case "compression":
		return 5, true
	case "created":
		return 6, true
	case "description":
		return 7, true
	case "os":
		return 8, true
	case "cangafile":
		return 9, true
	case "chunks":
		return 10, true
	case "chunk-size":
		return 11, true
	}
	return len(entryKeys), false
}

func (d *decoder) entry(id digest.Digest) (*Entry, bool) {
	if len(d.slab) == 0 {
		d.slab = make([]Entry, 256)
	}
	e := &d.slab[0]
	d.slab = d.slab[1:]
	var have haveFields
	// Errors carry no path: they are never shown, the general parser
	// reports them.
	const path = ""
	rank := -1
	for {
		l, ok := d.peek()
		if !ok || len(l) < 5 || string(l[:4]) != "    " || l[4] == ' ' {
			break
		}
		// The key as written, for the known keys; any other line (an
		// unknown key, a "? " key) is the YAML parser's.
		key, valAt := "", 0
		r, known := len(entryKeys), false
		if colon := bytes.IndexByte(l, ':'); colon > 4 {
			if r, known = entryRank(l[4:colon]); known {
				key, valAt = entryKeys[r], colon+1
			}
		}
		// Known keys once each, in order; unknown ones after them
		// (their order is checked on their parsed keys).
		if r < rank || r == rank && known {
			return nil, false
		}
		rank = r
		d.take(l)
		if !d.continued(4, true) && known {
			if val := d.snip[valAt : len(d.snip)-1]; len(val) > 1 && val[0] == ' ' && d.value(e, &have, key, val[1:]) {
				continue
			}
		}
		if !known {
			f, ok := d.extra(4, path, entryKeys)
			if !ok || len(e.Extra) > 0 && f.Key <= e.Extra[len(e.Extra)-1].Key {
				return nil, false
			}
			e.Extra = append(e.Extra, f)
			continue
		}
		k, v, ok := d.snippet(4)
		if !ok || k.Value != key || d.p.entryField(e, &have, key, k, v, path) != nil {
			return nil, false
		}
	}
	if have.missing() != "" || chunksProblem(e.Chunks, e.ChunkSize) != "" {
		return nil, false
	}
	return e, true
}

// value reads the one-line value of a known key, when it is written as
// canga writes it; otherwise it returns false and changes nothing that the
// YAML parser's reading would not set again.
func (d *decoder) value(e *Entry, have *haveFields, key string, val []byte) bool {
	switch key {
	case "blob":
		if !isDigestBytes(val) {
			return false
		}
		e.Blob, have.blob = digest.Digest(d.keep.str(val)), true
	case "parent":
		if !isDigestBytes(val) {
			return false
		}
		e.Parent = digest.Digest(d.tmp.str(val)) // shares its ID's bytes after graph
	case "blob-size":
		n, ok := decimalBytes(val)
		if !ok || n == 0 {
			return false
		}
		e.BlobSize, have.blobSize = n, true
	case "virtual-size":
		n, ok := decimalBytes(val)
		if !ok {
			return false
		}
		e.VirtualSize, have.virtualSize = n, true
	case "cluster-size":
		n, ok := decimalBytes(val)
		if !ok || !validClusterSize(n) {
			return false
		}
		e.ClusterSize = n
	case "compression":
		switch string(val) {
		case "zlib":
			e.Compression = qcow2.CompressionZlib
		case "zstd":
			e.Compression = qcow2.CompressionZstd
		case "none":
			e.Compression = qcow2.CompressionNone
		default:
			return false
		}
	case "created":
		if !isTimeText(val) {
			return false
		}
		t, err := time.Parse(time.RFC3339Nano, d.tmp.str(val))
		if err != nil {
			return false
		}
		e.Created = t.UTC()
	case "chunks":
		if !isDigestBytes(val) {
			return false
		}
		e.Chunks = digest.Digest(d.keep.str(val))
	case "chunk-size":
		n, ok := decimalBytes(val)
		if !ok || !ValidChunkSize(n) {
			return false
		}
		e.ChunkSize = n
	case "description":
		b, ok := scalarText(val)
		if !ok {
			return false
		}
		e.Description = d.keep.str(b)
	case "os":
		b, ok := scalarText(val)
		if !ok {
			return false
		}
		if in, ok := d.oss[string(b)]; ok {
			e.OS = in
		} else {
			e.OS = d.keep.str(b)
			if len(d.oss) < 1024 {
				d.oss[e.OS] = e.OS
			}
		}
	default:
		return false
	}
	return true
}

func (d *decoder) tags() bool {
	last := ""
	for {
		l, ok := d.peek()
		if !ok || len(l) < 3 || string(l[:2]) != "  " || l[2] == ' ' {
			break
		}
		sep := bytes.Index(l, []byte(": "))
		if sep < 0 {
			return false
		}
		tb, ok := scalarText(l[2:sep])
		val := l[sep+2:]
		if !ok || !isDigestBytes(val) {
			return false
		}
		tag := d.keep.str(tb)
		if tagProblem(tag) != "" || tag <= last {
			return false
		}
		i, ok := d.tab.find(d.tmp.str(val))
		if !ok {
			return false // a dangling tag: the general parser says so
		}
		last = tag
		d.next()
		if d.continued(2, false) {
			return false
		}
		d.x.Tags[tag] = d.ids[i] // shares the ID's bytes
	}
	return last != ""
}

// graph checks what spans images: every parent in the index, no parent
// loop, no blob shared.
func (d *decoder) graph() bool {
	blobs := make(map[digest.Digest]struct{}, len(d.ids))
	for _, e := range d.ents {
		if _, dup := blobs[e.Blob]; dup {
			return false
		}
		blobs[e.Blob] = struct{}{}
	}
	return checkGraph(d.ids, d.ents, true) == nil
}

// isDigestBytes reports whether b is "sha256:" and 64 lowercase hex
// digits, a plain scalar that means itself.
func isDigestBytes(b []byte) bool {
	return len(b) == len(idPrefix)+hexLen && string(b[:len(idPrefix)]) == idPrefix && isLowerHexBytes(b[len(idPrefix):])
}

func isLowerHexBytes(b []byte) bool {
	for _, c := range b {
		if hexVal[c] == 0xff {
			return false
		}
	}
	return true
}

// hexVal is the value of a lowercase hex digit, 0xff for other bytes.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()

// decimalBytes reads a size as [decimal] accepts it from the YAML parser:
// digits only, read as an integer by YAML (no leading zero: "010" is
// octal to YAML 1.1), and within int64.
func decimalBytes(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 || len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// isTimeText reports whether b is made only of what an RFC 3339 time is
// made of, so that it is a plain YAML scalar whose value is b.
func isTimeText(b []byte) bool {
	if len(b) == 0 || b[0] < '0' || b[0] > '9' {
		return false
	}
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9', c == '-', c == ':', c == '.', c == '+', c == 'T', c == 'Z', c == 't', c == 'z':
		default:
			return false
		}
	}
	return true
}

// scalarText reads a one-line scalar whose value is plain to see: a plain
// scalar of printable characters that YAML reads as itself and not as
// null, or a quoted one without escapes. It returns the value's bytes;
// anything else is the YAML parser's.
func scalarText(b []byte) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	switch q := b[0]; q {
	case '"', '\'':
		if len(b) < 2 || b[len(b)-1] != q {
			return nil, false
		}
		in := b[1 : len(b)-1]
		for _, c := range in {
			if c == q || c == '\\' || c < 0x20 || c >= 0x7f {
				return nil, false
			}
		}
		return in, true
	}
	if !plainSafe(b) {
		return nil, false
	}
	switch string(b) {
	case "~", "null", "Null", "NULL":
		return nil, false
	}
	return b, true
}

// plainSafe reports whether b, on one line, is a plain YAML scalar whose
// value is exactly b: it does not start with an indicator or a space, does
// not end with a space or a colon, holds no ": " and no " #", and only
// printable characters that are not YAML line breaks or a byte order mark.
func plainSafe[S ~string | ~[]byte](b S) bool {
	if len(b) == 0 || strings.IndexByte("-?:,[]{}#&*!|>'\"%@` ", b[0]) >= 0 {
		return false
	}
	if c := b[len(b)-1]; c == ' ' || c == ':' {
		return false
	}
	for i := 0; i < len(b); {
		if c := b[i]; c < utf8.RuneSelf {
			switch {
			case c < 0x20 || c == 0x7f:
				return false
			case c == ':' && i+1 < len(b) && b[i+1] == ' ', c == ' ' && i+1 < len(b) && b[i+1] == '#':
				return false // ": " or " #"
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(string(b[i:min(i+utf8.UTFMax, len(b))]))
		if !printableRune(r) {
			return false
		}
		i += n
	}
	return true
}

// printableRune: YAML's printable characters above ASCII, less its line
// breaks (U+0085, U+2028, U+2029) and the byte order mark.
func printableRune(r rune) bool {
	switch {
	case r == utf8.RuneError, r == 0x85, r == 0x2028, r == 0x2029, r == 0xfeff:
		return false
	case r >= 0xa0 && r <= 0xd7ff, r >= 0xe000 && r <= 0xfffd:
		return true
	}
	return false
}
