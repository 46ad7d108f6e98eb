package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cangallo/canga/internal/atomicfile"

	"github.com/cangallo/canga/internal/yamlnode"
	"go.yaml.in/yaml/v3"
)

const (
	// HomeEnv names the environment variable that overrides the home.
	HomeEnv = "CANGA_HOME"
	// FileName is the name of the configuration file in the home.
	FileName = "config.yaml"
	// defaultHome is the home when neither --home nor CANGA_HOME is set.
	defaultHome = "~/.cangallo"
	// maxConfigSize bounds config.yaml: it is small and hand-written.
	maxConfigSize = 1 << 20
)

// Config is CANGA_HOME/config.yaml (SPEC §3).
type Config struct {
	Home        string // absolute
	File        string // absolute path of config.yaml
	DefaultRepo string // always the name of one of Repos
	Repos       []Repo // in the order of the file
	// SigningKey is signing_key: the SSH key canga sign uses when none is
	// given (a private key, or a .pub whose key ssh-agent holds), as
	// git's user.signingKey. Empty when not set.
	SigningKey string
	// AllowedSigners is the top-level allowed_signers: the file canga
	// verify checks against when neither the command nor the
	// repository's own entry names one, as git's
	// gpg.ssh.allowedSignersFile. It makes no signature mandatory: only a
	// repository's own allowed_signers does.
	AllowedSigners string
}

// Repo is one configured repository. Paths are absolute, with "~"
// expanded and relative paths taken from the home.
type Repo struct {
	Name string
	Path string // the repository, or a remote's local cache
	URL  string // a remote's base URL; empty for a local repository
	// AllowedSigners, when set, is an ssh-keygen allowed_signers file and
	// makes a valid signature on the index mandatory (SPEC §6).
	AllowedSigners string
}

// Remote reports whether the repository is the local cache of a remote.
func (r Repo) Remote() bool { return r.URL != "" }

// Spec is a repository as written in config.yaml, for [Config.AddRepo]:
// paths may use "~" or be relative to the home.
type Spec struct {
	Path           string // empty: HOME/NAME
	URL            string
	AllowedSigners string
}

// Home returns the absolute canga home: dir when not empty (--home), else
// $CANGA_HOME, else ~/.cangallo.
func Home(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(HomeEnv)
	}
	if dir == "" {
		dir = defaultHome
	}
	dir, err := expandTilde(dir)
	if err != nil {
		return "", fmt.Errorf("config: home %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("config: home %s: %w", dir, err)
	}
	return abs, nil
}

// Load reads HOME/config.yaml, home as for [Home]. On first use,
// when the file does not exist, it creates the home (0755) and a config
// with the default repository (SPEC §3). An existing file that cannot be
// read is an error, never replaced. The repository directories are not
// created here.
func Load(home string) (*Config, error) {
	home, err := Home(home)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(home, FileName)
	data, err := readFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createDefaultConfig(home, file); err != nil {
			return nil, err
		}
		data, err = readFile(file)
	}
	if err != nil {
		return nil, err
	}
	c, _, err := parse(home, file, data)
	return c, err
}

func readFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", file, pathErr(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", file, pathErr(err))
	}
	if len(data) > maxConfigSize {
		return nil, &ConfigError{File: file, Msg: fmt.Sprintf("larger than %d bytes", maxConfigSize)}
	}
	return data, nil
}

// pathErr drops the *PathError wrapper, whose message repeats the file
// name we already give, keeping the errno for errors.Is.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// defaultConfigText is SPEC §3's config with HOME standing for the home.
const defaultConfigText = `# CANGA_HOME/config.yaml
default_repo: default
repos:
  default:
    path: HOME/default
  # a remote: url of a static repository; path is its local cache
  # remote:
  #   url: http://127.0.0.1:8000/
  #   path: HOME/remote
  #   allowed_signers: HOME/remote.allowed_signers   # set => signature required
`

