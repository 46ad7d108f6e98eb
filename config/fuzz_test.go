package config

import (
	"errors"
	"net/url"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse reads arbitrary bytes as config.yaml. Nothing may panic; what
// parses must keep the promises of [Config] (the default repository is
// configured, paths are absolute and distinct, URLs are http or https);
// and adding a repository keeps every repository and setting the file had,
// and adds exactly the new one, last.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"default_repo: default\nrepos:\n  default:\n    path: ~/.cangallo/default\n",
		"# mine\nrepos:\n  zeta:\n    path: zeta-dir # c\n  alpha:\n    url: https://h.example/c/\n    path: ~/cache/alpha\n    allowed_signers: a.allowed\n  mid:\n    type: local\n    path: /srv/mid/\n  bare:\ndefault_repo: mid\n",
		"repos: {a: {path: x}, b: {path: y}}\ndefault_repo: b\nsigning_key: ~/.ssh/id_ed25519\nallowed_signers: signers\n",
		"repos:\n  a: &x {path: p}\n  b: *x\n",
		"repos:\n  default: {url: 'http://[::1]:8000/'}\n",
		"repos: [a, b]\n",
		"{repos: {default: }, default_repo: default}",
		"repos:\n  default:\n    path: \"\\u00e9t\\u00e9\"\n",
	} {
		f.Add([]byte(s))
	}
	const home, file = "/home/u/.cangallo", "/home/u/.cangallo/config.yaml"
	f.Fuzz(func(t *testing.T, data []byte) {
		t.Setenv("HOME", "/home/u")
		c, _, err := parse(home, file, data)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *ConfigError", err)
			}
			return
		}
		checkConfig(t, c)
		const name, path = "fuzz-added", "/elsewhere/fuzz-added"
		out, next, err := addRepo(home, file, data, name, Spec{Path: path, URL: "https://example.com/r/"})
		if err != nil {
			if _, taken := c.repo(name); taken {
				return
			}
			for _, r := range c.Repos {
				if r.Path == path {
					return
				}
			}
			t.Fatalf("adding a repository to a valid config: %v", err)
		}
		checkConfig(t, next)
		want := append(append([]Repo(nil), c.Repos...), Repo{Name: name, Path: path, URL: "https://example.com/r/"})
		if !reflect.DeepEqual(next.Repos, want) {
			t.Fatalf("repositories after adding one:\n got %+v\nwant %+v\n%s", next.Repos, want, out)
		}
		if next.DefaultRepo != c.DefaultRepo || next.SigningKey != c.SigningKey || next.AllowedSigners != c.AllowedSigners {
			t.Fatalf("settings changed by adding a repository:\n%+v\n%+v", c, next)
		}
	})
}

func checkConfig(t *testing.T, c *Config) {
	t.Helper()
	if _, ok := c.repo(c.DefaultRepo); !ok {
		t.Fatalf("default repository %q is not configured", c.DefaultRepo)
	}
	if r, err := c.Repo(""); err != nil || r.Name != c.DefaultRepo {
		t.Fatalf("Repo(\"\") = %+v, %v", r, err)
	}
	if order := c.SearchOrder(); len(order) != len(c.Repos) || order[0] != c.DefaultRepo {
		t.Fatalf("search order %v for %d repositories", order, len(c.Repos))
	}
	paths := map[string]bool{}
	for _, r := range c.Repos {
		if err := ValidateRepoName(r.Name); err != nil {
			t.Fatalf("repository name %q: %v", r.Name, err)
		}
		if !filepath.IsAbs(r.Path) || filepath.Clean(r.Path) != r.Path || paths[r.Path] {
			t.Fatalf("repository %q: path %q", r.Name, r.Path)
		}
		paths[r.Path] = true
		if r.URL != "" {
			u, err := url.Parse(r.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("repository %q: url %q", r.Name, r.URL)
			}
		}
		if r.AllowedSigners != "" && !filepath.IsAbs(r.AllowedSigners) {
			t.Fatalf("repository %q: allowed_signers %q", r.Name, r.AllowedSigners)
		}
	}
}
