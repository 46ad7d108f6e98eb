package main

// Shell completion. The scripts `canga completion SHELL` prints are small:
// on every TAB they run `canga __complete -- WORD...` (the words after
// `canga`, the last one being the word under the cursor, maybe empty) and
// offer what it prints. The candidates come from kong's model of the
// command line, so that a new command or flag completes without touching
// the scripts, and from the local repositories for image names and tags
// (index.yaml files and remote caches: never the network).
//
// The protocol: one candidate a line, "VALUE" or "VALUE\tDESCRIPTION";
// a line ":file" or ":dir" asks the shell to complete file or directory
// names as well; ":nospace" asks it not to add a space after the one
// candidate (a prefix such as oci:// or REPO:).

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/cangallo/canga/config"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/registry"
	"github.com/cangallo/canga/repo"
	"github.com/opencontainers/go-digest"
)

//go:embed completion/canga.bash
var bashCompletion string

//go:embed completion/canga.zsh
var zshCompletion string

//go:embed completion/canga.fish
var fishCompletion string

type completionCmd struct {
	Shell string `arg:"" name:"SHELL" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

func (c *completionCmd) Help() string {
	return `Prints a completion script for SHELL on standard output. It completes
commands, flags and their values, image names and tags of the configured
repositories, repository names, and file names where a file is expected.

  bash:  source <(canga completion bash)      # in ~/.bashrc
  zsh:   canga completion zsh > "${fpath[1]}/_canga"
  fish:  canga completion fish > ~/.config/fish/completions/canga.fish

The Debian package installs all three where the shells look for them.`
}

func (c *completionCmd) Run(e *env) error {
	script := map[string]string{"bash": bashCompletion, "zsh": zshCompletion, "fish": fishCompletion}[c.Shell]
	_, err := fmt.Fprint(e.stdout, script)
	return err
}

// completeCmd is the hidden command the completion scripts call.
type completeCmd struct {
	Words []string `arg:"" optional:"" passthrough:"" name:"WORD" help:"The words after canga; the last is the one to complete."`
}

func (c *completeCmd) Run(kctx *kong.Context, e *env) error {
	words := c.Words
	if len(words) > 0 && words[0] == "--" {
		// kong keeps the -- that lets the words start with a dash.
		words = words[1:]
	}
	if len(words) == 0 {
		words = []string{""}
	}
	for _, line := range complete(kctx.Model, e.home, words) {
		fmt.Fprintln(e.stdout, line)
	}
	return nil
}

// What a positional argument or a flag value is, by its name or
// placeholder: the model says FILE, IMAGE, REPO..., and so completes them.
type valueKind int

const (
	kindNone valueKind = iota
	kindFile
	kindDir
	kindImage       // an image of the repositories: tags, REPO:TAG, short IDs
	kindImageOrFile // create --backing
	kindPullable    // pull: an image of a remote, or oci://
	kindRepo        // a configured repository
	kindRepoOrOCI   // list: a repository, or oci://
	kindTag         // an existing tag
	kindOCI         // oci://HOST/NAME
	kindCommand     // help COMMAND
	kindArch        // push --platform
)

var kindByName = map[string]valueKind{
	"FILE": kindFile, "SRC": kindFile, "DST": kindFile, "OUTPUT": kindFile,
	"CANGAFILE": kindFile, "KEY": kindFile, "DIR": kindDir,
	"IMAGE": kindImage, "IMG_OR_FILE": kindImageOrFile,
	"REPO": kindRepo, "TAG": kindTag, "REFERENCE": kindOCI, "COMMAND": kindCommand,
	"ARCH": kindArch,
}

// positionalKind is what the command's positional argument v takes.
func positionalKind(n *kong.Node, v *kong.Value) valueKind {
	switch {
	case n.Name == "pull" && v.Name == "NAME":
		return kindPullable
	case n.Name == "list" && v.Name == "REPO":
		return kindRepoOrOCI
	case n.Name == "tag" && v.Name == "TAG":
		return kindNone // a new tag: nothing to offer
	}
	return kindByName[v.Name]
}

func flagKind(f *kong.Flag) valueKind {
	if f.Name == "tag" {
		return kindNone // a new name
	}
	if k, ok := kindByName[f.PlaceHolder]; ok {
		return k
	}
	return kindNone
}

// complete returns the candidates for the last of words, the words that
// follow "canga" on a command line.
func complete(app *kong.Application, home string, words []string) []string {
	cur := words[len(words)-1]
	node := app.Node
	var pending *kong.Flag // a flag waiting for its value
	pos := 0               // positional arguments of node seen so far
	dashdash := false
	for _, w := range words[:len(words)-1] {
		switch {
		case pending != nil:
			if pending.Name == "home" {
				home = w
			}
			pending = nil
		case w == "--" && !dashdash:
			dashdash = true
		case strings.HasPrefix(w, "--") && !dashdash:
			name, val, inline := strings.Cut(w[2:], "=")
			f := findFlag(node, func(f *kong.Flag) bool { return f.Name == name })
			switch {
			case f == nil:
			case inline && f.Name == "home":
				home = val
			case !inline && takesValue(f):
				pending = f
			}
		case strings.HasPrefix(w, "-") && len(w) > 1 && !dashdash:
			// -abc: only the last short flag can take the next word.
			r := rune(w[len(w)-1])
			if f := findFlag(node, func(f *kong.Flag) bool { return f.Short == r }); f != nil && takesValue(f) && len(w) == 2 {
				pending = f
			}
		default:
			if pos == 0 {
				if child := findChild(node, w); child != nil {
					node = child
					continue
				}
			}
			pos++
		}
	}

	out := candidates(app, home, node, pending, pos, dashdash, cur)
	// A prefix to type on (oci://, REPO:) takes no space after it.
	var real []string
	for _, c := range out {
		if !strings.HasPrefix(c, ":") {
			real = append(real, c)
		}
	}
	if len(real) == 1 && (strings.HasSuffix(real[0], ":") || strings.HasSuffix(real[0], "/")) {
		out = append(out, ":nospace")
	}
	return out
}

func candidates(app *kong.Application, home string, node *kong.Node, pending *kong.Flag, pos int, dashdash bool, cur string) []string {
	var out []string
	switch {
	case pending != nil:
		out = valueCandidates(app, home, pending.Value, flagKind(pending), cur)
	case strings.HasPrefix(cur, "--") && strings.Contains(cur, "=") && !dashdash:
		name, val, _ := strings.Cut(cur[2:], "=")
		if f := findFlag(node, func(f *kong.Flag) bool { return f.Name == name }); f != nil && takesValue(f) {
			for _, c := range valueCandidates(app, home, f.Value, flagKind(f), val) {
				if strings.HasPrefix(c, ":") {
					out = append(out, c)
				} else {
					out = append(out, "--"+name+"="+c)
				}
			}
		}
	case strings.HasPrefix(cur, "-") && !dashdash:
		out = flagCandidates(node, cur)
	default:
		if pos == 0 && hasCommands(node) {
			out = commandCandidates(node, cur)
			break
		}
		if v := positionalAt(node, pos); v != nil {
			out = valueCandidates(app, home, v, positionalKind(node, v), cur)
		}
	}
	return out
}

func takesValue(f *kong.Flag) bool { return !f.IsBool() && !f.IsCounter() }

// findFlag finds a flag of node or of its parents (global flags).
func findFlag(node *kong.Node, match func(*kong.Flag) bool) *kong.Flag {
	for _, group := range node.AllFlags(false) {
		for _, f := range group {
			if match(f) {
				return f
			}
		}
	}
	return nil
}

func findChild(node *kong.Node, name string) *kong.Node {
	for _, c := range node.Children {
		if c.Type == kong.CommandNode && (c.Name == name || slices.Contains(c.Aliases, name)) {
			return c
		}
	}
	return nil
}

func hasCommands(node *kong.Node) bool {
	for _, c := range node.Children {
		if c.Type == kong.CommandNode {
			return true
		}
	}
	return false
}

func positionalAt(node *kong.Node, pos int) *kong.Value {
	if len(node.Positional) == 0 {
		return nil
	}
	if pos < len(node.Positional) {
		return node.Positional[pos]
	}
	if last := node.Positional[len(node.Positional)-1]; last.IsCumulative() {
		return last
	}
	return nil
}

func commandCandidates(node *kong.Node, cur string) []string {
	var out []string
	for _, c := range node.Children {
		if c.Type == kong.CommandNode && !c.Hidden && strings.HasPrefix(c.Name, cur) {
			out = append(out, c.Name+"\t"+oneLine(c.Help))
		}
	}
	return out
}

func flagCandidates(node *kong.Node, cur string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(name, help string) {
		if strings.HasPrefix(name, cur) && !seen[name] {
			seen[name] = true
			out = append(out, name+"\t"+oneLine(help))
		}
	}
	groups := node.AllFlags(true)
	// The command's own flags first, then its parents' (global) ones.
	for i := len(groups) - 1; i >= 0; i-- {
		for _, f := range groups[i] {
			add("--"+f.Name, f.Help)
			if f.Tag != nil && f.Tag.Negatable != "" {
				add("--no-"+f.Name, f.Help)
			}
		}
	}
	add("--help", "Show context-sensitive help.")
	return out
}

// valueCandidates completes a value of v (a positional argument or a
// flag's value) of kind k.
func valueCandidates(app *kong.Application, home string, v *kong.Value, k valueKind, cur string) []string {
	if v.Enum != "" {
		var out []string
		for _, s := range v.EnumSlice() {
			if s != "" && strings.HasPrefix(s, cur) {
				out = append(out, s)
			}
		}
		return out
	}
	switch k {
	case kindFile:
		return []string{":file"}
	case kindDir:
		return []string{":dir"}
	case kindCommand:
		return commandCandidates(app.Node, cur)
	case kindArch:
		return filterPrefix([]string{"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"}, cur)
	case kindOCI:
		return ociPrefix(cur)
	}
	lib := loadNames(home)
	switch k {
	case kindImage:
		return lib.images(cur, false)
	case kindImageOrFile:
		return append(lib.images(cur, false), ":file")
	case kindPullable:
		return append(lib.images(cur, true), ociPrefix(cur)...)
	case kindRepo:
		return filterPrefix(lib.repos, cur)
	case kindRepoOrOCI:
		return append(filterPrefix(lib.repos, cur), ociPrefix(cur)...)
	case kindTag:
		return lib.tags(cur)
	}
	return nil
}

func ociPrefix(cur string) []string {
	if strings.HasPrefix(registry.Scheme, cur) && cur != registry.Scheme {
		return []string{registry.Scheme}
	}
	return nil
}

func filterPrefix(list []string, cur string) []string {
	var out []string
	for _, s := range list {
		if strings.HasPrefix(s, cur) {
			out = append(out, s)
		}
	}
	return out
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// names is what the local repositories hold, for completion.
type names struct {
	repos []string // in search order
	// per repository, in search order
	byRepo []repoNames
}

type repoNames struct {
	name   string
	remote bool
	tags   []string
	ids    []string // full image IDs
}

// loadNames reads the home's repositories without creating anything (a
// TAB must not make a home) and without the network: an unreadable
// repository offers nothing.
func loadNames(home string) *names {
	n := &names{}
	dir, err := config.Home(home)
	if err != nil {
		return n
	}
	if _, err := os.Stat(filepath.Join(dir, config.FileName)); err != nil {
		return n
	}
	h, err := repo.OpenHome(dir)
	if err != nil {
		return n
	}
	n.repos = h.Config.SearchOrder()
	for _, name := range n.repos {
		r, err := h.Repo(name)
		if err != nil {
			continue
		}
		ix, err := r.Index()
		if err != nil {
			continue
		}
		rn := repoNames{name: name, remote: r.Remote()}
		for t := range ix.Tags {
			rn.tags = append(rn.tags, t)
		}
		sort.Strings(rn.tags)
		for _, id := range ix.IDs() {
			rn.ids = append(rn.ids, id.String())
		}
		n.byRepo = append(n.byRepo, rn)
	}
	return n
}

// images offers tags, REPO:TAG once a colon is typed (REPO: alone before,
// to type on), and short IDs once cur looks like hex. With remotesOnly
// (pull), only the images of remote repositories.
func (n *names) images(cur string, remotesOnly bool) []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] && strings.HasPrefix(s, cur) {
			seen[s] = true
			out = append(out, s)
		}
	}
	withRepo := strings.Contains(cur, ":")
	hexPrefix := strings.TrimPrefix(cur, "sha256:")
	isHex := hexPrefix != "" && strings.Trim(hexPrefix, "0123456789abcdef") == ""
	for _, rn := range n.byRepo {
		if remotesOnly && !rn.remote {
			continue
		}
		for _, t := range rn.tags {
			add(t)
			if withRepo {
				add(rn.name + ":" + t)
			}
		}
		if !withRepo && len(rn.tags) > 0 {
			add(rn.name + ":")
		}
		if isHex {
			for _, id := range rn.ids {
				if strings.HasPrefix(strings.TrimPrefix(id, "sha256:"), hexPrefix) {
					if strings.HasPrefix(cur, "sha256:") {
						add(id)
					} else {
						add(index.ShortID(digest.Digest(id)))
					}
				}
			}
		}
	}
	return out
}

func (n *names) tags(cur string) []string {
	seen := map[string]bool{}
	var out []string
	for _, rn := range n.byRepo {
		for _, t := range rn.tags {
			for _, s := range []string{t, rn.name + ":" + t} {
				if !seen[s] && strings.HasPrefix(s, cur) && (strings.Contains(cur, ":") || s == t) {
					seen[s] = true
					out = append(out, s)
				}
			}
		}
	}
	return out
}
