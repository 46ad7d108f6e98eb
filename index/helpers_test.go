package index

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/yamlnode"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// Image IDs and blob digests used across the tests: sha256 of short words,
// so they are real digests of something.
const (
	idBase   = digest.Digest("sha256:94a992fe0bff6bb624513752584ead467f55bb0e17beecc59b116d47f9a9de6b")
	idOne    = digest.Digest("sha256:8266f466e21f8d4028f4a992ee430eae4ba00a08054a215dd4e24cdc5df31d91")
	idAlpine = digest.Digest("sha256:54c5b3dd459d5ef778bb2fa1e23a5fb0e1b62ae66970bcb436e8f81a1a1a8e41")
	blobBase = digest.Digest("sha256:564d547cf45d7498b9ebb783c28da33cd8a045c0475bb655ba1370c21aa234c1")
	blobOne  = digest.Digest("sha256:f19e1cf05a6eb47bf5edc8fa36956780356fe7cc9761a5126a7154185708f8a5")
	blobAlp  = digest.Digest("sha256:6b3958b21422a799c943ab0452d0772ef5b285f05955815a74ea4a537ec2fa2f")
)

func hexOf(id digest.Digest) string { return strings.TrimPrefix(string(id), "sha256:") }

// id makes a valid image ID from a hex prefix, padded with a filler digit.
func id(prefix string, fill byte) digest.Digest {
	return digest.Digest("sha256:" + prefix + strings.Repeat(string(fill), 64-len(prefix)))
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, doc string) *Index {
	t.Helper()
	x, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, doc)
	}
	return x
}

func mustMarshal(t testing.TB, x *Index) []byte {
	t.Helper()
	b, err := x.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	return b
}

// yamlText renders a node, to compare Cangafile and extra values without
// caring about positions.
func yamlText(t testing.TB, n *yaml.Node) string {
	t.Helper()
	if n == nil {
		return "<nil>"
	}
	out, err := yamlnode.Encode(n)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return string(out)
}

// sameIndex fails unless a and b hold the same images, tags and extras.
func sameIndex(t testing.TB, a, b *Index) {
	t.Helper()
	if !reflect.DeepEqual(a.IDs(), b.IDs()) {
		t.Fatalf("images differ: %v vs %v", a.IDs(), b.IDs())
	}
	if len(a.Tags) != len(b.Tags) || (len(a.Tags) > 0 && !reflect.DeepEqual(a.Tags, b.Tags)) {
		t.Fatalf("tags differ: %v vs %v", a.Tags, b.Tags)
	}
	sameFields(t, "top level", a.Extra, b.Extra)
	for _, id := range a.IDs() {
		ea, eb := *a.Images[id], *b.Images[id]
		if yamlText(t, ea.Cangafile) != yamlText(t, eb.Cangafile) {
			t.Fatalf("%s: cangafile differs:\n%s\nvs\n%s", id, yamlText(t, ea.Cangafile), yamlText(t, eb.Cangafile))
		}
		sameFields(t, string(id), ea.Extra, eb.Extra)
		if !ea.Created.Equal(eb.Created) {
			t.Fatalf("%s: created %v vs %v", id, ea.Created, eb.Created)
		}
		ea.Cangafile, eb.Cangafile, ea.Extra, eb.Extra = nil, nil, nil, nil
		ea.Created, eb.Created = ea.Created.UTC(), eb.Created.UTC()
		if !reflect.DeepEqual(ea, eb) {
			t.Fatalf("%s: entries differ:\n%+v\n%+v", id, ea, eb)
		}
	}
}

func sameFields(t testing.TB, where string, a, b []Field) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: extra keys differ: %d vs %d", where, len(a), len(b))
	}
	// The order of unknown keys carries no meaning; Marshal sorts them.
	byKey := func(x, y Field) int { return strings.Compare(x.Key, y.Key) }
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, byKey)
	slices.SortFunc(b, byKey)
	for i := range a {
		if a[i].Key != b[i].Key || yamlText(t, a[i].Value) != yamlText(t, b[i].Value) {
			t.Fatalf("%s: extra %q differs from %q", where, a[i].Key, b[i].Key)
		}
	}
}
