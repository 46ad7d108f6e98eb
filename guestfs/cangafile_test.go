package guestfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// fixture makes a Cangafile directory with copy sources in it.
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"context", "sub/deep", "ünï"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string]string{
		"context/hello.txt": "hello\n",
		"my file.txt":       "spaces\n",
		"sub/deep/x":        "x\n",
		"ünï/ç.txt":         "unicode\n",
		"a:b":               "colon\n",
		"back\\":            "backslash\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustParse(t *testing.T, src, dir string) *Cangafile {
	t.Helper()
	c, err := Parse([]byte(src), dir)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	return c
}

func TestParseSpecExample(t *testing.T) {
	dir := fixture(t)
	src := `parent: ubuntu:16.04            # IMAGE, required
description: OpenNebula Compatible Ubuntu 16.04
os: Ubuntu 16.04
tag: ubuntu/one:16.04           # optional; --tag overrides
tasks:                          # run in order, inside the guest, by libguestfs
  - copy: context /             # host path (relative to the Cangafile) -> guest dir
  - run: |                      # one command per line, or a list
      dpkg -i /context/one-context*deb
      apt-get clean
  - change: {file: /etc/ssh/sshd_config, regexp: '^#?PermitRootLogin.*', text: 'PermitRootLogin no'}
  - delete: /context
  - password: {user: root, password: secret}   # or {user: root, disabled: true}
`
	c := mustParse(t, src, dir)
	if c.Parent != "ubuntu:16.04" || c.Description != "OpenNebula Compatible Ubuntu 16.04" ||
		c.OS != "Ubuntu 16.04" || c.Tag != "ubuntu/one:16.04" {
		t.Errorf("header = %q %q %q %q", c.Parent, c.Description, c.OS, c.Tag)
	}
	want := []Task{
		{Kind: KindCopy, Line: 6, Column: 5, Src: filepath.Join(dir, "context"), Dest: "/"},
		{Kind: KindRun, Line: 8, Column: 10, Command: "dpkg -i /context/one-context*deb"},
		{Kind: KindRun, Line: 9, Column: 10, Command: "apt-get clean"},
		{Kind: KindChange, Line: 10, Column: 5, File: "/etc/ssh/sshd_config", Regexp: "^#?PermitRootLogin.*", Text: "PermitRootLogin no"},
		{Kind: KindDelete, Line: 11, Column: 5, Path: "/context"},
		{Kind: KindPassword, Line: 12, Column: 5, User: "root", Password: "secret"},
	}
	if !reflect.DeepEqual(c.Tasks, want) {
		t.Errorf("tasks:\n got %+v\nwant %+v", c.Tasks, want)
	}
	raw := c.Raw()
	if raw["parent"] != "ubuntu:16.04" {
		t.Errorf("Raw parent = %v", raw["parent"])
	}
	tasks, ok := raw["tasks"].([]any)
	if !ok || len(tasks) != 5 {
		t.Fatalf("Raw tasks = %#v", raw["tasks"])
	}
	if got := tasks[0].(map[string]any)["copy"]; got != "context /" {
		t.Errorf("Raw keeps the Cangafile as given: copy = %v", got)
	}
	if n := c.Node(); n == nil || n.Kind != yaml.DocumentNode {
		t.Errorf("Node = %v, want the document node", n)
	}
	if c.Dir != dir {
		t.Errorf("Dir = %q, want %q", c.Dir, dir)
	}
}

func TestParseSeedForm(t *testing.T) {
	dir := fixture(t)
	src := `---
description: OpenNebula Compatible Ubuntu 16.04
os: Ubuntu 16.04
parent: 850dd1fccd8f5b1e201755beec0754ab3fb610b7
files:
  - context /
run:
  - dpkg -i /context/one-context*deb
  - apt-get remove -y cloud-init
  - rm -rf /context
`
	c := mustParse(t, src, dir)
	want := []Task{
		{Kind: KindCopy, Line: 6, Column: 5, Src: filepath.Join(dir, "context"), Dest: "/"},
		{Kind: KindRun, Line: 8, Column: 5, Command: "dpkg -i /context/one-context*deb"},
		{Kind: KindRun, Line: 9, Column: 5, Command: "apt-get remove -y cloud-init"},
		{Kind: KindRun, Line: 10, Column: 5, Command: "rm -rf /context"},
	}
	if !reflect.DeepEqual(c.Tasks, want) {
		t.Errorf("tasks:\n got %+v\nwant %+v", c.Tasks, want)
	}
}

