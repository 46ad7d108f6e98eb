package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// specConfig is SPEC §3's config.yaml, byte for byte.
const specConfig = `# CANGA_HOME/config.yaml
default_repo: default
repos:
  default:
    path: ~/.cangallo/default
  # a remote: url of a static repository; path is its local cache
  # remote:
  #   url: http://127.0.0.1:8000/
  #   path: ~/.cangallo/remote
  #   allowed_signers: ~/.cangallo/remote.allowed_signers   # set => signature required
`

func TestConfigDefaultHome(t *testing.T) {
	user := t.TempDir()
	t.Setenv("HOME", user)
	t.Setenv(HomeEnv, "")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(user, ".cangallo")
	if c.Home != home || c.File != filepath.Join(home, "config.yaml") {
		t.Errorf("home %s file %s", c.Home, c.File)
	}
	got, err := os.ReadFile(c.File)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != specConfig {
		t.Errorf("first-use config:\n%s\nwant SPEC §3:\n%s", got, specConfig)
	}
	want := []Repo{{Name: "default", Path: filepath.Join(home, "default")}}
	if !reflect.DeepEqual(c.Repos, want) || c.DefaultRepo != "default" {
		t.Errorf("repos %+v default %q", c.Repos, c.DefaultRepo)
	}
	st, err := os.Stat(home)
	if err != nil || !st.IsDir() {
		t.Fatalf("home: %v", err)
	}
	if st.Mode().Perm()&0o700 != 0o700 {
		t.Errorf("home mode %v", st.Mode())
	}
	if st, err := os.Stat(c.File); err != nil || st.Mode().Perm()&0o600 != 0o600 || st.Mode().Perm()&0o022 != 0 {
		t.Errorf("config mode %v %v", st.Mode(), err)
	}
	// The repository directory itself is for package cas to create.
	if _, err := os.Stat(filepath.Join(home, "default")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("repository directory created: %v", err)
	}
	// No temporary files left behind.
	entries, _ := os.ReadDir(home)
	if len(entries) != 1 {
		t.Errorf("home holds %v", entries)
	}
}

func TestConfigHomeChoice(t *testing.T) {
	user := t.TempDir()
	t.Setenv("HOME", user)
	env := filepath.Join(t.TempDir(), "from-env")
	t.Setenv(HomeEnv, env)
	if h, err := Home(""); err != nil || h != env {
		t.Errorf("Home with %s = %s, %v", HomeEnv, h, err)
	}
	flag := filepath.Join(t.TempDir(), "from-flag")
	if h, err := Home(flag); err != nil || h != flag {
		t.Errorf("Home(flag) = %s, %v", h, err)
	}
	if h, err := Home("~/x"); err != nil || h != filepath.Join(user, "x") {
		t.Errorf("Home(~/x) = %s, %v", h, err)
	}
	wd, _ := os.Getwd()
	if h, err := Home("rel"); err != nil || h != filepath.Join(wd, "rel") {
		t.Errorf("Home(rel) = %s, %v", h, err)
	}
	if _, err := Home("~root/x"); err == nil {
		t.Error("~user accepted")
	}

	// A home elsewhere gets its real path in the new config.
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(c.File)
	want := strings.ReplaceAll(specConfig, "~/.cangallo", env)
	if string(got) != want {
		t.Errorf("config:\n%s\nwant:\n%s", got, want)
	}
	if c.Repos[0].Path != filepath.Join(env, "default") {
		t.Errorf("path %s", c.Repos[0].Path)
	}
	// Second load reads the same file and does not rewrite it.
	st1, _ := os.Stat(c.File)
	c2, err := Load(env)
	if err != nil || !reflect.DeepEqual(c, c2) {
		t.Errorf("reload: %+v %v", c2, err)
	}
	st2, _ := os.Stat(c.File)
	if !os.SameFile(st1, st2) {
		t.Error("config rewritten")
	}
}

