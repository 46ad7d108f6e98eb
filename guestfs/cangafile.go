package guestfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrInvalid is wrapped by every error about the content of a Cangafile.
var ErrInvalid = errors.New("guestfs: invalid Cangafile")

// ErrInternal means canga met a bug of its own (a panic) while it ran a
// tool.
var ErrInternal = errors.New("guestfs: internal error")

// MaxCangafileSize bounds what [ParseFile] reads: a Cangafile is a short
// list of tasks, and big files belong in a `copy` source.
const MaxCangafileSize = 1 << 20

// maxErrors bounds how many problems one parse reports.
const maxErrors = 50

// Kind names what a [Task] does.
type Kind int

// The task kinds of a Cangafile.
const (
	KindCopy Kind = iota + 1
	KindRun
	KindChange
	KindDelete
	KindPassword
)

var kindNames = map[Kind]string{
	KindCopy:     "copy",
	KindRun:      "run",
	KindChange:   "change",
	KindDelete:   "delete",
	KindPassword: "password",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Task is one step of a build. Which fields are set depends on Kind.
type Task struct {
	Kind Kind
	// Line and Column locate the task (for a run command: that command) in
	// the Cangafile; zero for tasks made by hand.
	Line, Column int

	Src  string // copy: absolute host path
	Dest string // copy: guest directory

	Command string // run: one shell command (may span lines)

	File   string // change: guest file
	Regexp string // change: pattern, applied to each line
	Text   string // change: literal replacement

	Path string // delete: guest path, globs allowed

	User     string // password
	Password string // password: the new password, unless Disabled
	Disabled bool   // password: disable password login
}

// Cangafile is a parsed Cangafile.
type Cangafile struct {
	Parent      string
	Description string
	OS          string
	Tag         string
	// Tasks in execution order: the older form's files, then its run
	// commands, then tasks. A run with several commands is one Task each.
	Tasks []Task
	// Dir is the absolute directory that relative copy sources are read from.
	Dir string

	doc *yaml.Node
	raw map[string]any
}

// Raw returns the Cangafile as given, as generic YAML values, for storing in
// an index entry's `cangafile` field.
func (c *Cangafile) Raw() map[string]any { return c.raw }

// Node returns the Cangafile's YAML document node (comments and key order
// kept). Callers must not modify it.
func (c *Cangafile) Node() *yaml.Node { return c.doc }

// ParseError is one problem in a Cangafile, located by line, column and key
// path (such as `tasks[2].change.regexp`).
type ParseError struct {
	Name         string // file name, or "Cangafile"
	Line, Column int    // 1-based; 0 when unknown
	Key          string // key path; empty for the whole document
	Msg          string
}

func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString("guestfs: ")
	b.WriteString(e.Name)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap makes every ParseError match [ErrInvalid].
func (e *ParseError) Unwrap() error { return ErrInvalid }

// ParseFile reads and parses the Cangafile at path; relative copy sources
// are resolved against path's directory.
func ParseFile(path string) (*Cangafile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("guestfs: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxCangafileSize+1))
	if err != nil {
		return nil, fmt.Errorf("guestfs: read %s: %w", path, err)
	}
	if len(data) > MaxCangafileSize {
		return nil, &ParseError{Name: path, Msg: fmt.Sprintf("larger than %d bytes", MaxCangafileSize)}
	}
	return parse(data, filepath.Dir(path), path)
}

// Parse parses a Cangafile. dir is the directory relative copy sources are
// resolved against (the Cangafile's directory). Every problem found is
// reported, each as a [*ParseError] (joined with [errors.Join]).
func Parse(data []byte, dir string) (*Cangafile, error) {
	return parse(data, dir, "Cangafile")
}

func parse(data []byte, dir, name string) (*Cangafile, error) {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("guestfs: %w", err)
	}
	p := &parser{name: name, dir: absDir}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ParseError{Name: name, Msg: "empty document: a Cangafile needs at least `parent` and a task"}
		}
		return nil, &ParseError{Name: name, Msg: err.Error()}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, &ParseError{Name: name, Msg: err.Error()}
		}
		return nil, &ParseError{Name: name, Line: extra.Line, Column: extra.Column, Msg: "more than one YAML document"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	root = resolve(root)
	if root.Kind != yaml.MappingNode {
		p.errorf(root, "", "a Cangafile is a map of keys (parent, tasks, ...), not %s", describe(root))
		return nil, p.err()
	}

	c := &Cangafile{Dir: absDir, doc: &doc}
	var files, oldRun, tasks *yaml.Node
	var sawParent bool
	p.mapping(root, "", func(key string, k, v *yaml.Node) {
		switch key {
		case "parent":
			sawParent = true
			c.Parent = p.nonEmpty(v, key)
		case "description":
			c.Description = p.str(v, key, true)
		case "os":
			c.OS = p.str(v, key, true)
		case "tag":
			c.Tag = p.str(v, key, true)
		case "tasks":
			tasks = v
		case "files":
			files = v
		case "run":
			oldRun = v
		default:
			p.unknown(k, "", key, "parent, description, os, tag, tasks, files, run")
		}
	})
	if !sawParent {
		p.errorf(root, "parent", "missing: name the image to build on (any IMAGE name)")
	}
	if files != nil {
		c.Tasks = append(c.Tasks, p.files(files, "files")...)
	}
	if oldRun != nil {
		c.Tasks = append(c.Tasks, p.run(oldRun, "run")...)
	}
	if tasks != nil {
		c.Tasks = append(c.Tasks, p.tasks(tasks, "tasks")...)
	}
	if len(c.Tasks) == 0 && len(p.errs) == 0 {
		at := root
		if tasks != nil {
			at = tasks
		}
		p.errorf(at, "tasks", "nothing to do: no tasks (and no `files` or `run`)")
	}
	p.checkPasswords(c.Tasks)
	if err := p.err(); err != nil {
		return nil, err
	}
	if err := root.Decode(&c.raw); err != nil {
		return nil, &ParseError{Name: name, Msg: err.Error()}
	}
	return c, nil
}