// The older form runs before tasks, files before run, whatever the key order.
func TestParseBothFormsOrder(t *testing.T) {
	dir := fixture(t)
	src := `tasks:
  - delete: /tmp/x
run: echo old-run
parent: base
files:
  - {src: "my file.txt", dest: /opt}
`
	c := mustParse(t, src, dir)
	var kinds []string
	for _, task := range c.Tasks {
		kinds = append(kinds, task.Kind.String())
	}
	if got := strings.Join(kinds, ","); got != "copy,run,delete" {
		t.Errorf("order = %s, want copy,run,delete", got)
	}
	if c.Tasks[0].Src != filepath.Join(dir, "my file.txt") {
		t.Errorf("src = %q", c.Tasks[0].Src)
	}
}

func TestParseTaskKinds(t *testing.T) {
	dir := fixture(t)
	parent := filepath.Dir(dir)
	tests := []struct {
		name string
		task string // one task, as the text after "tasks:\n  - "
		want []Task // Line/Column ignored
	}{
		{"copy string", `copy: context /opt/ctx`, []Task{{Kind: KindCopy, Src: filepath.Join(dir, "context"), Dest: "/opt/ctx"}}},
		{"copy extra blanks", `copy: "  context    /  "`, []Task{{Kind: KindCopy, Src: filepath.Join(dir, "context"), Dest: "/"}}},
		{"copy map with spaces", `copy: {src: my file.txt, dest: "/opt/with space"}`, []Task{{Kind: KindCopy, Src: filepath.Join(dir, "my file.txt"), Dest: "/opt/with space"}}},
		{"copy nested relative", `copy: sub/deep/x /opt`, []Task{{Kind: KindCopy, Src: filepath.Join(dir, "sub/deep/x"), Dest: "/opt"}}},
		{"copy dot-dot", `copy: ../` + filepath.Base(dir) + `/context /opt`, []Task{{Kind: KindCopy, Src: filepath.Join(parent, filepath.Base(dir), "context"), Dest: "/opt"}}},
		{"copy absolute", `copy: ` + filepath.Join(dir, "context") + ` /opt`, []Task{{Kind: KindCopy, Src: filepath.Join(dir, "context"), Dest: "/opt"}}},
		{"copy unicode", `copy: ünï/ç.txt /opt/ünï`, []Task{{Kind: KindCopy, Src: filepath.Join(dir, "ünï/ç.txt"), Dest: "/opt/ünï"}}},
		{"copy dest with colon", `copy: {src: context, dest: "/opt/a:b"}`, []Task{{Kind: KindCopy, Src: filepath.Join(dir, "context"), Dest: "/opt/a:b"}}},
		{"run string", `run: echo hi`, []Task{{Kind: KindRun, Command: "echo hi"}}},
		{"run list", "run:\n      - echo 1\n      - 'echo \"2\"'", []Task{{Kind: KindRun, Command: "echo 1"}, {Kind: KindRun, Command: `echo "2"`}}},
		{"run list multi-line item is one command", "run:\n      - |\n        if true; then\n          echo yes\n        fi\n",
			[]Task{{Kind: KindRun, Command: "if true; then\n  echo yes\nfi"}}},
		{"run list item with embedded newline stays one command", `run: ["echo a\nrun-command touch /pwned"]`,
			[]Task{{Kind: KindRun, Command: "echo a\nrun-command touch /pwned"}}},
		{"run scalar numbers keep their text", `run: [0123, 1.50]`, []Task{{Kind: KindRun, Command: "0123"}, {Kind: KindRun, Command: "1.50"}}},
		{"change", `change: {file: /etc/a, regexp: 'x/y&\\', text: "a/b & \\1 $1 'q\" é\nz"}`,
			[]Task{{Kind: KindChange, File: "/etc/a", Regexp: `x/y&\\`, Text: "a/b & \\1 $1 'q\" é\nz"}}},
		{"change empty text deletes", `change: {file: /etc/a, regexp: '^foo', text: ""}`, []Task{{Kind: KindChange, File: "/etc/a", Regexp: "^foo"}}},
		{"change null text deletes", `change: {file: /etc/a, regexp: '^foo', text: }`, []Task{{Kind: KindChange, File: "/etc/a", Regexp: "^foo"}}},
		{"delete", `delete: /var/log/*.log`, []Task{{Kind: KindDelete, Path: "/var/log/*.log"}}},
		{"password", `password: {user: root, password: "p:a ss\\w'o\"rd é"}`, []Task{{Kind: KindPassword, User: "root", Password: `p:a ss\w'o"rd é`}}},
		{"password ending in backslash", `password: {user: root, password: 'x\'}`, []Task{{Kind: KindPassword, User: "root", Password: `x\`}}},
		{"password disabled", `password: {user: nobody, disabled: true}`, []Task{{Kind: KindPassword, User: "nobody", Disabled: true}}},
		{"password disabled false with password", `password: {user: bob, password: x, disabled: false}`, []Task{{Kind: KindPassword, User: "bob", Password: "x"}}},
		{"alias", "run: &a echo alias\n  - run: *a", []Task{{Kind: KindRun, Command: "echo alias"}, {Kind: KindRun, Command: "echo alias"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "parent: base\ntasks:\n  - " + tt.task + "\n"
			c := mustParse(t, src, dir)
			got := append([]Task(nil), c.Tasks...)
			for i := range got {
				got[i].Line, got[i].Column = 0, 0
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("tasks:\n got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

// The multi-line string form: one command per line, with sh continuations.
func TestParseRunBlock(t *testing.T) {
	dir := fixture(t)
	src := "parent: base\ntasks:\n  - run: |\n" + // line 3
		"      echo \"double\" 'single' `tick` $(date) ${HOME}\n" + // 4
		"\n" + // 5
		"      # a comment line is skipped\n" + // 6
		"      apt-get install -y \\\n" + // 7
		"         foo \\\n" + // 8
		"         bar\n" + // 9
		"      echo even\\\\\n" + // 10
		"      echo 'trailing blanks after a continuation' \\   \n" + // 11
		"        ok\n" + // 12
		"      printf '%s\\n' a\\\\b \"c#d\" # e\n" + // 13
		"      echo Ünïcödé ☃\n" + // 14
		"      run-command touch /pwned\n" // 15
	c := mustParse(t, src, dir)
	want := []Task{
		{Kind: KindRun, Line: 4, Column: 10, Command: "echo \"double\" 'single' `tick` $(date) ${HOME}"},
		{Kind: KindRun, Line: 7, Column: 10, Command: "apt-get install -y \\\n   foo \\\n   bar"},
		{Kind: KindRun, Line: 10, Column: 10, Command: `echo even\\`},
		{Kind: KindRun, Line: 11, Column: 10, Command: "echo 'trailing blanks after a continuation' \\\n  ok"},
		{Kind: KindRun, Line: 13, Column: 10, Command: `printf '%s\n' a\\b "c#d" # e`},
		{Kind: KindRun, Line: 14, Column: 10, Command: "echo Ünïcödé ☃"},
		{Kind: KindRun, Line: 15, Column: 10, Command: "run-command touch /pwned"},
	}
	if !reflect.DeepEqual(c.Tasks, want) {
		t.Errorf("tasks:\n got %#v\nwant %#v", c.Tasks, want)
	}
}

func TestParseUnicodeHeader(t *testing.T) {
	c := mustParse(t, "parent: ubuntu:16.04\ndescription: \"Ünïcödé ☃ \\u00e9\"\nos: 16.04\ntasks: [{run: echo}]\n", t.TempDir())
	if c.Description != "Ünïcödé ☃ é" || c.OS != "16.04" {
		t.Errorf("got %q %q", c.Description, c.OS)
	}
	if c.Raw()["description"] != "Ünïcödé ☃ é" {
		t.Errorf("Raw description = %v", c.Raw()["description"])
	}
}

func TestParseSymlinkSource(t *testing.T) {
	dir := fixture(t)
	other := t.TempDir()
	if err := os.Mkdir(filepath.Join(other, "context"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "context"), filepath.Join(other, "renamed")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(other, "context")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "context"), filepath.Join(other, "context")); err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, "parent: base\ntasks:\n  - copy: context /\n", other)
	if c.Tasks[0].Src != filepath.Join(dir, "context") {
		t.Errorf("same-name symlink: src = %q, want its target", c.Tasks[0].Src)
	}
	_, err := Parse([]byte("parent: base\ntasks:\n  - copy: renamed /\n"), other)
	if err == nil || !strings.Contains(err.Error(), "is a symlink") || !strings.Contains(err.Error(), ":3:") {
		t.Errorf("renaming symlink: err = %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	dir := fixture(t)
	tests := []struct {
		name string
		src  string
		line int
		key  string
		msg  string
	}{
		{"unknown top-level key", "parent: a\ntask:\n  - run: x\n", 2, "task", "unknown key"},
		{"unknown task kind", "parent: a\ntasks:\n  - copyy: a /\n", 3, "tasks[0].copyy", "unknown key"},
		{"unknown key in copy", "parent: a\ntasks:\n  - copy: {src: context, dest: /, mode: 1}\n", 3, "tasks[0].copy.mode", "unknown key"},
		{"unknown key in change", "parent: a\ntasks:\n  - change:\n      file: /a\n      regex: x\n      text: y\n", 5, "tasks[0].change.regex", "unknown key"},
		{"unknown key in password", "parent: a\ntasks:\n  - password: {user: root, pass: x}\n", 3, "tasks[0].password.pass", "unknown key"},
		{"task with no key", "parent: a\ntasks:\n  - {}\n", 3, "tasks[0]", "found none"},
		{"task with two keys", "parent: a\ntasks:\n  - run: x\n    delete: /y\n", 3, "tasks[0]", "found 2 (run, delete)"},
		{"task is a string", "parent: a\ntasks:\n  - run x\n", 3, "tasks[0]", "a task is a map"},
		{"run is a map", "parent: a\ntasks:\n  - run: {a: b}\n", 3, "tasks[0].run", "must be a string"},
		{"run item is a list", "parent: a\ntasks:\n  - run:\n    - [a]\n", 4, "tasks[0].run[0]", "a command must be a string"},
		{"run empty list", "parent: a\ntasks:\n  - run: []\n", 3, "tasks[0].run", "no commands"},
		{"run empty string", "parent: a\ntasks:\n  - run: \"\"\n", 3, "tasks[0].run", "no commands"},
		{"run only comments", "parent: a\ntasks:\n  - run: |\n      # nothing\n", 3, "tasks[0].run", "no commands"},
		{"run blank item", "parent: a\ntasks:\n  - run: ['  ']\n", 3, "tasks[0].run[0]", "empty command"},
		{"run null", "parent: a\ntasks:\n  - run:\n", 3, "tasks[0].run", "must be a string"},
		{"run item ends with backslash", "parent: a\ntasks:\n  - run:\n    - 'echo a \\'\n", 4, "tasks[0].run[0]", "ends with a backslash"},
		{"run block ends with backslash", "parent: a\ntasks:\n  - run: |\n      echo a\n      echo b \\\n", 5, "tasks[0].run", "ends with a backslash"},
		{"password is a string", "parent: a\ntasks:\n  - password: \"x\"\n", 3, "tasks[0].password", "must be a map"},
		{"password without user", "parent: a\ntasks:\n  - password: {password: x}\n", 3, "tasks[0].password.user", "missing"},
		{"password and disabled", "parent: a\ntasks:\n  - password: {user: root, password: x, disabled: true}\n", 3, "tasks[0].password", "not both"},
		{"password neither", "parent: a\ntasks:\n  - password: {user: root}\n", 3, "tasks[0].password", "missing password"},
		{"password disabled false only", "parent: a\ntasks:\n  - password: {user: root, disabled: false}\n", 3, "tasks[0].password", "missing password"},
		{"password disabled string", "parent: a\ntasks:\n  - password: {user: root, disabled: \"yes\"}\n", 3, "tasks[0].password.disabled", "true or false"},
		{"password empty", "parent: a\ntasks:\n  - password: {user: root, password: \"\"}\n", 3, "tasks[0].password.password", "must not be empty"},
		{"password newline", "parent: a\ntasks:\n  - password: {user: root, password: \"a\\nb\"}\n", 3, "tasks[0].password", "newline"},
		{"password bad user", "parent: a\ntasks:\n  - password: {user: \"ro ot\", password: x}\n", 3, "tasks[0].password", "not a valid user name"},
		{"password user with colon", "parent: a\ntasks:\n  - password: {user: \"a:b\", password: x}\n", 3, "tasks[0].password", "not a valid user name"},
		{"password twice for a user", "parent: a\ntasks:\n  - password: {user: root, password: x}\n  - password: {user: root, disabled: true}\n", 4, "password", "already has a password task (line 3)"},
		{"missing parent", "tasks:\n  - run: x\n", 1, "parent", "missing"},
		{"null parent", "parent:\ntasks:\n  - run: x\n", 1, "parent", "missing value"},
		{"empty parent", "parent: ''\ntasks:\n  - run: x\n", 1, "parent", "must not be empty"},
		{"parent is a list", "parent: [a]\ntasks:\n  - run: x\n", 1, "parent", "must be a string"},
		{"description is a map", "parent: a\ndescription: {a: b}\ntasks:\n  - run: x\n", 2, "description", "must be a string"},
		{"copy source missing", "parent: a\ntasks:\n  - copy: nothere /\n", 3, "tasks[0].copy", "does not exist"},
		{"copy absolute source missing", "parent: a\ntasks:\n  - copy: /nonexistent/canga /\n", 3, "tasks[0].copy", "does not exist"},
		{"copy one word", "parent: a\ntasks:\n  - copy: context\n", 3, "tasks[0].copy", "SRC DEST"},
		{"copy three words", "parent: a\ntasks:\n  - copy: my file.txt /\n", 3, "tasks[0].copy", "with spaces use {src"},
		{"copy missing dest", "parent: a\ntasks:\n  - copy: {src: context}\n", 3, "tasks[0].copy.dest", "missing"},
		{"copy relative dest", "parent: a\ntasks:\n  - copy: context opt\n", 3, "tasks[0].copy", "absolute guest path"},
		{"copy dest ends with backslash", "parent: a\ntasks:\n  - copy: {src: context, dest: '/opt\\'}\n", 3, "tasks[0].copy", "backslash"},
		{"copy source with colon", "parent: a\ntasks:\n  - copy: a:b /\n", 3, "tasks[0].copy", "contains ':'"},
		{"copy is a list", "parent: a\ntasks:\n  - copy: [a, b]\n", 3, "tasks[0].copy", "must be \"SRC DEST\""},
		{"copy root", "parent: a\ntasks:\n  - copy: / /\n", 3, "tasks[0].copy", "root directory"},
		{"files is a string", "parent: a\nfiles: context /\n", 2, "files", "must be a list"},
		{"files item missing", "parent: a\nfiles:\n  - nothere /\n", 3, "files[0]", "does not exist"},
		{"no tasks", "parent: a\n", 1, "tasks", "nothing to do"},
		{"empty task list", "parent: a\ntasks: []\n", 2, "tasks", "nothing to do"},
		{"tasks is a map", "parent: a\ntasks: {run: x}\n", 2, "tasks", "must be a list"},
		{"invalid regexp", "parent: a\ntasks:\n  - change: {file: /a, regexp: 'a(b', text: x}\n", 3, "tasks[0].change.regexp", "invalid regexp"},
		{"empty regexp", "parent: a\ntasks:\n  - change: {file: /a, regexp: '', text: x}\n", 3, "tasks[0].change.regexp", "must not be empty"},
		{"change missing text", "parent: a\ntasks:\n  - change: {file: /a, regexp: x}\n", 3, "tasks[0].change.text", "missing"},
		{"change relative file", "parent: a\ntasks:\n  - change: {file: a, regexp: x, text: y}\n", 3, "tasks[0].change.file", "absolute guest path"},
		{"change file with colon", "parent: a\ntasks:\n  - change: {file: '/a:b', regexp: x, text: y}\n", 3, "tasks[0].change", "contains ':'"},
		{"change is a string", "parent: a\ntasks:\n  - change: s/a/b/\n", 3, "tasks[0].change", "must be a map"},
		{"delete relative", "parent: a\ntasks:\n  - delete: tmp/x\n", 3, "tasks[0].delete", "absolute guest path"},
		{"delete root", "parent: a\ntasks:\n  - delete: //\n", 3, "tasks[0].delete", "root directory"},
		{"delete null", "parent: a\ntasks:\n  - delete:\n", 3, "tasks[0].delete", "missing value"},
		{"delete list", "parent: a\ntasks:\n  - delete: [/a]\n", 3, "tasks[0].delete", "must be a string"},
		{"repeated key", "parent: a\nparent: b\ntasks:\n  - run: x\n", 2, "parent", "repeated key (first at line 1)"},
		{"NUL in a command", "parent: a\ntasks:\n  - run: \"echo \\0\"\n", 3, "tasks[0].run", "NUL"},
		{"non-string key", "parent: a\n? [x]\n: y\ntasks:\n  - run: x\n", 2, "", "keys must be strings"},
		{"root is a list", "- parent: a\n", 1, "", "a Cangafile is a map"},
		{"two documents", "parent: a\ntasks: [{run: x}]\n---\nparent: b\n", 3, "", "more than one YAML document"},
		{"merge key", "x: &x {parent: a}\n<<: *x\n", 1, "x", "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), dir)
			if err == nil {
				t.Fatalf("no error for\n%s", tt.src)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("not a *ParseError: %T %v", err, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, fmt.Sprintf("Cangafile:%d:", tt.line)) {
				t.Errorf("error does not name line %d: %s", tt.line, msg)
			}
			if tt.key != "" && !strings.Contains(msg, " "+tt.key+": ") {
				t.Errorf("error does not name key %q: %s", tt.key, msg)
			}
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("error does not say %q: %s", tt.msg, msg)
			}
		})
	}
}

func TestParseDocumentErrors(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "parent: [a\n", "\tparent: a\n"} {
		_, err := Parse([]byte(src), t.TempDir())
		if err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", src, err)
		}
	}
}