func TestConfigAwkwardHome(t *testing.T) {
	home := filepath.Join(t.TempDir(), "my home: #1 \"quoted\"")
	c, err := Load(home)
	if err != nil {
		t.Fatal(err)
	}
	if c.Repos[0].Path != filepath.Join(home, "default") {
		t.Errorf("path %q", c.Repos[0].Path)
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, FileName), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return home
}

func TestConfigParse(t *testing.T) {
	user := t.TempDir()
	t.Setenv("HOME", user)
	home := writeConfig(t, `# mine
repos:
  zeta:
    path: zeta-dir         # relative to the home
  alpha:
    url: https://images.example.com/canga/
    path: ~/cache/alpha
    allowed_signers: alpha.allowed_signers
  mid:
    type: local            # Cangallo's key, accepted
    path: /srv/canga/mid/
  bare:
default_repo: mid
`)
	c, err := Load(home)
	if err != nil {
		t.Fatal(err)
	}
	want := []Repo{
		{Name: "zeta", Path: filepath.Join(home, "zeta-dir")},
		{Name: "alpha", Path: filepath.Join(user, "cache/alpha"), URL: "https://images.example.com/canga/",
			AllowedSigners: filepath.Join(home, "alpha.allowed_signers")},
		{Name: "mid", Path: "/srv/canga/mid"},
		{Name: "bare", Path: filepath.Join(home, "bare")},
	}
	if !reflect.DeepEqual(c.Repos, want) {
		t.Errorf("repos\n got %+v\nwant %+v", c.Repos, want)
	}
	if got := c.SearchOrder(); !reflect.DeepEqual(got, []string{"mid", "zeta", "alpha", "bare"}) {
		t.Errorf("SearchOrder = %v", got)
	}
	if r, err := c.Repo(""); err != nil || r.Name != "mid" {
		t.Errorf("Repo(\"\") = %+v, %v", r, err)
	}
	if r, err := c.Repo("alpha"); err != nil || !r.Remote() {
		t.Errorf("Repo(alpha) = %+v, %v", r, err)
	}
	_, err = c.Repo("nope")
	testkit.WantErr(t, err, []error{ErrNotFound}, `config: no repository "nope"`)
}

func TestConfigErrors(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	tests := []struct {
		name, text string
		subs       []string
	}{
		{"empty file", "", []string{"empty document"}},
		{"syntax", "default_repo: default\nrepos:\n  default:\n   path: x\n  : :\n\tbad", []string{"line "}},
		{"mapping in a scalar", "default_repo: default\nrepos: x: y\n", []string{"line 2:", "mapping values are not allowed"}},
		{"two documents", "repos: {default: {}}\n---\nx: 1\n", []string{"more than one YAML document"}},
		{"not a mapping", "- a\n", []string{"line 1:", "want a mapping"}},
		{"unknown top key", "default_repo: default\nrepo:\n  default: {}\n", []string{"line 2:", `unknown key "repo"`}},
		{"duplicate top key", "repos: {default: {}}\nrepos: {default: {}}\n", []string{"duplicate key \"repos\""}},
		{"no repos", "default_repo: default\n", []string{"no repos"}},
		{"empty repos", "repos: {}\n", []string{"no repos"}},
		{"repos list", "repos:\n  - default\n", []string{"line 2:", "repos: want a mapping"}},
		{"duplicate repo", "repos:\n  default: {path: a}\n  default: {path: b}\n", []string{"line 3:", `duplicate key "default"`}},
		{"bad repo name", "repos:\n  default: {}\n  a:b: {}\n", []string{"line 3:", `repository name "a:b"`}},
		{"repo name with dot first", "repos:\n  default: {}\n  .x: {}\n", []string{`repository name ".x"`}},
		{"repo is a scalar", "repos:\n  default: here\n", []string{"repos.default: want a mapping"}},
		{"misspelt key", "repos:\n  default:\n    path: x\n    allowed_signer: keys\n", []string{"line 4:", `unknown key "allowed_signer"`}},
		{"empty path", "repos:\n  default:\n    path: \"\"\n", []string{"repos.default.path: want a non-empty string"}},
		{"null path", "repos:\n  default:\n    path:\n", []string{"repos.default.path: want a non-empty string"}},
		{"path list", "repos:\n  default:\n    path: [a]\n", []string{"repos.default.path"}},
		{"tilde user", "repos:\n  default:\n    path: ~bob/x\n", []string{"~user paths are not supported"}},
		{"ftp url", "repos:\n  default: {}\n  r:\n    url: ftp://host/x\n", []string{"line 4:", "want an http:// or https:// URL"}},
		{"url without host", "repos:\n  default: {}\n  r:\n    url: http:///x\n", []string{"want an http:// or https:// URL"}},
		{"bad type", "repos:\n  default:\n    type: s3\n", []string{`"s3": want local or remote`}},
		{"default missing", "default_repo: main\nrepos:\n  default: {}\n", []string{"line 1:", `default_repo "main" is not a configured repository`}},
		{"no default_repo and no default", "repos:\n  main: {}\n", []string{`default_repo "default" is not a configured repository`}},
		{"default_repo list", "default_repo: [a]\nrepos:\n  default: {}\n", []string{"default_repo: want a repository name"}},
		{"shared path", "repos:\n  default: {path: /srv/x}\n  remote: {url: 'http://h/', path: /srv/x/}\n", []string{"share the path /srv/x"}},
		{"alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n", []string{"more than"}},
		{"too large", "#" + strings.Repeat("x", 1<<20) + "\nrepos: {default: {}}\n", []string{"larger than"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			home := writeConfig(t, tc.text)
			c, err := Load(home)
			if c != nil {
				t.Error("config returned with the error")
			}
			file := filepath.Join(home, FileName)
			testkit.WantErr(t, err, []error{ErrConfig}, append(tc.subs, "config: "+file+": ")...)
			// A bad config is reported, never replaced.
			if got, _ := os.ReadFile(file); string(got) != tc.text {
				t.Error("config file changed")
			}
		})
	}
}