type parser struct {
	name string
	dir  string
	errs []error
}

func (p *parser) errorf(n *yaml.Node, key, format string, args ...any) {
	if len(p.errs) >= maxErrors {
		return
	}
	e := &ParseError{Name: p.name, Key: key, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

func (p *parser) err() error {
	switch len(p.errs) {
	case 0:
		return nil
	case 1:
		return p.errs[0]
	}
	return errors.Join(p.errs...)
}

func (p *parser) unknown(k *yaml.Node, path, key, known string) {
	p.errorf(k, join(path, key), "unknown key %q (known keys: %s)", key, known)
}

// resolve follows YAML aliases (`*name`) to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "empty"
		}
		return fmt.Sprintf("the scalar %q", n.Value)
	}
	return "an unsupported YAML node"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping calls fn for each key of the map n, in document order, after
// checking that keys are unique strings.
func (p *parser) mapping(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || isNull(k) {
			p.errorf(k, path, "keys must be strings, not %s", describe(k))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			p.errorf(k, join(path, k.Value), "repeated key (first at line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		fn(k.Value, k, v)
	}
}

// str returns a scalar's text as written, so `os: 16.04` stays "16.04". A
// null is "" when allowNull, else an error.
func (p *parser) str(n *yaml.Node, key string, allowNull bool) string {
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, key, "must be a string, not %s", describe(n))
		return ""
	}
	if isNull(n) {
		if !allowNull {
			p.errorf(n, key, "missing value")
		}
		return ""
	}
	if strings.ContainsRune(n.Value, 0) {
		p.errorf(n, key, "must not contain a NUL character")
		return ""
	}
	return n.Value
}

// nonEmpty is str for a required value: null and "" are errors.
func (p *parser) nonEmpty(n *yaml.Node, key string) string {
	s := p.str(n, key, false)
	if s == "" && n.Kind == yaml.ScalarNode && !isNull(n) {
		p.errorf(n, key, "must not be empty")
	}
	return s
}

