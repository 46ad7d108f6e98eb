package index

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

func TestParseSpecExample(t *testing.T) {
	x, err := Parse(readTestdata(t, "spec-v1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if x.Version != 1 || len(x.Images) != 2 || len(x.Tags) != 2 {
		t.Fatalf("got version %d, %d images, %d tags", x.Version, len(x.Images), len(x.Tags))
	}
	one := x.Images[idOne]
	want := Entry{
		Blob: blobOne, BlobSize: 14819328, Parent: idBase, VirtualSize: 2361393152,
		ClusterSize: 65536, Compression: qcow2.CompressionZlib,
		Created:     time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC),
		Description: "OpenNebula Compatible Ubuntu 16.04", OS: "Ubuntu 16.04",
		Chunks: blobAlp, ChunkSize: 1 << 20,
	}
	got := *one
	got.Cangafile = nil
	if !got.Created.Equal(want.Created) {
		t.Errorf("created = %v", got.Created)
	}
	got.Created = want.Created
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entry\n got %+v\nwant %+v", got, want)
	}
	if one.Cangafile == nil || one.Cangafile.Kind != yaml.MappingNode {
		t.Fatalf("cangafile = %#v", one.Cangafile)
	}
	var cf struct {
		Parent string
		Tasks  []map[string]any
	}
	if err := one.Cangafile.Decode(&cf); err != nil {
		t.Fatal(err)
	}
	if cf.Parent != "ubuntu:16.04" || len(cf.Tasks) != 4 || cf.Tasks[1]["run"] != "dpkg -i /context/one-context*deb\napt-get clean\n" {
		t.Errorf("cangafile decoded to %+v", cf)
	}
	base := x.Images[idBase]
	// +01:00 is read and kept as UTC; an unquoted 16.04 is still text.
	if want := time.Date(2026, 11, 24, 8, 30, 15, 250e6, time.UTC); !base.Created.Equal(want) || base.Created.Location() != time.UTC {
		t.Errorf("base created = %v", base.Created)
	}
	if base.OS != "16.04" || base.Parent != "" || base.Compression != qcow2.CompressionZstd {
		t.Errorf("base = %+v", base)
	}
	if x.Tags["ubuntu:16.04"] != idBase || x.Tags["ubuntu/one:16.04"] != idOne {
		t.Errorf("tags = %v", x.Tags)
	}
	checkRoundTrip(t, x)
}

// checkRoundTrip: Marshal is stable and Parse gives the same index back.
func checkRoundTrip(t *testing.T, x *Index) []byte {
	t.Helper()
	b1 := mustMarshal(t, x)
	x2, err := Parse(b1)
	if err != nil {
		t.Fatalf("Parse(Marshal(x)): %v\n%s", err, b1)
	}
	sameIndex(t, x, x2)
	b2 := mustMarshal(t, x2)
	if !bytes.Equal(b1, b2) {
		t.Fatalf("Marshal not stable:\n%s\n---\n%s", b1, b2)
	}
	if x2.Version != 1 {
		t.Fatalf("Marshal wrote version %d", x2.Version)
	}
	return b1
}

