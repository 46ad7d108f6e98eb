package main_test

// The documentation kept true: the runnable shell blocks of README.md and
// docs/ run; the --json examples of docs/cli.md are the real documents'
// shapes; the docs point nowhere outside the project.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/internal/testregistry"
)

// projectRoot is the module's top directory (the tests run in cmd/canga).
func projectRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// docFiles are README.md and docs/*.md, relative to the project root.
func docFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(projectRoot(t), "docs", "*.md"))
	if err != nil || len(files) == 0 {
		t.Fatalf("docs/*.md: %v, %d files", err, len(files))
	}
	out := []string{"README.md"}
	for _, f := range files {
		out = append(out, filepath.Join("docs", filepath.Base(f)))
	}
	return out
}

// docBlock is a fenced code block preceded by a marker comment.
type docBlock struct {
	file   string
	line   int    // of the first line of code
	marker string // what follows "runnable" or "json:" in the marker
	lang   string
	code   string
}

// markedBlocks returns the blocks of file preceded (blank lines allowed)
// by an HTML comment <!-- KIND[: ARG] -->.
func markedBlocks(t testing.TB, file, kind string) []docBlock {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(projectRoot(t), file))
	if err != nil {
		t.Fatal(err)
	}
	marker := regexp.MustCompile(`^<!--\s*` + regexp.QuoteMeta(kind) + `(?::\s*([\w-]+))?\s*-->\s*$`)
	lines := strings.Split(string(data), "\n")
	var out []docBlock
	for i := 0; i < len(lines); i++ {
		m := marker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j == len(lines) || !strings.HasPrefix(lines[j], "```") {
			t.Errorf("%s:%d: a %s marker not followed by a code block", file, i+1, kind)
			continue
		}
		b := docBlock{file: file, line: j + 2, marker: m[1], lang: strings.TrimPrefix(lines[j], "```")}
		var code []string
		for j++; j < len(lines) && lines[j] != "```"; j++ {
			code = append(code, lines[j])
		}
		if j == len(lines) {
			t.Errorf("%s:%d: unterminated code block", file, b.line-1)
		}
		b.code = strings.Join(code, "\n") + "\n"
		out = append(out, b)
		i = j
	}
	return out
}

// The docs are the project's own: nothing points outside it, and every
// relative link leads to a file of the project.
func TestDocsStayInProject(t *testing.T) {
	root := projectRoot(t)
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	for _, f := range docFiles(t) {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("../shared")) {
			t.Errorf("%s points to ../shared, which users do not get", f)
		}
		for _, m := range link.FindAllStringSubmatch(string(data), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			p := filepath.Join(root, filepath.Dir(f), target)
			if !strings.HasPrefix(p, root+string(filepath.Separator)) {
				t.Errorf("%s links to %s, outside the project", f, target)
				continue
			}
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s links to %s: %v", f, target, err)
			}
		}
	}
}

// Every runnable block of README.md and docs/ runs: the blocks of one file
// in order, in one bash (so a variable or cd carries over, as in a
// terminal), in a new directory, with a fresh CANGA_HOME and HOME and the
// canga under test first on PATH. 127.0.0.1:8000 becomes a free port, and
// localhost:5000 the address of a registry started for the file when a
// block is marked "runnable: registry".
func TestDocsRunnable(t *testing.T) {
	bin := t.TempDir()
	if err := os.Symlink(cangaBin, filepath.Join(bin, "canga")); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, f := range docFiles(t) {
		blocks := markedBlocks(t, f, "runnable")
		if len(blocks) == 0 {
			continue
		}
		total += len(blocks)
		t.Run(filepath.Base(f), func(t *testing.T) {
			runDocBlocks(t, bin, blocks)
		})
	}
	// The guide's walk-through and the Cangafile example at least.
	if total < 8 {
		t.Errorf("%d runnable blocks in the docs: the markers are gone?", total)
	}
	t.Logf("%d runnable blocks ran", total)
}

func runDocBlocks(t *testing.T, bin string, blocks []docBlock) {
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	userHome := filepath.Join(dir, "user")
	for _, d := range []string{work, userHome} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	replace := []string{"127.0.0.1:8000", fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))}
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for _, b := range blocks {
		switch b.marker {
		case "":
		case "registry":
			if len(replace) == 2 {
				reg := testregistry.Start(t, testregistry.Options{})
				replace = append(replace, "localhost:5000", reg.Host)
			}
		default:
			t.Fatalf("%s:%d: unknown runnable marker %q", b.file, b.line, b.marker)
		}
		if b.lang != "sh" && b.lang != "bash" {
			t.Fatalf("%s:%d: runnable block in %q, want sh", b.file, b.line, b.lang)
		}
		fmt.Fprintf(&script, "printf '\\n### %s:%d\\n' >&2\n", b.file, b.line)
		script.WriteString(strings.NewReplacer(replace...).Replace(b.code))
	}
	env := []string{
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + userHome,
		"CANGA_HOME=" + filepath.Join(dir, "canga-home"),
		"DOCKER_CONFIG=" + filepath.Join(userHome, ".docker"),
		"LC_ALL=C",
	}
	env = append(env, guestfsEnv()...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir, cmd.Env = work, env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, so that what a block leaves running (canga
	// serve &) is stopped with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("the runnable blocks of %s failed (%v); the last ### line names the block:\n%s", blocks[0].file, err, out.String())
	}
}

// keyPaths lists the object keys of a JSON value as paths (a.b, a[].c),
// not descending into the values of the keys in opaque.
func keyPaths(v any, prefix string, opaque []string, out map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			out[p] = true
			if !slices.Contains(opaque, k) {
				keyPaths(x, p, opaque, out)
			}
		}
	case []any:
		for _, x := range v {
			keyPaths(x, prefix+"[]", opaque, out)
		}
	}
}