// check reports a task's rendering error at the task's position.
func (p *parser) check(t *Task, at *yaml.Node, key string) bool {
	if err := t.check(); err != nil {
		p.errorf(at, key, "%s", err.Error())
		return false
	}
	return true
}

func (p *parser) tasks(n *yaml.Node, path string) []Task {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, "must be a list of tasks, not %s", describe(n))
		return nil
	}
	var out []Task
	for i, item := range n.Content {
		item = resolve(item)
		ipath := fmt.Sprintf("%s[%d]", path, i)
		if item.Kind != yaml.MappingNode {
			p.errorf(item, ipath, "a task is a map with one key (copy, run, change, delete or password), not %s", describe(item))
			continue
		}
		if len(item.Content) != 2 {
			var keys []string
			for j := 0; j+1 < len(item.Content); j += 2 {
				keys = append(keys, resolve(item.Content[j]).Value)
			}
			found := "none"
			if len(keys) > 0 {
				found = fmt.Sprintf("%d (%s)", len(keys), strings.Join(keys, ", "))
			}
			p.errorf(item, ipath, "a task has exactly one key (copy, run, change, delete or password); found %s", found)
			continue
		}
		k, v := resolve(item.Content[0]), resolve(item.Content[1])
		if k.Kind != yaml.ScalarNode || isNull(k) {
			p.errorf(k, ipath, "keys must be strings, not %s", describe(k))
			continue
		}
		kpath := ipath + "." + k.Value
		switch k.Value {
		case "copy":
			if t, ok := p.copyTask(v, kpath); ok {
				t.Line, t.Column = k.Line, k.Column
				out = append(out, t)
			}
		case "run":
			out = append(out, p.run(v, kpath)...)
		case "change":
			if t, ok := p.changeTask(v, kpath); ok {
				t.Line, t.Column = k.Line, k.Column
				out = append(out, t)
			}
		case "delete":
			t := Task{Kind: KindDelete, Line: k.Line, Column: k.Column, Path: p.nonEmpty(v, kpath)}
			if t.Path != "" && p.check(&t, v, kpath) {
				out = append(out, t)
			}
		case "password":
			if t, ok := p.passwordTask(v, kpath); ok {
				t.Line, t.Column = k.Line, k.Column
				out = append(out, t)
			}
		default:
			p.unknown(k, ipath, k.Value, "copy, run, change, delete, password")
		}
	}
	return out
}

// files parses the older form's list of copies.
func (p *parser) files(n *yaml.Node, path string) []Task {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, `must be a list of copies ("SRC DEST" or {src, dest}), not %s`, describe(n))
		return nil
	}
	var out []Task
	for i, item := range n.Content {
		item = resolve(item)
		if t, ok := p.copyTask(item, fmt.Sprintf("%s[%d]", path, i)); ok {
			t.Line, t.Column = item.Line, item.Column
			out = append(out, t)
		}
	}
	return out
}

func (p *parser) copyTask(n *yaml.Node, path string) (Task, bool) {
	t := Task{Kind: KindCopy}
	var src, dest string
	var srcNode, destNode *yaml.Node = n, n
	switch {
	case n.Kind == yaml.ScalarNode && !isNull(n):
		s := p.str(n, path, false)
		f := strings.Fields(s)
		if len(f) != 2 {
			p.errorf(n, path, `must be "SRC DEST" (two words; for a path with spaces use {src: ..., dest: ...}), not %q`, s)
			return t, false
		}
		src, dest = f[0], f[1]
	case n.Kind == yaml.MappingNode:
		p.mapping(n, path, func(key string, k, v *yaml.Node) {
			switch key {
			case "src":
				src, srcNode = p.nonEmpty(v, join(path, key)), v
			case "dest":
				dest, destNode = p.nonEmpty(v, join(path, key)), v
			default:
				p.unknown(k, path, key, "src, dest")
			}
		})
		if srcNode == n || destNode == n {
			for _, m := range []struct {
				key string
				at  *yaml.Node
			}{{"src", srcNode}, {"dest", destNode}} {
				if m.at == n {
					p.errorf(n, join(path, m.key), "missing")
				}
			}
			return t, false
		}
		if src == "" || dest == "" {
			return t, false
		}
	default:
		p.errorf(n, path, `must be "SRC DEST" or {src: ..., dest: ...}, not %s`, describe(n))
		return t, false
	}

	abs, err := p.hostPath(src)
	if err != nil {
		p.errorf(srcNode, path, "source %q: %s", src, err)
		return t, false
	}
	t.Src, t.Dest = abs, dest
	if err := checkGuestPath("destination", dest); err != nil {
		p.errorf(destNode, path, "%s", err)
		return t, false
	}
	return t, p.check(&t, srcNode, path)
}