func TestConfigUnreadable(t *testing.T) {
	// A directory where the file should be: unreadable even for root.
	home := t.TempDir()
	file := filepath.Join(home, FileName)
	if err := os.Mkdir(file, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Load(home)
	testkit.WantErr(t, err, nil, "config: "+file+": ", "is a directory")
	if st, err := os.Stat(file); err != nil || !st.IsDir() {
		t.Error("directory replaced")
	}

	// Permissions: only meaningful when not root, who reads anything.
	if os.Geteuid() != 0 {
		home := writeConfig(t, "repos: {default: {}}\n")
		file := filepath.Join(home, FileName)
		if err := os.Chmod(file, 0); err != nil {
			t.Fatal(err)
		}
		_, err := Load(home)
		testkit.WantErr(t, err, []error{fs.ErrPermission}, "config: "+file+": ", "permission denied")
		os.Chmod(file, 0o644)
		if got, _ := os.ReadFile(file); string(got) != "repos: {default: {}}\n" {
			t.Error("unreadable config replaced")
		}
	}

	// A dangling symlink is not followed to create a config elsewhere.
	home = t.TempDir()
	target := filepath.Join(t.TempDir(), "elsewhere.yaml")
	if err := os.Symlink(target, filepath.Join(home, FileName)); err != nil {
		t.Fatal(err)
	}
	_, err = Load(home)
	testkit.WantErr(t, err, []error{fs.ErrNotExist}, "config: ")
	if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Error("config created through a dangling symlink")
	}

	// A home that is a file.
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(notDir)
	testkit.WantErr(t, err, nil, "config: "+filepath.Join(notDir, FileName)+": ", "not a directory")
}

func TestConfigConcurrentFirstUse(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Load(home)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	entries, _ := os.ReadDir(home)
	if len(entries) != 1 {
		t.Errorf("home holds %v", entries)
	}
}

