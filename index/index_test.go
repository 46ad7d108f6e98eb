package index

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// tree builds this index (letters are image names, blobs follow):
//
//	a ── b ── d
//	│    └─── e ── f
//	└─── c
//	g
func tree(t *testing.T) (*Index, map[string]digest.Digest) {
	t.Helper()
	x := New()
	ids := map[string]digest.Digest{}
	parents := []struct{ name, parent string }{{"a", ""}, {"b", "a"}, {"c", "a"}, {"d", "b"}, {"e", "b"}, {"f", "e"}, {"g", ""}}
	for i, p := range parents {
		// IDs in reverse name order, so sorted ID order is not name order.
		ids[p.name] = id(strings.Repeat(string(rune('9'-i)), 8), 'a')
		put(t, x, ids[p.name], &Entry{Blob: id(strings.Repeat(string(rune('0'+i)), 8), 'b'), BlobSize: 1, VirtualSize: 1, Parent: ids[p.parent]})
	}
	return x, ids
}

func names(ids map[string]digest.Digest, list []digest.Digest) string {
	var out []string
	for _, l := range list {
		for n, id := range ids {
			if id == l {
				out = append(out, n)
			}
		}
	}
	return strings.Join(out, " ")
}

func TestGraph(t *testing.T) {
	x, ids := tree(t)
	if got := names(ids, x.Children(ids["b"])); got != "e d" {
		t.Errorf("Children(b) = %s", got)
	}
	if got := x.Children(ids["g"]); len(got) != 0 {
		t.Errorf("Children(g) = %v", got)
	}
	// Leaves first: every image comes before its parent.
	desc := x.Descendants(ids["a"])
	if got := names(ids, desc); got != "c f e d b" {
		t.Errorf("Descendants(a) = %s", got)
	}
	pos := map[digest.Digest]int{}
	for i, d := range desc {
		pos[d] = i
	}
	for _, d := range desc {
		if p := x.Images[d].Parent; p != ids["a"] && pos[p] < pos[d] {
			t.Errorf("%s listed after its parent", names(ids, []digest.Digest{d}))
		}
	}
	chain, err := x.Chain(ids["f"])
	if err != nil || names(ids, chain) != "f e b a" {
		t.Errorf("Chain(f) = %s, %v", names(ids, chain), err)
	}
	if chain, err := x.Chain(ids["g"]); err != nil || len(chain) != 1 {
		t.Errorf("Chain(g) = %v, %v", chain, err)
	}
	_, err = x.Chain(id("dead", '0'))
	testkit.WantErr(t, err, []error{ErrNotFound}, "no image")

	// Chain must stop on a loop or hole made behind the index's back.
	x.Images[ids["a"]].Parent = ids["f"]
	_, err = x.Chain(ids["f"])
	testkit.WantErr(t, err, []error{ErrInvalid}, "parent loop")
	testkit.WantErr(t, x.Validate(), []error{ErrInvalid}, "parent loop")
	_, err = x.Marshal()
	testkit.WantErr(t, err, []error{ErrInvalid}, "parent loop")
	if d := x.Descendants(ids["a"]); len(d) != 5 {
		t.Errorf("Descendants in a loop = %v", d)
	}
	x.Images[ids["a"]].Parent = id("dead", '0')
	_, err = x.Chain(ids["f"])
	testkit.WantErr(t, err, []error{ErrInvalid}, "dangling parent")
	testkit.WantErr(t, x.Validate(), []error{ErrInvalid}, "dangling parent")
}