// hostPath resolves a copy source against the Cangafile's directory and
// checks that it exists. copy-in archives the last path element with tar, so
// a symlink there would be copied as a link: it is replaced by its target
// when both have the same name, and refused otherwise.
func (p *parser) hostPath(src string) (string, error) {
	abs := src
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(p.dir, src)
	}
	abs = filepath.Clean(abs)
	if abs == string(filepath.Separator) {
		return "", errors.New("cannot copy the host's root directory")
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("does not exist (looked for %s)", abs)
		}
		return "", err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return "", fmt.Errorf("is a symlink that does not resolve: %v", err)
		}
		if filepath.Base(target) != filepath.Base(abs) {
			return "", fmt.Errorf("is a symlink to %s, and copy-in would copy the link itself: name the target instead", target)
		}
		abs = target
	}
	if _, err := os.Stat(abs); err != nil {
		return "", err
	}
	return abs, nil
}

// run parses `run:` (task or older top-level form) into one task per command.
func (p *parser) run(n *yaml.Node, path string) []Task {
	var out []Task
	add := func(cmd string, at *yaml.Node, line, col int, key string) {
		t := Task{Kind: KindRun, Line: line, Column: col, Command: cmd}
		if p.check(&t, at, key) {
			out = append(out, t)
		}
	}
	switch {
	case n.Kind == yaml.ScalarNode && !isNull(n):
		s := p.str(n, path, false)
		// A literal block (`|`) starts on the line after its indicator, and
		// its lines map one to one to the file's.
		first := n.Line
		if n.Style&yaml.LiteralStyle != 0 {
			first++
		}
		cmds, err := splitRunLines(s)
		if err != nil {
			p.errorf(&yaml.Node{Line: first + err.line, Column: n.Column}, path, "%s", err.msg)
			return nil
		}
		for _, c := range cmds {
			line := n.Line
			if n.Style&yaml.LiteralStyle != 0 {
				line = first + c.line
			}
			add(c.cmd, n, line, n.Column, path)
		}
	case n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			item = resolve(item)
			ipath := fmt.Sprintf("%s[%d]", path, i)
			if item.Kind != yaml.ScalarNode || isNull(item) {
				p.errorf(item, ipath, "a command must be a string, not %s", describe(item))
				continue
			}
			cmd := strings.TrimRight(p.str(item, ipath, false), " \t\r\n")
			if strings.TrimSpace(cmd) == "" {
				p.errorf(item, ipath, "empty command")
				continue
			}
			add(cmd, item, item.Line, item.Column, ipath)
		}
	default:
		p.errorf(n, path, "must be a string (one command per line) or a list of commands, not %s", describe(n))
		return nil
	}
	if len(out) == 0 && len(p.errs) == 0 {
		p.errorf(n, path, "no commands")
	}
	return out
}

type runLine struct {
	cmd  string
	line int // 0-based line of the command's first line in the block
}

type runLineError struct {
	line int
	msg  string
}

// splitRunLines splits a `run: |` block into commands: one per non-empty,
// non-comment line; a line ending with an odd number of backslashes is a
// shell line continuation and takes the next line with it.
func splitRunLines(s string) ([]runLine, *runLineError) {
	lines := strings.Split(strings.TrimRight(s, " \t\r\n"), "\n")
	var out []runLine
	for i := 0; i < len(lines); i++ {
		l := strings.TrimRight(lines[i], " \t\r")
		if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		start := i
		cmd := strings.TrimLeft(l, " \t")
		for trailingBackslashes(l)%2 == 1 {
			i++
			if i >= len(lines) {
				return nil, &runLineError{line: start, msg: "the last command ends with a backslash (a line continuation with nothing after it)"}
			}
			l = strings.TrimRight(lines[i], " \t\r")
			cmd += "\n" + l
		}
		out = append(out, runLine{cmd: cmd, line: start})
	}
	return out, nil
}