// All problems are reported at once, each with its own line.
func TestParseReportsEveryError(t *testing.T) {
	src := "description: x\nbogus: 1\ntasks:\n  - run: {a: b}\n  - copy: nothere /\n"
	_, err := Parse([]byte(src), t.TempDir())
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{":2:1: bogus: unknown key", ":4:10: tasks[0].run:", ":5:11: tasks[1].copy: source", "parent: missing"} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
}

func TestParseFile(t *testing.T) {
	dir := fixture(t)
	path := filepath.Join(dir, "Cangafile")
	if err := os.WriteFile(path, []byte("parent: base\ntasks:\n  - copy: context /\n  - delete: /x\n  - bad: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	if err == nil || !strings.Contains(err.Error(), path+":5:5: tasks[2].bad: unknown key") {
		t.Errorf("ParseFile error = %v", err)
	}
	if err := os.WriteFile(path, []byte("parent: base\ntasks:\n  - copy: context /\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Relative sources resolve against the Cangafile's directory, not the
	// working directory.
	t.Chdir(t.TempDir())
	c, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Tasks[0].Src != filepath.Join(dir, "context") {
		t.Errorf("src = %q", c.Tasks[0].Src)
	}

	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte("parent: a\n#"+strings.Repeat("x", MaxCangafileSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile(big); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file: %v", err)
	}
	if _, err := ParseFile(filepath.Join(dir, "missing")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
