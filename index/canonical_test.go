package index

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// checkCanonical is the differential check between the two readers and
// the two writers of index.yaml, on any input:
//
//   - what parseCanonical accepts, the general parser accepts, to the
//     same index; so Parse (canonical first, general otherwise) refuses
//     exactly what the general parser refuses, with its errors;
//   - Marshal writes the bytes the yaml.v3 node encoder writes;
//   - parseCanonical reads every output of Marshal, and any input equal
//     to it.
func checkCanonical(t *testing.T, data []byte) {
	t.Helper()
	g, gerr := parseGeneral(data)
	c, ok := canon(data)
	if ok {
		if gerr != nil {
			t.Fatalf("the canonical reader accepts what the general parser refuses (%v):\n%q", gerr, data)
		}
		if c.Version != g.Version {
			t.Fatalf("version %d vs %d", c.Version, g.Version)
		}
		sameIndex(t, c, g)
		if err := c.Validate(); err != nil {
			t.Fatalf("the canonical reader accepts an invalid index: %v", err)
		}
	}
	if gerr != nil {
		return
	}
	ref, rerr := g.marshalNodes()
	out, err := g.Marshal()
	if (rerr == nil) != (err == nil) {
		t.Fatalf("Marshal error %v, reference error %v", err, rerr)
	}
	if err != nil {
		return
	}
	if !bytes.Equal(ref, out) {
		t.Fatalf("Marshal differs from the yaml.v3 encoder:\n%s\n--- reference:\n%s", out, ref)
	}
	c2, ok2 := canon(out)
	if !ok2 {
		if yamlBreaks(out) {
			return // the general parser's, which is allowed
		}
		t.Fatalf("the canonical reader declines Marshal's output:\n%s", out)
	}
	// Against the general parser on the same bytes: that Parse(Marshal)
	// gives the index back is FuzzParse's to check.
	g2, err := parseGeneral(out)
	if err != nil {
		t.Fatalf("the general parser refuses Marshal's output: %v", err)
	}
	sameIndex(t, c2, g2)
	if bytes.Equal(out, data) && !ok {
		t.Fatalf("the canonical reader declines a canonical document")
	}
}

// canon runs the canonical reader on data.
func canon(data []byte) (*Index, bool) {
	return parseCanonical(bytes.NewReader(data), int64(len(data)))
}

// yamlBreaks reports whether b holds a line break of YAML's that is not
// a line break of the canonical reader (NEL, LS, PS): such rare documents
// may be left to the general parser.
func yamlBreaks(b []byte) bool {
	return bytes.Contains(b, []byte("\u0085")) || bytes.Contains(b, []byte("\u2028")) || bytes.Contains(b, []byte("\u2029"))
}

// FuzzCanonical runs checkCanonical. Seeds: canonical documents with
// every key, every kind of value and unknown keys, Cangallo indexes, and
// the same documents with comments, reordered keys and other edits that
// only the general parser reads.
func FuzzCanonical(f *testing.F) {
	for _, s := range canonicalSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(checkCanonical)
}

func TestCanonicalSeeds(t *testing.T) {
	for i, s := range canonicalSeeds(t) {
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkCanonical(t, s) })
	}
}

// richIndex has every key of SPEC §2, unknown keys at both levels, and
// values that need each of YAML's quoting styles.
func richIndex(t testing.TB) *Index {
	x := New()
	node := func(src string) *yaml.Node {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		return doc.Content[0]
	}
	created := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	put(t, x, idBase, &Entry{Blob: blobBase, BlobSize: 302292992, VirtualSize: 2361393152, ClusterSize: 65536,
		Compression: qcow2.CompressionZstd, Created: created, Description: "Ubuntu 16.04 base", OS: "16.04",
		Chunks: blobAlp, ChunkSize: 1 << 20,
		Extra: []Field{{"labels", node("{b: 2, a: [1, 2]}")}, {"zeta", node("'x: y'")}}})
	put(t, x, idOne, &Entry{Blob: blobOne, BlobSize: 14819328, Parent: idBase, VirtualSize: 2361393152,
		ClusterSize: 512, Compression: qcow2.CompressionZlib, Created: created.Add(1500 * time.Millisecond),
		Description: "OpenNebula Compatible Ubuntu 16.04: built\nby canga", OS: "Ubuntu 16.04",
		Chunks: idAlpine, ChunkSize: 64 << 10,
		Cangafile: node("parent: ubuntu:16.04\ntasks:\n  - run: |\n      a\n\n      b\n  - change: {file: /x, regexp: '^#?P.*', text: 'P no'}\n")})
	put(t, x, idAlpine, &Entry{Blob: blobAlp, BlobSize: 5, VirtualSize: 0, Parent: idOne, Compression: qcow2.CompressionNone,
		Created: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), Description: "élan ☃ 'quoted' \"double\" \\ # not: a comment", OS: "null"})
	for tag, id := range map[string]digest.Digest{"ubuntu:16.04": idBase, "ubuntu/one:16.04": idOne, "1.0": idOne,
		"null": idAlpine, "yes": idAlpine, "a": idBase, "42": idBase, "x:": idOne} {
		if _, err := x.SetTag(tag, id); err != nil {
			t.Fatal(err)
		}
	}
	x.Extra = []Field{{"signed-by", node("someone")}, {"annotations", node("x: [y, z]")}, {strings.Repeat("k", 130), node("long key")}}
	return x
}

func canonicalSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	rich, err := richIndex(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	plain := v1(one("    parent: "+string(idBase)+"\n    description: plain text\n    os: Debian 12\n    chunks: "+string(idAlpine)+"\n    chunk-size: 1048576\n"), "  t: "+string(idOne)+"\n")
	seeds = append(seeds, rich, []byte(plain), []byte("version: 1\nimages: {}\ntags: {}\n"))
	edits := []func(string) string{
		// only the general parser reads these
		func(s string) string { return "# a comment\n" + s },
		func(s string) string { return strings.Replace(s, "\n    blob-size:", " # id\n    blob-size:", 1) },
		func(s string) string {
			return strings.Replace(s, "\n    virtual-size:", "\n    # comment\n    virtual-size:", 1)
		},
		func(s string) string { return strings.Replace(s, "\n  ", "\n\n  ", 2) },
		func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") },
		func(s string) string { return strings.TrimSuffix(s, "\n") },
		func(s string) string { return strings.Replace(s, "version: 1", "version: 0", 1) },
		func(s string) string { return strings.Replace(s, "version: 1\n", "", 1) },
		func(s string) string { return "---\n" + s },
		func(s string) string { return s + "...\n" },
		func(s string) string { return s + "zz-unknown: {a: 1}\n" },
		func(s string) string {
			return strings.Replace(s, "    blob-size:", "    aaa-unknown: 1\n    blob-size:", 1)
		},
		// reordered or repeated keys
		func(s string) string {
			return strings.Replace(s, "    virtual-size:", "    blob-size: 7\n    virtual-size:", 1)
		},
		func(s string) string {
			return strings.Replace(s, "    blob-size: 10\n    virtual-size: 4096\n", "    virtual-size: 4096\n    blob-size: 10\n", 1)
		},
		// values in other styles
		func(s string) string { return strings.Replace(s, "os: Debian 12", "os: 'Debian 12'", 1) },
		func(s string) string { return strings.Replace(s, "os: Debian 12", "os: \"Debian\\t12\"", 1) },
		func(s string) string { return strings.Replace(s, "os: Debian 12", "os: Debian\n      12", 1) },
		func(s string) string { return strings.Replace(s, "os: Debian 12", "os: ~", 1) },
		func(s string) string { return strings.Replace(s, "os: Debian 12", "os: |\n      Debian 12", 1) },
		func(s string) string { return strings.Replace(s, "blob-size: 10", "blob-size: 010", 1) },
		func(s string) string { return strings.Replace(s, "blob-size: 10", "blob-size: 0x10", 1) },
		func(s string) string { return strings.Replace(s, "blob-size: 10", "blob-size: !!str 10", 1) },
		func(s string) string {
			return strings.Replace(s, "description: plain text", "description: &a plain text", 1)
		},
		func(s string) string {
			return strings.Replace(s, "\n    description:", "\n    description: &a x\n    os: *a\n    xdescription:", 1)
		},
		func(s string) string { return strings.Replace(s, "  t: ", "  \"t\": ", 1) },
		func(s string) string { return strings.Replace(s, "  t: ", "  ? t\n  : ", 1) },
		// breaking the rules of the package documentation
		func(s string) string {
			return strings.Replace(s, "parent: "+string(idBase), "parent: "+string(idAlpine), 1)
		},
		func(s string) string {
			return strings.Replace(s, "parent: "+string(idBase), "parent: "+string(idOne), 1)
		},
		func(s string) string { return strings.Replace(s, string(blobOne), string(blobBase), 1) },
		func(s string) string { return strings.Replace(s, "  t: "+string(idOne), "  t: "+string(idAlpine), 1) },
		func(s string) string { return strings.Replace(s, "  t: ", "  T: ", 1) },
		func(s string) string { return strings.Replace(s, "  t: ", "  beef: ", 1) },
		func(s string) string { return strings.Replace(s, hexOf(idOne), strings.ToUpper(hexOf(idOne)), 1) },
		func(s string) string { return strings.Replace(s, "blob-size: 10", "blob-size: 0", 1) },
		func(s string) string { return strings.Replace(s, "virtual-size: 4096", "virtual-size: -1", 1) },
		func(s string) string { return strings.Replace(s, "\n    blob:", "\n    blobb:", 1) },
		func(s string) string { return strings.Replace(s, "chunk-size: 1048576", "chunk-size: 1000000", 1) },
		func(s string) string { return strings.Replace(s, "chunk-size: 1048576", "chunk-size: 4096", 1) },
		func(s string) string { return strings.Replace(s, "chunk-size: 1048576", "chunk-size: 134217728", 1) },
		func(s string) string { return strings.Replace(s, "    chunk-size: 1048576\n", "", 1) },
		func(s string) string { return strings.Replace(s, "    chunks: "+string(idAlpine)+"\n", "", 1) },
		func(s string) string {
			return strings.Replace(s, "    chunks: "+string(idAlpine), "    chunks: md5:abc", 1)
		},
		func(s string) string { return strings.Replace(s, "    chunks: "+string(idAlpine), "    chunks: ~", 1) },
		func(s string) string {
			return strings.Replace(s, "    chunks: "+string(idAlpine)+"\n    chunk-size: 1048576\n", "    chunk-size: 1048576\n    chunks: "+string(idAlpine)+"\n", 1)
		},
	}
	for _, base := range []string{plain, string(rich)} {
		for _, edit := range edits {
			seeds = append(seeds, []byte(edit(base)))
		}
	}
	seeds = append(seeds, []byte(strings.Replace(plain, "version: 1\nimages:\n", "version: 1\nimages:\n  "+string(idAlpine)+":\n    blob: "+string(blobAlp)+"\n    blob-size: 1\n    parent: "+string(idAlpine)+"\n    virtual-size: 1\n", 1)))
	return seeds
}