func TestPut(t *testing.T) {
	x, ids := tree(t)
	okEntry := func() *Entry { return &Entry{Blob: id("fe", 'c'), BlobSize: 1, VirtualSize: 1} }
	tests := []struct {
		name  string
		id    digest.Digest
		entry func() *Entry
		is    error
		sub   string
	}{
		{"bad id", "sha256:../x", okEntry, ErrInvalidID, "invalid image ID"},
		{"bare hex id", digest.Digest(hexOf(idBase)), okEntry, ErrInvalidID, "missing sha256: prefix"},
		{"nil entry", idBase, func() *Entry { return nil }, ErrInvalid, "nil entry"},
		{"no blob", idBase, func() *Entry { e := okEntry(); e.Blob = ""; return e }, ErrInvalid, "no blob digest"},
		{"bad blob", idBase, func() *Entry { e := okEntry(); e.Blob = "sha256:x"; return e }, ErrInvalid, "blob"},
		{"zero blob-size", idBase, func() *Entry { e := okEntry(); e.BlobSize = 0; return e }, ErrInvalid, "must be positive"},
		{"negative virtual-size", idBase, func() *Entry { e := okEntry(); e.VirtualSize = -1; return e }, ErrInvalid, "negative"},
		{"bad cluster-size", idBase, func() *Entry { e := okEntry(); e.ClusterSize = 3; return e }, ErrInvalid, "power of two"},
		{"bad compression", idBase, func() *Entry { e := okEntry(); e.Compression = "lz4"; return e }, ErrInvalid, "want zlib, zstd or none"},
		{"bad parent", idBase, func() *Entry { e := okEntry(); e.Parent = "../x"; return e }, ErrInvalid, "parent"},
		{"missing parent", idBase, func() *Entry { e := okEntry(); e.Parent = idOne; return e }, ErrNotFound, "not in the index"},
		{"own parent", idBase, func() *Entry { e := okEntry(); e.Parent = idBase; return e }, ErrInvalid, "own parent"},
		{"replace into a loop", ids["b"], func() *Entry { e := okEntry(); e.Parent = ids["f"]; return e }, ErrInvalid, "parent loop"},
		{"shared blob", idBase, func() *Entry { e := okEntry(); e.Blob = x.Images[ids["c"]].Blob; return e }, ErrInvalid, "already belongs"},
		{"cangafile list", idBase, func() *Entry {
			e := okEntry()
			e.Cangafile = &yaml.Node{Kind: yaml.SequenceNode}
			return e
		}, ErrInvalid, "cangafile must be a mapping"},
		{"extra shadows", idBase, func() *Entry {
			e := okEntry()
			e.Extra = []Field{{"blob", strNode("x")}}
			return e
		}, ErrInvalid, "shadows a known key"},
		{"extra duplicate", idBase, func() *Entry {
			e := okEntry()
			e.Extra = []Field{{"x", strNode("x")}, {"x", strNode("y")}}
			return e
		}, ErrInvalid, "duplicate key"},
		{"extra nil", idBase, func() *Entry {
			e := okEntry()
			e.Extra = []Field{{"x", nil}}
			return e
		}, ErrInvalid, "no value"},
		{"invalid utf-8", idBase, func() *Entry { e := okEntry(); e.Description = "\xff"; return e }, ErrInvalid, "UTF-8"},
	}
	before := mustMarshal(t, x)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			testkit.WantErr(t, x.Put(tc.id, tc.entry()), []error{tc.is}, tc.sub)
			if string(mustMarshal(t, x)) != string(before) {
				t.Fatal("a refused Put changed the index")
			}
		})
	}

	// Replacing an entry with a legal one, keeping the blob, works.
	e := *x.Images[ids["d"]]
	e.Description = "renamed"
	put(t, x, ids["d"], &e)
	if x.Images[ids["d"]].Description != "renamed" {
		t.Error("replace lost")
	}
	// Put copies: later edits of the caller's entry do not leak in.
	e.Description = "changed later"
	if x.Images[ids["d"]].Description != "renamed" {
		t.Error("Put kept the caller's pointer")
	}
	// A Cangafile given as a whole document is stored as its mapping.
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("# comment\nparent: &p ubuntu\nalso: *p\n"), &doc); err != nil {
		t.Fatal(err)
	}
	put(t, x, idBase, &Entry{Blob: id("fe", 'c'), BlobSize: 1, VirtualSize: 1, Cangafile: &doc})
	if got := yamlText(t, x.Images[idBase].Cangafile); got != "parent: ubuntu\nalso: ubuntu\n" {
		t.Errorf("cangafile stored as %q", got)
	}
}

func TestRemove(t *testing.T) {
	x, ids := tree(t)
	for tag, n := range map[string]string{"tag-a": "a", "tag-b": "b", "tag-f": "f", "tag-f2": "f", "tag-g": "g"} {
		if _, err := x.SetTag(tag, ids[n]); err != nil {
			t.Fatal(err)
		}
	}
	_, err := x.Remove(ids["b"], false)
	testkit.WantErr(t, err, []error{ErrHasChildren}, ShortID(ids["d"]), ShortID(ids["e"]))
	var hc *HasChildrenError
	if !errors.As(err, &hc) || len(hc.Children) != 2 {
		t.Errorf("error %#v", err)
	}
	if len(x.Images) != 7 {
		t.Fatal("refused Remove removed something")
	}
	_, err = x.Remove(id("dead", '0'), true)
	testkit.WantErr(t, err, []error{ErrNotFound})

	gone, err := x.Remove(ids["f"], false)
	if err != nil || names(ids, gone) != "f" {
		t.Fatalf("Remove(f) = %v, %v", gone, err)
	}
	if _, ok := x.Tags["tag-f"]; ok || len(x.Tags) != 3 {
		t.Errorf("tags of f left: %v", x.Tags)
	}
	gone, err = x.Remove(ids["b"], true)
	if err != nil || names(ids, gone) != "e d b" {
		t.Fatalf("Remove(b, recursive) = %s, %v", names(ids, gone), err)
	}
	if len(x.Images) != 3 || !reflect.DeepEqual(x.TagsOf(ids["a"]), []string{"tag-a"}) || len(x.Tags) != 2 {
		t.Errorf("after recursive remove: %v %v", x.IDs(), x.Tags)
	}
	if err := x.Validate(); err != nil {
		t.Error(err)
	}
}

