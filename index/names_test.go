package index

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/opencontainers/go-digest"
)

// small makes an index holding the given image IDs and tags.
func small(t *testing.T, ids []digest.Digest, tags map[string]digest.Digest) *Index {
	t.Helper()
	x := New()
	for i, id := range ids {
		put(t, x, id, &Entry{Blob: digest.Digest(fmt.Sprintf("sha256:%064x", i+1)), BlobSize: 1, VirtualSize: 1})
	}
	for tag, id := range tags {
		if _, err := x.SetTag(tag, id); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

func TestLookup(t *testing.T) {
	abcd1, abcd2, abce := id("abcd1", '0'), id("abcd2", '0'), id("abce", '0')
	x := small(t, []digest.Digest{abcd1, abcd2, abce}, map[string]digest.Digest{
		"ubuntu:16.04": abce, "abc": abcd1, "latest": abcd2,
	})
	tests := []struct {
		name string
		want digest.Digest
		err  error
		subs []string
	}{
		{"ubuntu:16.04", abce, nil, nil},
		{"abc", abcd1, nil, nil}, // a 3-digit tag: not a prefix, so it can be a tag
		{"latest", abcd2, nil, nil},
		{string(abcd1), abcd1, nil, nil},
		{hexOf(abcd1), abcd1, nil, nil},
		{"abce", abce, nil, nil},
		{"sha256:abce", abce, nil, nil},
		{"abcd1", abcd1, nil, nil},
		{"sha256:abcd2000", abcd2, nil, nil},
		{"abcd", "", ErrAmbiguous, []string{`"abcd"`, string(abcd1), string(abcd2)}},
		{"sha256:abc", "", ErrNotFound, nil}, // 3 digits: too short
		{"abd", "", ErrNotFound, nil},
		{"ABCE", "", ErrNotFound, nil},
		{"abcf", "", ErrNotFound, nil},
		{string(id("abcf", '0')), "", ErrNotFound, nil},
		{hexOf(id("abcf", '0')), "", ErrNotFound, nil},
		{"", "", ErrNotFound, nil},
		{"sha256:", "", ErrNotFound, nil},
		{"nope", "", ErrNotFound, []string{`no image "nope"`}},
	}
	for _, tc := range tests {
		got, err := x.Lookup(tc.name)
		if tc.err == nil {
			if err != nil || got != tc.want {
				t.Errorf("Lookup(%q) = %v, %v; want %v", tc.name, got, err, tc.want)
			}
			continue
		}
		testkit.WantErr(t, err, []error{tc.err}, tc.subs...)
	}
	_, err := x.Lookup("abcd")
	var amb *AmbiguousError
	if !errors.As(err, &amb) || !reflect.DeepEqual(amb.Candidates, []digest.Digest{abcd1, abcd2}) {
		t.Errorf("ambiguous error = %#v", err)
	}
}

func TestResolve(t *testing.T) {
	dflt1, dflt2 := id("aaaa1", '1'), id("bbbb", '1')
	rem1, rem2, rem3 := id("aaaa2", '2'), id("cccc1", '2'), id("cccc2", '2')
	oth1 := id("dddd", '3')
	indexes := map[string]*Index{
		"default": small(t, []digest.Digest{dflt1, dflt2}, map[string]digest.Digest{
			"ubuntu:16.04": dflt1, "remote:foo": dflt2, "cccc-tag": dflt2,
		}),
		"remote": small(t, []digest.Digest{rem1, rem2, rem3}, map[string]digest.Digest{
			"ubuntu:16.04": rem1, "only-remote": rem2, "bbbb-remote": rem3,
		}),
		"other": small(t, []digest.Digest{oth1}, map[string]digest.Digest{"only-remote": oth1}),
		// "ubuntu" is configured but has never been fetched.
	}
	var asked []string
	get := func(repo string) (*Index, error) {
		asked = append(asked, repo)
		if repo == "broken" {
			return nil, errors.New("index: repository broken: disk on fire")
		}
		return indexes[repo], nil
	}
	order := []string{"default", "ubuntu", "remote", "other"}
	tests := []struct {
		name  string
		repo  string
		want  digest.Digest
		err   error
		subs  []string
		order []string
	}{
		// Without REPO:, the default repository wins.
		{name: "ubuntu:16.04", repo: "default", want: dflt1},
		{name: "only-remote", repo: "remote", want: rem2},
		{name: "dddd", repo: "other", want: oth1},
		// A tag in the default repository beats an ID prefix elsewhere,
		// and a prefix in the default beats a tag elsewhere.
		{name: "cccc-tag", repo: "default", want: dflt2},
		{name: "bbbb", repo: "default", want: dflt2},
		// The prefix aaaa matches one image in default and one in remote:
		// not ambiguous, the first repository wins.
		{name: "aaaa", repo: "default", want: dflt1},
		// REPO:NAME with a configured REPO.
		{name: "remote:ubuntu:16.04", repo: "remote", want: rem1},
		{name: "remote:aaaa", repo: "remote", want: rem1},
		{name: "other:only-remote", repo: "other", want: oth1},
		{name: "remote:" + string(rem3), repo: "remote", want: rem3},
		// REPO names a repository without an index: falls back to the
		// whole string, which is not a tag anywhere.
		{name: "ubuntu:16.04:x", err: ErrNotFound},
		// "remote:foo": remote has no foo, but default has the tag.
		{name: "remote:foo", repo: "default", want: dflt2},
		// An ambiguous prefix inside REPO: is an error, no fallback.
		{name: "remote:cccc", err: ErrAmbiguous, subs: []string{"in repository remote", string(rem2), string(rem3)}},
		// An ambiguous prefix in an earlier repository stops the search.
		{name: "cccc", err: ErrAmbiguous, subs: []string{`"cccc"`, "remote"}},
		// Not a configured repository: the whole string is the name.
		{name: "nowhere:16.04", err: ErrNotFound, subs: []string{`no image "nowhere:16.04"`}},
		{name: "missing", err: ErrNotFound, order: []string{"default", "ubuntu", "remote", "other"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			asked = nil
			repo, got, err := Resolve(tc.name, order, get)
			if tc.err == nil {
				if err != nil || repo != tc.repo || got != tc.want {
					t.Fatalf("Resolve(%q) = %s %s, %v; want %s %s", tc.name, repo, got, err, tc.repo, tc.want)
				}
				return
			}
			testkit.WantErr(t, err, []error{tc.err}, tc.subs...)
			if tc.order != nil && !reflect.DeepEqual(asked, tc.order) {
				t.Errorf("asked %v, want %v", asked, tc.order)
			}
		})
	}
}

func TestResolveBrokenRepo(t *testing.T) {
	var asked []string
	get := func(repo string) (*Index, error) {
		asked = append(asked, repo)
		if repo == "broken" {
			return nil, errors.New("index: repository broken: disk on fire")
		}
		return New(), nil
	}
	// A repository that fails to load stops the resolution with its error
	// rather than letting a later repository answer for it.
	_, _, err := Resolve("x", []string{"default", "broken", "other"}, get)
	testkit.WantErr(t, err, nil, "disk on fire")
	if !reflect.DeepEqual(asked, []string{"default", "broken"}) {
		t.Errorf("asked %v", asked)
	}
	asked = nil
	_, _, err = Resolve("broken:x", []string{"default", "broken"}, get)
	testkit.WantErr(t, err, nil, "disk on fire")
}

// TestResolveRepoNameTag: a tag whose text starts with a configured
// repository name and ':' is shadowed by REPO:NAME only while that
// repository resolves it.
func TestResolveRepoNameTag(t *testing.T) {
	a, b := id("aaaa", '1'), id("bbbb", '2')
	idx := map[string]*Index{
		"default": small(t, []digest.Digest{a}, map[string]digest.Digest{"other:latest": a}),
		"other":   small(t, []digest.Digest{b}, nil),
	}
	get := func(r string) (*Index, error) { return idx[r], nil }
	repo, got, err := Resolve("other:latest", []string{"default", "other"}, get)
	if err != nil || repo != "default" || got != a {
		t.Fatalf("before: %s %s %v", repo, got, err)
	}
	if _, err := idx["other"].SetTag("latest", b); err != nil {
		t.Fatal(err)
	}
	repo, got, err = Resolve("other:latest", []string{"default", "other"}, get)
	if err != nil || repo != "other" || got != b {
		t.Fatalf("after: %s %s %v", repo, got, err)
	}
	if !strings.Contains(fmt.Sprint(Resolve("zzzz", nil, get)), "no image") {
		t.Error("no repositories: want not found")
	}
}
