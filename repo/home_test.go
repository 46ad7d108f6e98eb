package repo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cangallo/canga/config"
	"github.com/cangallo/canga/index"
	"github.com/opencontainers/go-digest"
)

// TestHomeResolveSearchOrder checks that names are looked up in the
// configuration's search order: the default repository first, then the
// others in file order.
func TestHomeResolveSearchOrder(t *testing.T) {
	home := t.TempDir()
	conf := "repos:\n  zeta: {}\n  alpha: {}\n  mid: {}\ndefault_repo: mid\n"
	if err := os.WriteFile(filepath.Join(home, config.FileName), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := OpenHome(home)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]digest.Digest{}
	tags := map[string][]string{ // repository: its tags
		"mid":   {"x"},
		"zeta":  {"x", "y"},
		"alpha": {"y", "z"},
	}
	for repoName, repoTags := range tags {
		r, err := h.Repo(repoName)
		if err != nil {
			t.Fatal(err)
		}
		err = r.Update(context.Background(), func(ix *index.Index) error {
			for _, tag := range repoTags {
				id := digest.FromString(repoName + "/" + tag)
				e := &index.Entry{Blob: digest.FromString("blob of " + repoName + "/" + tag), BlobSize: 1, VirtualSize: 1}
				if err := ix.Put(id, e); err != nil {
					return err
				}
				if _, err := ix.SetTag(tag, id); err != nil {
					return err
				}
				ids[repoName+"/"+tag] = id
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct{ name, repo, tag string }{
		{"x", "mid", "x"},         // the default first, though zeta comes first in the file
		{"y", "zeta", "y"},        // then file order
		{"z", "alpha", "z"},       // found in the last repository searched
		{"alpha:y", "alpha", "y"}, // REPO:NAME looks in REPO only
	} {
		r, ix, id, err := h.Resolve(tc.name)
		if err != nil {
			t.Errorf("Resolve(%q): %v", tc.name, err)
			continue
		}
		if r.Name() != tc.repo || id != ids[tc.repo+"/"+tc.tag] || ix.Tags[tc.tag] != id {
			t.Errorf("Resolve(%q) = %s %s, want %s %s", tc.name, r.Name(), id, tc.repo, ids[tc.repo+"/"+tc.tag])
		}
	}
	if _, _, _, err := h.Resolve("nope"); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("Resolve(nope): %v, want index.ErrNotFound", err)
	}
	if _, err := h.Repo("nope"); !errors.Is(err, config.ErrNotFound) {
		t.Errorf("Repo(nope): %v, want config.ErrNotFound", err)
	}
}