func TestParseCangallo(t *testing.T) {
	doc := readTestdata(t, "cangallo-v0.yaml")
	digitsID := digest.Digest("sha256:1234567890123456789012345678901234567890123456789012345678901234")
	variants := map[string]string{
		"as written by Ruby": string(doc),
		"no version key":     strings.Replace(string(doc), "version: 0\n", "", 1),
		// Keys that YAML reads as numbers when unquoted must stay text.
		"unquoted numeric key": strings.ReplaceAll(string(doc), "'"+hexOf(digitsID)+"'", hexOf(digitsID)),
		// Psych anchors a string object it emits twice.
		"anchors and aliases": strings.NewReplacer(
			"  8266f466e21f8d4028f4a992ee430eae4ba00a08054a215dd4e24cdc5df31d91:\n", "  &1 8266f466e21f8d4028f4a992ee430eae4ba00a08054a215dd4e24cdc5df31d91:\n",
			"ubuntu:one:16.04: 8266f466e21f8d4028f4a992ee430eae4ba00a08054a215dd4e24cdc5df31d91", "ubuntu:one:16.04: *1",
		).Replace(string(doc)),
	}
	for name, doc := range variants {
		t.Run(name, func(t *testing.T) {
			x := mustParse(t, doc)
			if x.Version != 0 || len(x.Images) != 3 || len(x.Tags) != 4 {
				t.Fatalf("version %d, %d images, %d tags", x.Version, len(x.Images), len(x.Tags))
			}
			base, one, digits := x.Images[idBase], x.Images[idOne], x.Images[digitsID]
			if base == nil || one == nil || digits == nil {
				t.Fatalf("images = %v", x.IDs())
			}
			for id, e := range x.Images {
				if e.Blob != "" || e.Legacy == nil || e.Legacy.File != hexOf(id)+".qcow2" || LegacyFileName(id) != e.Legacy.File {
					t.Errorf("%s: blob %q legacy %+v", id, e.Blob, e.Legacy)
				}
			}
			if want := time.Date(2016, 3, 13, 15, 52, 28, 123456789, time.UTC); !base.Created.Equal(want) {
				t.Errorf("base created %v, want %v", base.Created, want)
			}
			if want := time.Date(2016, 3, 14, 9, 0, 0, 0, time.UTC); !digits.Created.Equal(want) {
				t.Errorf("digits created %v, want %v", digits.Created, want)
			}
			if base.VirtualSize != 2361393152 || base.Legacy.ActualSize != 302292992 || base.Legacy.Format != "qcow2" {
				t.Errorf("base = %+v %+v", base, base.Legacy)
			}
			// file-sha256 is the input file's digest: kept aside, never a blob digest.
			if base.Legacy.FileSHA256 != "6eb828d49c473fb258a6926ee855d1ae0220f32378908d027f31108cf34a9da5" {
				t.Errorf("file-sha256 = %q", base.Legacy.FileSHA256)
			}
			if one.Parent != idBase || one.Description != "OpenNebula Compatible Ubuntu 16.04" || one.OS != "Ubuntu 16.04" {
				t.Errorf("one = %+v", one)
			}
			if one.Cangafile == nil || !strings.Contains(yamlText(t, one.Cangafile), "apt-get remove -y cloud-init") {
				t.Errorf("cangafile = %s", yamlText(t, one.Cangafile))
			}
			if digits.Description != "" || digits.OS != "" {
				t.Errorf("null description/os = %q %q", digits.Description, digits.OS)
			}
			for tag, want := range map[string]digest.Digest{"ubuntu:16.04": idBase, "ubuntu/one:16.04": idOne, "ubuntu:one:16.04": idOne, "test_image": digitsID} {
				if x.Tags[tag] != want {
					t.Errorf("tag %s = %s, want %s", tag, x.Tags[tag], want)
				}
			}
			if err := x.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			chain, err := x.Chain(idOne)
			if err != nil || len(chain) != 2 || chain[1] != idBase {
				t.Errorf("chain = %v, %v", chain, err)
			}
			// A Cangallo index is read-only: its entries have no blob digest.
			_, err = x.Marshal()
			testkit.WantErr(t, err, []error{ErrInvalid}, "no blob digest")
		})
	}
}

