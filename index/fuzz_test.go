package index

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: Parse never panics, whatever it accepts it validates, and
// what it accepts marshals to canonical bytes that parse back to the same
// bytes. Seeds: every YAML file in testdata plus the shapes below.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"version: 1\nimages: {}\ntags: {}\n",
		v1(one("    parent: "+string(idBase)+"\n    cangafile: {a: &x [1, *x]}\n"), "  t: "+string(idOne)+"\n"),
		v1(one("    description: \"a\\tb\\u0085c\"\n    zz: {b: !!binary aGVsbG8=, a: !custom x}\n"), ""),
		"version: 0\nimages:\n  " + hexOf(idBase) + ":\n    creation-time: 2016-03-13 16:52:28.1 +01:00\ntags: {t: " + hexOf(idBase) + "}\n",
		"images: {}\n",
		"x: &a [*a]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := Parse(data)
		if err != nil {
			if x != nil {
				t.Fatal("index returned with an error")
			}
			return
		}
		if err := x.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
		b1, err := x.Marshal()
		if err != nil {
			for _, e := range x.Images {
				if e.Legacy != nil {
					return // Cangallo entries cannot be written
				}
			}
			t.Fatalf("Marshal(Parse(x)): %v", err)
		}
		x2, err := Parse(b1)
		if err != nil {
			t.Fatalf("Parse(Marshal(Parse(x))): %v\n%s", err, b1)
		}
		sameIndex(t, x, x2)
		b2, err := x2.Marshal()
		if err != nil {
			t.Fatalf("second Marshal: %v", err)
		}
		if !bytes.Equal(b1, b2) {
			t.Fatalf("Marshal not stable:\n%q\n%q", b1, b2)
		}
	})
}