// defaultConfig is the first-use config for home: with "~/.cangallo" when
// that is the home, so the file reads as the SPEC's, else the real path.
func defaultConfig(home string) string {
	prefix := home
	if uh, err := os.UserHomeDir(); err == nil && filepath.Clean(home) == filepath.Join(uh, ".cangallo") {
		prefix = defaultHome
	}
	text := defaultConfigText
	for _, name := range []string{"default", "remote.allowed_signers", "remote"} {
		text = strings.ReplaceAll(text, "HOME/"+name, yamlScalar(prefix+"/"+name))
	}
	return text
}

// yamlScalar writes s as a YAML scalar: plain when that is safe, else
// double-quoted (Go's escapes are a subset of YAML's).
func yamlScalar(s string) string {
	safe := s != ""
	for i := 0; i < len(s) && safe; i++ {
		c := s[i]
		safe = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("/._~+-", c) >= 0
	}
	if safe && s[0] != '-' {
		return s
	}
	return strconv.Quote(s)
}

func createDefaultConfig(home, file string) error {
	if err := os.MkdirAll(home, 0o755); err != nil {
		return fmt.Errorf("config: home %s: %w", home, pathErr(err))
	}
	return writeFileAtomic(file, []byte(defaultConfig(home)), false)
}

// writeFileAtomic writes data to file atomically. With replace false an
// existing file wins: two canga started at once on a fresh home must not
// clobber each other (or a user's file).
func writeFileAtomic(file string, data []byte, replace bool) error {
	write := func(f *os.File) error {
		_, err := f.Write(data)
		return err
	}
	var err error
	if replace {
		err = atomicfile.Write(file, 0o644, write)
	} else if err = atomicfile.Create(file, 0o644, write); errors.Is(err, fs.ErrExist) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("config: %s: %w", file, pathErr(err))
	}
	return nil
}

// expandTilde expands a leading "~" or "~/" to the user's home directory.
func expandTilde(p string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		if strings.HasPrefix(p, "~") {
			return "", errors.New("~user paths are not supported")
		}
		return p, nil
	}
	uh, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(uh, p[1:]), nil
}

// ValidateRepoName checks a repository name: a letter or digit, then
// letters, digits, '.', '_' or '-'. No ':' so that REPO:NAME splits.
func ValidateRepoName(name string) error {
	if why := repoNameProblem(name); why != "" {
		return fmt.Errorf("%w: repository name %s: %s", ErrConfig, quote(name), why)
	}
	return nil
}

func repoNameProblem(name string) string {
	if name == "" {
		return "empty"
	}
	if len(name) > 64 {
		return "longer than 64 characters"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return "want a letter or digit, then letters, digits, '.', '_' or '-'"
		}
	}
	return ""
}