func TestParseCangalloTimes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"2016-03-13 16:52:28.123456789 +01:00", "2016-03-13T15:52:28.123456789Z"},
		{"2016-03-13 16:52:28.123456789 Z", "2016-03-13T16:52:28.123456789Z"},
		{"2016-03-13 16:52:28 -05:00", "2016-03-13T21:52:28Z"},
		{"'2016-03-13 16:52:28 +0100'", "2016-03-13T15:52:28Z"},
		{"2016-03-13T16:52:28Z", "2016-03-13T16:52:28Z"},
		{"2016-03-13 16:52:28", "2016-03-13T16:52:28Z"},
		{"2016-03-13", "2016-03-13T00:00:00Z"},
	} {
		doc := fmt.Sprintf("version: 0\nimages:\n  %s:\n    creation-time: %s\ntags: {}\n", hexOf(idBase), tc.in)
		x := mustParse(t, doc)
		if got := x.Images[idBase].Created.Format(time.RFC3339Nano); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseEmptyAndNull(t *testing.T) {
	for _, doc := range []string{
		"version: 1\nimages: {}\ntags: {}\n",
		"version: 1\nimages:\ntags:\n",
		"version: 1\n",
		"version: 0\nimages: {}\ntags: {}\n",
		"---\nimages: {}\ntags: {}\n", // Cangallo's empty index, version lost
	} {
		x := mustParse(t, doc)
		if len(x.Images) != 0 || len(x.Tags) != 0 {
			t.Errorf("%q: not empty", doc)
		}
		if got := string(mustMarshal(t, x)); got != "version: 1\nimages: {}\ntags: {}\n" {
			t.Errorf("%q: marshals to %q", doc, got)
		}
	}
}

// v1 builds a version 1 document from entry lines and tag lines, with the
// base image always present.
func v1(entries, tags string) string {
	return "version: 1\nimages:\n" +
		"  " + string(idBase) + ":\n    blob: " + string(blobBase) + "\n    blob-size: 1000\n    virtual-size: 4096\n" +
		entries + "tags:\n" + tags
}

// one is an entry for idOne with the given extra lines.
func one(lines string) string {
	return "  " + string(idOne) + ":\n    blob: " + string(blobOne) + "\n    blob-size: 10\n    virtual-size: 4096\n" + lines
}

func TestParseErrors(t *testing.T) {
	long := strings.Repeat("a", 129)
	bomb := "version: 1\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
	for i := 1; i < 9; i++ {
		bomb += fmt.Sprintf("x%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	bomb += "images: {}\ntags: {}\n"

	tests := []struct {
		name string
		doc  string
		is   []error
		subs []string
	}{
		// the document
		{"empty", "", nil, []string{"empty document"}},
		{"only comments", "# nothing\n", nil, []string{"empty document"}},
		{"scalar", "hello\n", nil, []string{"top level must be a mapping"}},
		{"list", "- a\n- b\n", nil, []string{"top level must be a mapping"}},
		{"two documents", "version: 1\n---\nversion: 1\n", nil, []string{"line 2", "more than one YAML document"}},
		{"syntax", "version: 1\nimages: {\n", nil, []string{"yaml:"}},
		{"tab indent", "version: 1\nimages:\n\tfoo: bar\n", nil, []string{"yaml:"}},
		{"garbage bytes", "\x00\x01\x02\xff\xfe", nil, []string{"index:"}},
		{"invalid utf-8", "version: 1\nimages: {}\ntags: {}\nx: \"\xff\"\n", nil, []string{"index:"}},
		{"unknown anchor", "version: 1\nimages: *nope\n", nil, []string{"unknown anchor"}},
		{"alias bomb", bomb, nil, []string{"more than"}},
		{"too deep", "version: 1\nx: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n", nil, []string{"index:"}},
		{"too large", "version: 1\n#" + strings.Repeat("x", MaxIndexSize) + "\n", nil, []string{"larger than"}},
		{"duplicate top key", "version: 1\nversion: 1\n", nil, []string{"line 2", "duplicate key \"version\""}},
		{"complex key", "version: 1\n? [a]\n: b\n", nil, []string{"mapping keys must be scalars"}},

		// version
		{"version 2", "version: 2\nimages: {}\ntags: {}\n", []error{ErrUnsupportedVersion}, []string{"unsupported index version \"2\""}},
		{"version -1", "version: -1\n", []error{ErrUnsupportedVersion}, []string{"unsupported index version"}},
		{"version 1.0", "version: 1.0\n", []error{ErrUnsupportedVersion}, []string{"unsupported index version \"1.0\""}},
		{"version string", "version: \"1\"\n", []error{ErrUnsupportedVersion}, []string{"not a string"}},
		{"version list", "version: [1]\n", nil, []string{"version: want an integer"}},
		{"missing version v1 shape", "images:\n  " + string(idBase) + ":\n    blob: " + string(blobBase) + "\n", nil, []string{"missing version"}},
		{"missing version empty mapping", "{}\n", nil, []string{"missing version"}},
		{"missing version extra keys", "images: {}\nfoo: 1\n", nil, []string{"missing version"}},

		// image keys
		{"key path-like", "version: 1\nimages:\n  ../x:\n    blob: " + string(blobBase) + "\n", []error{ErrInvalidID}, []string{"line 3", `images["../x"]`, "invalid image ID"}},
		{"key path in sha256", "version: 1\nimages:\n  sha256:../../etc/passwd: {}\n", []error{ErrInvalidID}, []string{`images["sha256:../../etc/passwd"]`}},
		{"key uppercase", "version: 1\nimages:\n  " + strings.ToUpper(string(idBase)) + ": {}\n", []error{ErrInvalidID}, []string{"invalid image ID"}},
		{"key uppercase hex", "version: 1\nimages:\n  sha256:" + strings.ToUpper(hexOf(idBase)) + ": {}\n", []error{ErrInvalidID}, []string{"lowercase"}},
		{"key short", "version: 1\nimages:\n  " + string(idBase[:70]) + ": {}\n", []error{ErrInvalidID}, []string{"have 63"}},
		{"key long", "version: 1\nimages:\n  " + string(idBase) + "0: {}\n", []error{ErrInvalidID}, []string{"have 65"}},
		{"key sha512", "version: 1\nimages:\n  sha512:" + hexOf(idBase) + hexOf(idBase) + ": {}\n", []error{ErrInvalidID}, []string{"algorithm \"sha512\" not supported"}},
		{"key empty", "version: 1\nimages:\n  \"\": {}\n", []error{ErrInvalidID}, []string{"empty"}},
		{"key bare hex in v1", "version: 1\nimages:\n  " + hexOf(idBase) + ": {}\n", []error{ErrInvalidID}, []string{"missing sha256: prefix"}},
		{"key prefixed in v0", "version: 0\nimages:\n  " + string(idBase) + ": {}\n", []error{ErrInvalidID}, []string{"Cangallo index"}},
		{"key sha1 in v0", "version: 0\nimages:\n  " + hexOf(idBase)[:40] + ": {}\n", []error{ErrInvalidID}, []string{"SHA-1"}},
		{"duplicate image", "version: 1\nimages:\n" + one("") + one("") + "", nil, []string{"duplicate key"}},
		{"images is a list", "version: 1\nimages: [a]\n", nil, []string{"images: want a mapping"}},
		{"entry is a scalar", "version: 1\nimages:\n  " + string(idBase) + ": yes\n", nil, []string{"want a mapping"}},
		{"entry is null", "version: 1\nimages:\n  " + string(idBase) + ":\n", nil, []string{"want a mapping"}},

		// entry fields
		{"blob missing", "version: 1\nimages:\n  " + string(idBase) + ":\n    blob-size: 1\n    virtual-size: 1\n", nil, []string{"line 3", "missing blob"}},
		{"blob-size missing", "version: 1\nimages:\n  " + string(idBase) + ":\n    blob: " + string(blobBase) + "\n    virtual-size: 1\n", nil, []string{"missing blob-size"}},
		{"virtual-size missing", "version: 1\nimages:\n  " + string(idBase) + ":\n    blob: " + string(blobBase) + "\n    blob-size: 1\n", nil, []string{"missing virtual-size"}},
		{"blob path-like", v1(rep(one(""), string(blobOne), "../../../etc/passwd"), ""), []error{ErrInvalidID}, []string{".blob", "invalid blob digest"}},
		{"blob bare hex", v1(rep(one(""), string(blobOne), hexOf(blobOne)), ""), []error{ErrInvalidID}, []string{"missing sha256: prefix"}},
		{"blob is a list", v1(rep(one(""), string(blobOne), "[a]"), ""), []error{ErrInvalidID}, []string{"want a blob digest"}},
		{"blob shared", v1(rep(one(""), string(blobOne), string(blobBase)), ""), nil, []string{"already belongs to image"}},
		{"blob-size zero", v1(rep(one(""), "blob-size: 10", "blob-size: 0"), ""), nil, []string{"blob-size: must be positive"}},
		{"blob-size negative", v1(rep(one(""), "blob-size: 10", "blob-size: -10"), ""), nil, []string{"non-negative"}},
		{"blob-size quoted", v1(rep(one(""), "blob-size: 10", "blob-size: \"10\""), ""), nil, []string{"want a decimal integer"}},
		{"blob-size float", v1(rep(one(""), "blob-size: 10", "blob-size: 1.5"), ""), nil, []string{"want a decimal integer"}},
		{"blob-size hex", v1(rep(one(""), "blob-size: 10", "blob-size: 0x10"), ""), nil, []string{"non-negative decimal"}},
		{"blob-size overflow", v1(rep(one(""), "blob-size: 10", "blob-size: 99999999999999999999"), ""), nil, []string{"want a decimal integer"}},
		{"blob-size int64 overflow", v1(rep(one(""), "blob-size: 10", "blob-size: 9223372036854775808"), ""), nil, []string{"out of range"}},
		{"virtual-size list", v1(rep(one(""), "virtual-size: 4096", "virtual-size: [1]"), ""), nil, []string{"virtual-size: want a decimal integer"}},
		{"cluster-size odd", v1(one("    cluster-size: 1000\n"), ""), nil, []string{"cluster-size: 1000: want a power of two"}},
		{"cluster-size huge", v1(one("    cluster-size: 4194304\n"), ""), nil, []string{"want a power of two"}},
		{"compression gzip", v1(one("    compression: gzip\n"), ""), nil, []string{"\"gzip\": want zlib, zstd or none"}},
		{"created garbage", v1(one("    created: yesterday\n"), ""), nil, []string{"created: \"yesterday\": want an RFC 3339 time"}},
		{"created ruby form in v1", v1(one("    created: 2016-03-13 16:52:28 +01:00\n"), ""), nil, []string{"want an RFC 3339 time"}},
		{"description mapping", v1(one("    description: {a: b}\n"), ""), nil, []string{"description: want a string"}},
		{"cangafile list", v1(one("    cangafile: [a]\n"), ""), nil, []string{"cangafile: want a mapping"}},
		{"cangafile scalar", v1(one("    cangafile: hello\n"), ""), nil, []string{"cangafile: want a mapping"}},
		{"cangafile duplicate key", v1(one("    cangafile:\n      a: 1\n      a: 2\n"), ""), nil, []string{"duplicate key \"a\""}},
		{"duplicate entry key", v1(one("    os: a\n    os: b\n"), ""), nil, []string{"duplicate key \"os\""}},

		// parents
		{"parent path-like", v1(one("    parent: ../x\n"), ""), []error{ErrInvalidID}, []string{".parent", "invalid image ID \"../x\""}},
		{"parent bare hex", v1(one("    parent: "+hexOf(idBase)+"\n"), ""), []error{ErrInvalidID}, []string{"missing sha256: prefix"}},
		{"parent list", v1(one("    parent: [a]\n"), ""), []error{ErrInvalidID}, []string{"want an image ID"}},
		{"parent dangling", v1(one("    parent: "+string(idAlpine)+"\n"), ""), nil, []string{"dangling parent", string(idAlpine)}},
		{"parent self", v1(one("    parent: "+string(idOne)+"\n"), ""), nil, []string{"parent loop"}},
		{"parent loop", "version: 1\nimages:\n" +
			"  " + string(idBase) + ":\n    blob: " + string(blobBase) + "\n    blob-size: 1\n    virtual-size: 1\n    parent: " + string(idOne) + "\n" +
			one("    parent: "+string(idBase)+"\n"), nil, []string{"parent loop"}},
		{"v0 parent prefixed", "version: 0\nimages:\n  " + hexOf(idBase) + ": {}\n  " + hexOf(idOne) + ":\n    parent: " + string(idBase) + "\n",
			[]error{ErrInvalidID}, []string{"Cangallo index"}},
		{"v0 sha256 mismatch", "version: 0\nimages:\n  " + hexOf(idBase) + ":\n    sha256: " + hexOf(idOne) + "\n", []error{ErrInvalidID}, []string{"does not match the image key"}},
		{"v0 creation-time garbage", "version: 0\nimages:\n  " + hexOf(idBase) + ":\n    creation-time: soon\n", nil, []string{"creation-time: \"soon\": not a time"}},
		{"v0 virtual-size text", "version: 0\nimages:\n  " + hexOf(idBase) + ":\n    virtual-size: big\n", nil, []string{"virtual-size"}},

		// tags
		{"tag dangling", v1("", "  t: "+string(idOne)+"\n"), nil, []string{`tags["t"]`, "dangling tag"}},
		{"tag target path-like", v1("", "  t: ../x\n"), []error{ErrInvalidID}, []string{`tags["t"]`, "invalid image ID"}},
		{"tag target prefix", v1("", "  t: "+string(idBase[:20])+"\n"), []error{ErrInvalidID}, nil},
		{"tag target null", v1("", "  t:\n"), []error{ErrInvalidID}, []string{"want an image ID"}},
		{"tag target list", v1("", "  t: [a]\n"), []error{ErrInvalidID}, []string{"want an image ID"}},
		{"tag uppercase", v1("", "  Ubuntu: "+string(idBase)+"\n"), []error{ErrInvalidTag}, []string{"uppercase"}},
		{"tag all hex", v1("", "  beef: "+string(idBase)+"\n"), []error{ErrInvalidTag}, []string{"image ID prefix"}},
		{"tag like id", v1("", "  sha256:beef: "+string(idBase)+"\n"), []error{ErrInvalidTag}, []string{"sha256:"}},
		{"tag leading dash", v1("", "  -x: "+string(idBase)+"\n"), []error{ErrInvalidTag}, []string{"must start"}},
		{"tag space", v1("", "  \"a b\": "+string(idBase)+"\n"), []error{ErrInvalidTag}, []string{"not allowed"}},
		{"tag too long", v1("", "  "+long+": "+string(idBase)+"\n"), []error{ErrInvalidTag}, []string{"longer than 128"}},
		{"tag duplicate", v1("", "  t: "+string(idBase)+"\n  t: "+string(idBase)+"\n"), nil, []string{"duplicate key \"t\""}},
		{"tags a list", v1("", "  - a\n"), nil, []string{"tags: want a mapping"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x, err := Parse([]byte(tc.doc))
			if x != nil {
				t.Errorf("got an index with the error")
			}
			testkit.WantErr(t, err, append([]error{ErrInvalid}, tc.is...), tc.subs...)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("error %T is not a *ParseError", err)
			}
			if !strings.HasPrefix(err.Error(), "index: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// rep replaces old by new in s once, to keep the table short.
func rep(s, old, new string) string {
	if !strings.Contains(s, old) {
		panic("rep: " + old + " not in " + s)
	}
	return strings.Replace(s, old, new, 1)
}

func TestRoundTrip(t *testing.T) {
	cf := func(src string) *yaml.Node {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		return doc.Content[0]
	}
	created := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		build func(x *Index)
	}{
		{"empty", func(x *Index) {}},
		{"base only", func(x *Index) {
			put(t, x, idBase, &Entry{Blob: blobBase, BlobSize: 1, VirtualSize: 0})
		}},
		{"chain with tags", func(x *Index) {
			put(t, x, idBase, &Entry{Blob: blobBase, BlobSize: 302292992, VirtualSize: 2361393152, ClusterSize: 65536,
				Compression: qcow2.CompressionZstd, Created: created, OS: "Ubuntu 16.04"})
			put(t, x, idOne, &Entry{Blob: blobOne, BlobSize: 14819328, Parent: idBase, VirtualSize: 2361393152,
				ClusterSize: 2 << 20, Compression: qcow2.CompressionNone, Created: created.Add(1500 * time.Millisecond),
				Description: "OpenNebula Compatible Ubuntu 16.04",
				Cangafile:   cf("parent: ubuntu:16.04\ntasks:\n  - run: |\n      a\n      b\n  - change: {file: /x, regexp: '^#?P.*', text: 'P no'}\n")})
			put(t, x, idAlpine, &Entry{Blob: blobAlp, BlobSize: 5, VirtualSize: 512, Parent: idOne})
			for tag, id := range map[string]digest.Digest{"ubuntu:16.04": idBase, "ubuntu/one:16.04": idOne, "1.0": idOne, "null": idAlpine, "yes": idAlpine, "a": idBase} {
				if _, err := x.SetTag(tag, id); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"awkward strings", func(x *Index) {
			put(t, x, idBase, &Entry{Blob: blobBase, BlobSize: 1, VirtualSize: 1,
				Description: "line one\nline two\n", OS: "123"})
			put(t, x, idOne, &Entry{Blob: blobOne, BlobSize: 1, VirtualSize: 1,
				Description: "  # not a comment: really  ", OS: "true"})
			put(t, x, idAlpine, &Entry{Blob: blobAlp, BlobSize: 1, VirtualSize: 1,
				Description: "tab\there, nul \x00, bell \a, ünïcødé ☃, quote ' \" \\", OS: "~"})
		}},
		{"unknown keys", func(x *Index) {
			put(t, x, idBase, &Entry{Blob: blobBase, BlobSize: 1, VirtualSize: 1,
				Extra: []Field{{"zeta", cf("[1, 2]")}, {"labels", cf("{b: 2, a: 1}")}}})
			x.Extra = []Field{{"signed-by", cf("someone")}, {"annotations", cf("x: y")}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := New()
			tc.build(x)
			b := checkRoundTrip(t, x)
			if !bytes.HasPrefix(b, []byte("version: 1\nimages:")) {
				t.Errorf("output starts %q", b[:min(len(b), 30)])
			}
		})
	}
}

func put(t testing.TB, x *Index, id digest.Digest, e *Entry) {
	t.Helper()
	if err := x.Put(id, e); err != nil {
		t.Fatalf("Put %s: %v", id, err)
	}
}

// TestMarshalGolden pins the exact bytes: they are what gets signed.
func TestMarshalGolden(t *testing.T) {
	x := New()
	put(t, x, idBase, &Entry{Blob: blobBase, BlobSize: 302292992, VirtualSize: 2361393152,
		ClusterSize: 65536, Compression: qcow2.CompressionZstd, Created: time.Date(2026, 11, 24, 9, 30, 0, 0, time.UTC)})
	put(t, x, idOne, &Entry{Blob: blobOne, BlobSize: 14819328, Parent: idBase, VirtualSize: 2361393152,
		ClusterSize: 65536, Compression: qcow2.CompressionZlib, Created: time.Date(2026, 11, 25, 18, 0, 0, 0, time.FixedZone("CET", 3600)),
		Description: "OpenNebula Compatible Ubuntu 16.04", OS: "16.04",
		Cangafile: &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "parent"}, {Kind: yaml.ScalarNode, Value: "ubuntu:16.04"},
		}}})
	for _, tag := range []string{"ubuntu:16.04", "latest"} {
		if _, err := x.SetTag(tag, idBase); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := x.SetTag("ubuntu/one:16.04", idOne); err != nil {
		t.Fatal(err)
	}
	want := `version: 1
images:
  sha256:8266f466e21f8d4028f4a992ee430eae4ba00a08054a215dd4e24cdc5df31d91:
    blob: sha256:f19e1cf05a6eb47bf5edc8fa36956780356fe7cc9761a5126a7154185708f8a5
    blob-size: 14819328
    parent: sha256:94a992fe0bff6bb624513752584ead467f55bb0e17beecc59b116d47f9a9de6b
    virtual-size: 2361393152
    cluster-size: 65536
    compression: zlib
    created: 2026-11-25T17:00:00Z
    description: OpenNebula Compatible Ubuntu 16.04
    os: "16.04"
    cangafile:
      parent: ubuntu:16.04
  sha256:94a992fe0bff6bb624513752584ead467f55bb0e17beecc59b116d47f9a9de6b:
    blob: sha256:564d547cf45d7498b9ebb783c28da33cd8a045c0475bb655ba1370c21aa234c1
    blob-size: 302292992
    virtual-size: 2361393152
    cluster-size: 65536
    compression: zstd
    created: 2026-11-24T09:30:00Z
tags:
  latest: sha256:94a992fe0bff6bb624513752584ead467f55bb0e17beecc59b116d47f9a9de6b
  ubuntu/one:16.04: sha256:8266f466e21f8d4028f4a992ee430eae4ba00a08054a215dd4e24cdc5df31d91
  ubuntu:16.04: sha256:94a992fe0bff6bb624513752584ead467f55bb0e17beecc59b116d47f9a9de6b
`
	got := string(checkRoundTrip(t, x))
	if got != want {
		t.Errorf("Marshal:\n%s\nwant:\n%s", got, want)
	}
	// Same index built in another order: same bytes.
	y := New()
	put(t, y, idBase, x.Images[idBase])
	put(t, y, idOne, x.Images[idOne])
	for _, tag := range []string{"ubuntu/one:16.04", "latest", "ubuntu:16.04"} {
		if _, err := y.SetTag(tag, x.Tags[tag]); err != nil {
			t.Fatal(err)
		}
	}
	if string(mustMarshal(t, y)) != want {
		t.Error("Marshal depends on insertion order")
	}
	// And the hand-written SPEC example reads back to canonical bytes.
	spec := mustParse(t, string(readTestdata(t, "spec-v1.yaml")))
	b := mustMarshal(t, spec)
	if !bytes.Equal(b, mustMarshal(t, mustParse(t, string(b)))) {
		t.Error("SPEC example not stable")
	}
}