func trailingBackslashes(s string) int {
	n := 0
	for n < len(s) && s[len(s)-1-n] == '\\' {
		n++
	}
	return n
}

func (p *parser) changeTask(n *yaml.Node, path string) (Task, bool) {
	t := Task{Kind: KindChange}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "must be a map {file: ..., regexp: ..., text: ...}, not %s", describe(n))
		return t, false
	}
	var sawFile, sawRegexp, sawText bool
	p.mapping(n, path, func(key string, k, v *yaml.Node) {
		kp := join(path, key)
		switch key {
		case "file":
			sawFile = true
			t.File = p.nonEmpty(v, kp)
			if err := checkGuestPath("file", t.File); t.File != "" && err != nil {
				p.errorf(v, kp, "%s", err)
				t.File = ""
			}
		case "regexp":
			sawRegexp = true
			t.Regexp = p.nonEmpty(v, kp)
			if _, err := regexp.Compile(t.Regexp); err != nil {
				p.errorf(v, kp, "invalid regexp: %v", err)
				t.Regexp = ""
			}
		case "text":
			sawText = true
			t.Text = p.str(v, kp, true)
		default:
			p.unknown(k, path, key, "file, regexp, text")
		}
	})
	for _, m := range []struct {
		key string
		saw bool
	}{{"file", sawFile}, {"regexp", sawRegexp}, {"text", sawText}} {
		if !m.saw {
			p.errorf(n, join(path, m.key), "missing")
		}
	}
	if !sawFile || !sawRegexp || !sawText || t.File == "" || t.Regexp == "" {
		return t, false
	}
	return t, p.check(&t, n, path)
}

func (p *parser) passwordTask(n *yaml.Node, path string) (Task, bool) {
	t := Task{Kind: KindPassword}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "must be a map {user: ..., password: ...} or {user: ..., disabled: true}, not %s", describe(n))
		return t, false
	}
	var sawUser, sawPassword bool
	bad := false
	p.mapping(n, path, func(key string, k, v *yaml.Node) {
		kp := join(path, key)
		switch key {
		case "user":
			sawUser = true
			t.User = p.nonEmpty(v, kp)
		case "password":
			sawPassword = true
			t.Password = p.nonEmpty(v, kp)
		case "disabled":
			if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
				p.errorf(v, kp, "must be true or false, not %s", describe(v))
				bad = true
				return
			}
			if err := v.Decode(&t.Disabled); err != nil {
				p.errorf(v, kp, "must be true or false: %v", err)
				bad = true
			}
		default:
			p.unknown(k, path, key, "user, password, disabled")
		}
	})
	if !sawUser {
		p.errorf(n, join(path, "user"), "missing")
		return t, false
	}
	if bad {
		return t, false
	}
	switch {
	case sawPassword && t.Disabled:
		p.errorf(n, path, "give either password or disabled: true, not both")
		return t, false
	case !sawPassword && !t.Disabled:
		p.errorf(n, path, "missing password (or disabled: true)")
		return t, false
	}
	if t.User == "" || (sawPassword && t.Password == "") {
		return t, false
	}
	return t, p.check(&t, n, path)
}

// checkPasswords rejects two password tasks for one user: virt-customize
// would refuse the second one only after the guest has booted.
func (p *parser) checkPasswords(tasks []Task) {
	first := map[string]int{}
	for _, t := range tasks {
		if t.Kind != KindPassword {
			continue
		}
		if line, dup := first[t.User]; dup {
			p.errorf(&yaml.Node{Line: t.Line, Column: t.Column}, "password",
				"user %q already has a password task (line %d)", t.User, line)
			continue
		}
		first[t.User] = t.Line
	}
}