// parse reads config.yaml; it also returns the document, which
// AddRepo edits so that comments survive.
func parse(home, file string, data []byte) (c *Config, doc *yaml.Node, err error) {
	fail := func(n *yaml.Node, format string, args ...any) error {
		line := 0
		if n != nil {
			line = n.Line
		}
		return &ConfigError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	defer func() {
		if r := recover(); r != nil {
			c, doc, err = nil, nil, fail(nil, "YAML parser failed: %v", r)
		}
	}()
	root, line, err := yamlnode.DecodeOne(data)
	if err != nil {
		return nil, nil, &ConfigError{File: file, Line: line, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	// Checking the keys also refuses duplicates and non-scalar keys.
	if _, err := yamlnode.Clean(root, yamlnode.NewBudget(0)); err != nil {
		return nil, nil, fail(root, "%v", err)
	}
	root, _ = yamlnode.Deref(root)
	if root.Kind != yaml.MappingNode {
		return nil, nil, fail(root, "want a mapping with default_repo and repos")
	}
	c = &Config{Home: home, File: file}
	var defaultN, reposN *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, _ := yamlnode.Deref(root.Content[i])
		v, _ := yamlnode.Deref(root.Content[i+1])
		var err error
		switch k.Value {
		case "default_repo":
			defaultN = v
		case "repos":
			reposN = v
		case "signing_key":
			c.SigningKey, err = pathValue(home, k.Value, v, fail)
		case "allowed_signers":
			c.AllowedSigners, err = pathValue(home, k.Value, v, fail)
		default:
			return nil, nil, fail(k, "unknown key %s (want default_repo, repos, signing_key, allowed_signers)", quote(k.Value))
		}
		if err != nil {
			return nil, nil, err
		}
	}
	if reposN == nil || yamlnode.IsNull(reposN) {
		return nil, nil, fail(root, "no repos")
	}
	if reposN.Kind != yaml.MappingNode {
		return nil, nil, fail(reposN, "repos: want a mapping of repository names")
	}
	paths := map[string]string{}
	for i := 0; i+1 < len(reposN.Content); i += 2 {
		k, _ := yamlnode.Deref(reposN.Content[i])
		v, _ := yamlnode.Deref(reposN.Content[i+1])
		if why := repoNameProblem(k.Value); why != "" {
			return nil, nil, fail(k, "repository name %s: %s", quote(k.Value), why)
		}
		r, err := parseRepo(home, k.Value, v, fail)
		if err != nil {
			return nil, nil, err
		}
		if other, dup := paths[r.Path]; dup {
			return nil, nil, fail(k, "repositories %s and %s share the path %s", other, r.Name, r.Path)
		}
		paths[r.Path] = r.Name
		c.Repos = append(c.Repos, r)
	}
	if len(c.Repos) == 0 {
		return nil, nil, fail(reposN, "no repos")
	}
	c.DefaultRepo = "default"
	if defaultN != nil {
		if defaultN.Kind != yaml.ScalarNode || yamlnode.IsNull(defaultN) {
			return nil, nil, fail(defaultN, "default_repo: want a repository name")
		}
		c.DefaultRepo = defaultN.Value
	}
	if _, ok := c.repo(c.DefaultRepo); !ok {
		n := defaultN
		if n == nil {
			n = root
		}
		return nil, nil, fail(n, "default_repo %s is not a configured repository", quote(c.DefaultRepo))
	}
	return c, root, nil
}

func parseRepo(home, name string, v *yaml.Node, fail func(*yaml.Node, string, ...any) error) (Repo, error) {
	r := Repo{Name: name}
	if !yamlnode.IsNull(v) && v.Kind != yaml.MappingNode {
		return r, fail(v, "repos.%s: want a mapping with path, url, allowed_signers", name)
	}
	text := func(n *yaml.Node, key string) (string, error) {
		return textValue("repos."+name+"."+key, n, fail)
	}
	path := func(n *yaml.Node, key string) (string, error) {
		return pathValue(home, "repos."+name+"."+key, n, fail)
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, _ := yamlnode.Deref(v.Content[i])
		val, _ := yamlnode.Deref(v.Content[i+1])
		var err error
		switch k.Value {
		case "path":
			r.Path, err = path(val, k.Value)
		case "allowed_signers":
			r.AllowedSigners, err = path(val, k.Value)
		case "url":
			if r.URL, err = text(val, k.Value); err == nil {
				err = checkURL(r.URL)
				if err != nil {
					err = fail(val, "repos.%s.url: %v", name, err)
				}
			}
		case "type":
			// Cangallo's config said type: local|remote; the url says it now.
			var t string
			if t, err = text(val, k.Value); err == nil && t != "local" && t != "remote" {
				err = fail(val, "repos.%s.type: %s: want local or remote", name, quote(t))
			}
		default:
			// A misspelt allowed_signers would silently turn signature
			// checks off: unknown keys are errors.
			err = fail(k, "repos.%s: unknown key %s (want path, url, allowed_signers)", name, quote(k.Value))
		}
		if err != nil {
			return r, err
		}
	}
	if r.Path == "" {
		r.Path = filepath.Join(home, name)
	}
	return r, nil
}

// textValue reads a non-empty string; key names it in the error.
func textValue(key string, n *yaml.Node, fail func(*yaml.Node, string, ...any) error) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Value == "" || yamlnode.IsNull(n) {
		return "", fail(n, "%s: want a non-empty string", key)
	}
	return n.Value, nil
}

// pathValue reads a path: "~" expanded, relative to the home.
func pathValue(home, key string, n *yaml.Node, fail func(*yaml.Node, string, ...any) error) (string, error) {
	s, err := textValue(key, n, fail)
	if err != nil {
		return "", err
	}
	p, err := expandTilde(s)
	if err != nil {
		return "", fail(n, "%s: %s: %v", key, quote(s), err)
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(home, p)
	}
	return filepath.Clean(p), nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%s: %v", quote(s), err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%s: want an http:// or https:// URL", quote(s))
	}
	return nil
}