// TestCanonicalStrings: text values and tags of every shape are written
// as yaml.v3 writes them and read back, by the canonical reader, as
// themselves.
func TestCanonicalStrings(t *testing.T) {
	words := []string{"", "a", "16.04", "a: b", "a #b", "a#b", "#x", "- x", "-x", "x\ny", "x\n", "\n", "  lead", "trail ", "yes", "no",
		"on", "null", "Null", "~", "true", "FALSE", "1e3", "0x10", "é ü", "tab\there", strings.Repeat("word ", 40) + "end",
		strings.Repeat("x", 300), "'q'", "\"dq\"", "a\u0085b", "2026-01-01", "@at", "`tick", "%pct", "a,b", "[x]", "{x}", "x]",
		"a'b", "a\"b", "a\\b", "-", "?", ":", "*a", "&a", "!t", "|", ">", "x: ", "x:", "<<", "=", ".inf", ".5", "+1", "Yes",
		"0o17", "1_000", "1:20", "\x7f", "\u00a0x", "x\u2028y", "\ufeffbom", "a\rb", "☃", "😀 emoji", "a\x00b", "\xff", "..."}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune("ab :#-'\"\\\n\t{}[],&*!|>%@`?~.0123456789é\u2028\u0085\ufeff😀")
	for range 300 {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteRune(alphabet[rng.IntN(len(alphabet))])
		}
		words = append(words, b.String())
	}
	for i, w := range words {
		x := New()
		put(t, x, idBase, &Entry{Blob: blobBase, BlobSize: 1, VirtualSize: 1})
		e := &Entry{Blob: blobOne, BlobSize: 1, VirtualSize: 1, Description: w, OS: w}
		if x.Put(idOne, e) != nil {
			continue // not UTF-8
		}
		x.SetTag(w, idOne) // an invalid tag is simply not set
		x.Images[idOne].Extra = []Field{{Key: w + "k", Value: strNode(w)}}
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			out, err := x.Marshal()
			if err != nil {
				t.Fatalf("%q: %v", w, err)
			}
			checkCanonical(t, out)
			c, ok := canon(out)
			if !ok && !yamlBreaks(out) || ok && c.Images[idOne].Description != w {
				t.Fatalf("%q: read back %v", w, ok)
			}
		})
	}
}