func TestTags(t *testing.T) {
	x, ids := tree(t)
	prev, err := x.SetTag("ubuntu:16.04", ids["a"])
	if err != nil || prev != "" {
		t.Fatalf("new tag: %v %v", prev, err)
	}
	prev, err = x.SetTag("ubuntu:16.04", ids["a"])
	if err != nil || prev != ids["a"] {
		t.Fatalf("same tag again: %v %v", prev, err)
	}
	prev, err = x.SetTag("ubuntu:16.04", ids["b"])
	if err != nil || prev != ids["a"] {
		t.Fatalf("moved tag: %v %v", prev, err)
	}
	if _, err := x.SetTag("z", ids["b"]); err != nil {
		t.Fatal(err)
	}
	if got := x.TagsOf(ids["b"]); !reflect.DeepEqual(got, []string{"ubuntu:16.04", "z"}) {
		t.Errorf("TagsOf(b) = %v", got)
	}
	if got := x.TagsOf(ids["a"]); len(got) != 0 {
		t.Errorf("TagsOf(a) = %v", got)
	}
	if got := x.TagsByImage(); len(got) != 1 || !reflect.DeepEqual(got[ids["b"]], []string{"ubuntu:16.04", "z"}) {
		t.Errorf("TagsByImage = %v", got)
	}
	_, err = x.SetTag("Bad Tag", ids["a"])
	testkit.WantErr(t, err, []error{ErrInvalidTag})
	_, err = x.SetTag("fine", id("dead", '0'))
	testkit.WantErr(t, err, []error{ErrNotFound})
	was, err := x.DeleteTag("z")
	if err != nil || was != ids["b"] {
		t.Errorf("DeleteTag = %v, %v", was, err)
	}
	_, err = x.DeleteTag("z")
	testkit.WantErr(t, err, []error{ErrNotFound}, `no tag "z"`)
}

func TestValidateTag(t *testing.T) {
	good := []string{"ubuntu:16.04", "ubuntu/one:16.04", "ubuntu:one:16.04", "test_image", "a", "abc", "1234x",
		"v1.0-rc_2", "centos72", "dead:beef", strings.Repeat("x", 128), "9"}
	for _, tag := range good {
		if err := ValidateTag(tag); err != nil {
			t.Errorf("%q: %v", tag, err)
		}
	}
	bad := map[string]string{
		"":                        "empty",
		strings.Repeat("x", 129):  "longer than 128",
		"Ubuntu":                  "uppercase",
		"-x":                      "must start",
		".x":                      "must start",
		"/x":                      "must start",
		":x":                      "must start",
		"a b":                     "not allowed",
		"a\tb":                    "not allowed",
		"a\nb":                    "not allowed",
		"a@b":                     "not allowed",
		"ubuntu\u00e9":            "non-ASCII",
		"beef":                    "image ID prefix",
		"0123456789":              "image ID prefix",
		hexOf(idBase):             "image ID prefix",
		"sha256:" + hexOf(idBase): "sha256:",
		"sha256:x":                "sha256:",
	}
	for tag, sub := range bad {
		testkit.WantErr(t, ValidateTag(tag), []error{ErrInvalidTag}, sub)
	}
}

func TestIDs(t *testing.T) {
	if _, err := ParseID(string(idBase)); err != nil {
		t.Error(err)
	}
	for s, sub := range map[string]string{
		"":                               "empty",
		"../x":                           "want sha256:",
		"sha256:":                        "have 0",
		"sha256:" + hexOf(idBase)[:10]:   "have 10",
		"SHA256:" + hexOf(idBase):        "algorithm",
		"sha512:" + hexOf(idBase):        "algorithm \"sha512\"",
		hexOf(idBase):                    "missing sha256: prefix",
		"sha256:" + hexOf(idBase) + "/x": "lowercase hex",
		"sha256:" + strings.ToUpper(hexOf(idBase)): "lowercase hex",
	} {
		_, err := ParseID(s)
		testkit.WantErr(t, err, []error{ErrInvalidID}, sub)
	}
	if got := ShortID(idBase); got != "94a992fe0bff6bb6" {
		t.Errorf("ShortID = %s", got)
	}
	if got := ShortID("weird"); got != "weird" {
		t.Errorf("ShortID(weird) = %s", got)
	}
	if got := LegacyFileName(idBase); got != hexOf(idBase)+".qcow2" {
		t.Errorf("LegacyFileName = %s", got)
	}
}