func TestAddRepo(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	c, err := Load(home)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddRepo("remote", Spec{URL: "http://127.0.0.1:8000/", AllowedSigners: "remote.allowed_signers"}); err != nil {
		t.Fatal(err)
	}
	want := []Repo{
		{Name: "default", Path: filepath.Join(home, "default")},
		{Name: "remote", Path: filepath.Join(home, "remote"), URL: "http://127.0.0.1:8000/", AllowedSigners: filepath.Join(home, "remote.allowed_signers")},
	}
	if !reflect.DeepEqual(c.Repos, want) {
		t.Errorf("after AddRepo: %+v", c.Repos)
	}
	if err := c.AddRepo("local2", Spec{Path: "/srv/l2"}); err != nil {
		t.Fatal(err)
	}
	again, err := Load(home)
	if err != nil || !reflect.DeepEqual(again, c) {
		t.Fatalf("reload: %+v, %v", again, err)
	}
	if got := again.SearchOrder(); !reflect.DeepEqual(got, []string{"default", "remote", "local2"}) {
		t.Errorf("order %v", got)
	}
	text, _ := os.ReadFile(c.File)
	if !strings.HasPrefix(string(text), "# CANGA_HOME/config.yaml\n") || !strings.Contains(string(text), "# a remote: url of a static repository") {
		t.Errorf("comments lost:\n%s", text)
	}

	before := string(text)
	testkit.WantErr(t, c.AddRepo("remote", Spec{}), []error{ErrExists})
	testkit.WantErr(t, c.AddRepo("a:b", Spec{}), []error{ErrConfig}, "repository name")
	testkit.WantErr(t, c.AddRepo("ftp", Spec{URL: "ftp://x/"}), []error{ErrConfig}, "http://")
	testkit.WantErr(t, c.AddRepo("same", Spec{Path: "/srv/l2"}), []error{ErrConfig}, "share the path")
	if after, _ := os.ReadFile(c.File); string(after) != before {
		t.Errorf("refused AddRepo changed the file:\n%s", after)
	}
	entries, _ := os.ReadDir(home)
	if len(entries) != 1 {
		t.Errorf("home holds %v", entries)
	}
}

// signing_key and allowed_signers at the top level are canga sign's and
// canga verify's defaults: paths like a repository's, kept by AddRepo.
func TestConfigSigningDefaults(t *testing.T) {
	user := t.TempDir()
	t.Setenv("HOME", user)
	home := writeConfig(t, `signing_key: ~/.ssh/id_ecdsa
allowed_signers: keys/allowed_signers
repos:
  default: {}
`)
	c, err := Load(home)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(user, ".ssh", "id_ecdsa"); c.SigningKey != want {
		t.Errorf("SigningKey = %q, want %q", c.SigningKey, want)
	}
	if want := filepath.Join(home, "keys", "allowed_signers"); c.AllowedSigners != want {
		t.Errorf("AllowedSigners = %q, want %q", c.AllowedSigners, want)
	}
	if r, _ := c.Repo(""); r.AllowedSigners != "" {
		t.Errorf("the top-level allowed_signers leaked into the default repository: %+v", r)
	}
	if err := c.AddRepo("other", Spec{}); err != nil {
		t.Fatal(err)
	}
	if c.SigningKey == "" || c.AllowedSigners == "" {
		t.Errorf("AddRepo lost the top-level keys: %+v", c)
	}

	bare, err := Load(writeConfig(t, "repos: {default: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if bare.SigningKey != "" || bare.AllowedSigners != "" {
		t.Errorf("unset keys: %+v", bare)
	}

	for _, tc := range []struct{ text, sub string }{
		{"signing_key:\nrepos: {default: {}}\n", "signing_key: want a non-empty string"},
		{"allowed_signers: [a]\nrepos: {default: {}}\n", "allowed_signers: want a non-empty string"},
		{"signing_key: ~bob/k\nrepos: {default: {}}\n", "~user paths are not supported"},
		{"signing_keys: k\nrepos: {default: {}}\n", `unknown key "signing_keys"`},
	} {
		_, err := Load(writeConfig(t, tc.text))
		testkit.WantErr(t, err, []error{ErrConfig}, tc.sub, "line 1:")
	}
}