func (c *Config) repo(name string) (Repo, bool) {
	for _, r := range c.Repos {
		if r.Name == name {
			return r, true
		}
	}
	return Repo{}, false
}

// Repo returns the configured repository name, or the default one when
// name is empty.
func (c *Config) Repo(name string) (Repo, error) {
	if name == "" {
		name = c.DefaultRepo
	}
	r, ok := c.repo(name)
	if !ok {
		return Repo{}, &notFoundError{name: name}
	}
	return r, nil
}

// SearchOrder lists the repository names in the order names are
// resolved (SPEC §4): the default first, then the others in file order.
func (c *Config) SearchOrder() []string {
	order := []string{c.DefaultRepo}
	for _, r := range c.Repos {
		if r.Name != c.DefaultRepo {
			order = append(order, r.Name)
		}
	}
	return order
}

// AddRepo adds a repository at the end of config.yaml, keeping the rest
// of the file (comments included), and reloads c from the result. The file
// is replaced atomically; concurrent edits of config.yaml are not merged.
func (c *Config) AddRepo(name string, spec Spec) error {
	if err := ValidateRepoName(name); err != nil {
		return err
	}
	data, err := readFile(c.File)
	if err != nil {
		return err
	}
	out, next, err := addRepo(c.Home, c.File, data, name, spec)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(c.File, out, true); err != nil {
		return err
	}
	*c = *next
	return nil
}

// spellFlowNulls writes out the empty nulls of flow collections: yaml.v3
// encodes the null of "{bare: }" as an empty quoted string, which would
// turn a repository with no settings into an invalid one.
func spellFlowNulls(n *yaml.Node, flow bool) {
	flow = flow || n.Style&yaml.FlowStyle != 0
	if flow && yamlnode.IsNull(n) && n.Value == "" {
		n.Value = "null"
	}
	for _, c := range n.Content {
		spellFlowNulls(c, flow)
	}
}

// addRepo adds a repository to the config.yaml data and returns the new
// file and what it says; nothing is written.
func addRepo(home, file string, data []byte, name string, spec Spec) ([]byte, *Config, error) {
	fresh, root, err := parse(home, file, data)
	if err != nil {
		return nil, nil, err
	}
	if _, ok := fresh.repo(name); ok {
		return nil, nil, fmt.Errorf("%w: repository %s in %s", ErrExists, name, file)
	}
	var repos *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "repos" {
			repos, _ = yamlnode.Deref(root.Content[i+1])
		}
	}
	m := yamlnode.Map()
	if spec.URL != "" {
		yamlnode.AddPair(m, "url", yamlnode.Str(spec.URL))
	}
	if spec.Path != "" {
		yamlnode.AddPair(m, "path", yamlnode.Str(spec.Path))
	}
	if spec.AllowedSigners != "" {
		yamlnode.AddPair(m, "allowed_signers", yamlnode.Str(spec.AllowedSigners))
	}
	yamlnode.AddPair(repos, name, m)
	spellFlowNulls(root, false)

	out, err := yamlnode.Encode(root)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %s: %w", file, err)
	}
	next, _, err := parse(home, file, out)
	if err != nil {
		return nil, nil, err // the new repository is what is wrong: nothing written
	}
	return out, next, nil
}