// TestCanonicalHostile: a document in the canonical layout that breaks a
// rule is declined by the canonical reader and refused by Parse with the
// general parser's error.
func TestCanonicalHostile(t *testing.T) {
	x := New()
	put(t, x, idBase, &Entry{Blob: blobBase, BlobSize: 1000, VirtualSize: 4096})
	put(t, x, idOne, &Entry{Blob: blobOne, BlobSize: 10, Parent: idBase, VirtualSize: 4096})
	if _, err := x.SetTag("t", idOne); err != nil {
		t.Fatal(err)
	}
	base := string(mustMarshal(t, x))
	if _, ok := canon([]byte(base)); !ok {
		t.Fatal("the base document is not read as canonical")
	}
	for name, doc := range map[string]string{
		"blob not hex":     strings.Replace(base, string(blobOne), "sha256:"+strings.Repeat("g", 64), 1),
		"blob short":       strings.Replace(base, string(blobOne), string(blobOne[:70]), 1),
		"blob path":        strings.Replace(base, string(blobOne), "../../../etc/passwd", 1),
		"id uppercase":     strings.Replace(base, hexOf(idOne), strings.ToUpper(hexOf(idOne)), 1),
		"parent dangling":  strings.Replace(base, "parent: "+string(idBase), "parent: "+string(idAlpine), 1),
		"parent self":      strings.Replace(base, "parent: "+string(idBase), "parent: "+string(idOne), 1),
		"blob shared":      strings.Replace(base, string(blobOne), string(blobBase), 1),
		"tag invalid":      strings.Replace(base, "  t: ", "  sha256:t: ", 1),
		"tag dangling":     strings.Replace(base, "  t: "+string(idOne), "  t: "+string(idAlpine), 1),
		"duplicate image":  strings.Replace(base, "tags:", "  "+string(idBase)+":\n    blob: "+string(blobAlp)+"\n    blob-size: 1\n    virtual-size: 1\ntags:", 1),
		"duplicate tag":    base + "  t: " + string(idOne) + "\n",
		"size overflow":    strings.Replace(base, "blob-size: 10", "blob-size: 9223372036854775808", 1),
		"cluster size odd": strings.Replace(base, "    virtual-size: 4096\n", "    virtual-size: 4096\n    cluster-size: 1000\n", 1),
		"chunk size odd":   strings.Replace(base, "tags:", "    chunks: "+string(idAlpine)+"\n    chunk-size: 100000\ntags:", 1),
		"chunk size small": strings.Replace(base, "tags:", "    chunks: "+string(idAlpine)+"\n    chunk-size: 32768\ntags:", 1),
		"chunks alone":     strings.Replace(base, "tags:", "    chunks: "+string(idAlpine)+"\ntags:", 1),
		"chunk size alone": strings.Replace(base, "tags:", "    chunk-size: 1048576\ntags:", 1),
		"chunks not hex":   strings.Replace(base, "tags:", "    chunks: sha256:"+strings.Repeat("z", 64)+"\n    chunk-size: 1048576\ntags:", 1),
	} {
		t.Run(name, func(t *testing.T) {
			if doc == base {
				t.Fatal("the edit changed nothing")
			}
			if _, ok := canon([]byte(doc)); ok {
				t.Fatalf("the canonical reader accepts:\n%s", doc)
			}
			_, err := Parse([]byte(doc))
			_, gerr := parseGeneral([]byte(doc))
			if err == nil || gerr == nil || err.Error() != gerr.Error() {
				t.Fatalf("Parse: %v, general parser: %v", err, gerr)
			}
		})
	}
	// A loop over two images.
	loop := "version: 1\nimages:\n" +
		"  " + string(idAlpine) + ":\n    blob: " + string(blobAlp) + "\n    blob-size: 1\n    parent: " + string(idOne) + "\n    virtual-size: 1\n" +
		"  " + string(idOne) + ":\n    blob: " + string(blobOne) + "\n    blob-size: 1\n    parent: " + string(idAlpine) + "\n    virtual-size: 1\n" +
		"tags: {}\n"
	if _, ok := canon([]byte(loop)); ok {
		t.Fatal("the canonical reader accepts a parent loop")
	}
	if _, err := Parse([]byte(loop)); err == nil || !strings.Contains(err.Error(), "parent loop") {
		t.Fatalf("Parse of a loop: %v", err)
	}
}