// jsonDoc parses one JSON document, which must be an object with
// "version": 1, and returns its key paths.
func jsonDoc(t testing.TB, what, text string) map[string]bool {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(text))
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: not a JSON object: %v\n%s", what, err, text)
	}
	if dec.More() {
		t.Fatalf("%s: more than one JSON document\n%s", what, text)
	}
	if v["version"] != float64(1) {
		t.Errorf("%s: version %v, want 1", what, v["version"])
	}
	paths := map[string]bool{}
	keyPaths(v, "", []string{"cangafile"}, paths)
	return paths
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Every --json document has the shape docs/cli.md shows: every key canga
// prints is documented, and every documented key shows up in the runs
// below unless it is one that is left out when empty (optional).
func TestJSONSchemas(t *testing.T) {
	examples := map[string]map[string]bool{}
	for _, b := range markedBlocks(t, filepath.Join("docs", "cli.md"), "json") {
		examples[b.marker] = jsonDoc(t, "docs/cli.md:"+strconv.Itoa(b.line), b.code)
	}

	home, work := t.TempDir(), t.TempDir()
	base := filepath.Join(work, "base.raw")
	copyFile(t, baseRaw(t), base)
	addID(t, home, base, "--tag", "base", "--description", "the base", "--os", "none")
	child := filepath.Join(work, "child.qcow2")
	ok(t, home, "overlay", "base", child)
	testkit.QemuIO(t, "qcow2", child, "write -P 0x61 1M 64k")
	addID(t, home, child, "--tag", "child", "--description", "a child", "--os", "none")
	key := testkit.Keygen(t, work, "key", "")
	pub := testkit.ReadFile(t, key+".pub")
	signers := testkit.WriteFile(t, filepath.Join(work, "allowed_signers"), []byte("me@example.org "+string(pub)), 0o644)
	ok(t, home, "sign", "--key", key)

	reg := testregistry.Start(t, testregistry.Options{})
	ok(t, home, "push", "child", "oci://"+reg.Host+"/docs/child:1")
	ok(t, home, "push", "child", "oci://"+reg.Host+"/docs/child:kv", "--containerdisk")

	compressed := filepath.Join(work, "compressed.qcow2")
	ok(t, home, "convert", "-c", child, compressed)

	runs := map[string][]result{
		"list":     {canga(t, home, "list", "--json")},
		"list-oci": {canga(t, home, "list", "oci://"+reg.Host+"/docs/child", "--json")},
		"show":     {canga(t, home, "show", "--json", "child"), canga(t, home, "show", "--json", "base")},
		"info":     {canga(t, home, "info", "--json", child), canga(t, home, "info", "--json", base)},
		"check":    {canga(t, home, "check", "--json", leakedImage(t)), canga(t, home, "check", "--json", corruptImage(t)), canga(t, home, "check", "--json", compressed)},
		"digest":   {canga(t, home, "digest", "--json", child, filepath.Join(work, "missing.qcow2"))},
		"fsck":     {canga(t, home, "fsck", "--json")},
		"verify":   {canga(t, home, "verify", "--json", "--allowed-signers", signers)},
	}
	// A fault for fsck, an unused blob, and a verify that fails.
	other := t.TempDir()
	otherBase := addID(t, other, base, "--tag", "base")
	ok(t, other, "sign", "--key", key)
	ok(t, other, "tag", "again", "base") // the signature is stale now
	blob := blobPath(other, mustItem(t, other, otherBase).Blob)
	if err := os.Chmod(blob, 0o644); err != nil {
		t.Fatal(err)
	}
	testkit.FlipByte(t, blob, 600)
	testkit.WriteFile(t, filepath.Join(blobDir(other), strings.Repeat("ab", 32)), []byte("unused"), 0o444)
	runs["fsck"] = append(runs["fsck"], canga(t, other, "fsck", "--json"))
	runs["verify"] = append(runs["verify"], canga(t, other, "verify", "--json", "--allowed-signers", signers))

	// What may be absent from a run: keys left out when empty.
	optional := map[string][]string{
		"list":  {"images[].parent", "images[].created", "images[].description", "images[].os"},
		"show":  {"cangafile", "cluster-size", "compression", "chunks", "chunk-size"},
		"info":  {"format-specific.data.bitmaps"},
		"check": {"fragmented-clusters"},
	}
	wantExit := map[string][]int{"check": {3, 2, 0}, "digest": {1}, "fsck": {0, 1}, "verify": {0, 1}}
	for name, rs := range runs {
		doc, ok := examples[name]
		if !ok {
			t.Errorf("docs/cli.md has no <!-- json: %s --> example", name)
			continue
		}
		seen := map[string]bool{}
		for i, r := range rs {
			want := 0
			if w := wantExit[name]; w != nil {
				want = w[i]
			}
			if r.code != want {
				t.Errorf("%s: exit %d, want %d\n%v", name, r.code, want, r)
			}
			for p := range jsonDoc(t, strings.Join(r.args, " "), r.stdout) {
				seen[p] = true
				if !doc[p] {
					t.Errorf("%s --json prints %q, which docs/cli.md does not show", name, p)
				}
			}
		}
		for p := range doc {
			if !seen[p] && !slices.Contains(optional[name], p) {
				t.Errorf("docs/cli.md shows %q for %s --json, which it did not print (printed: %v)", p, name, sortedSet(seen))
			}
		}
	}
	for name := range examples {
		if _, ok := runs[name]; !ok {
			t.Errorf("docs/cli.md has a json example %q that no run checks", name)
		}
	}
}
