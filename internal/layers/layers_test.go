package layers

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cangallo/canga"

// rule forbids packages matching pkg (a path relative to the module, or a
// prefix ending in "/") to depend, directly or not, on any of deny.
type rule struct {
	pkg    string
	deny   []string
	direct bool // only direct imports count
	why    string
}

var rules = []rule{
	{pkg: "qcow2", deny: []string{"cas", "index", "config", "remote", "registry", "repo", "guestfs", "cmd/"}, why: "the format knows nothing else of canga"},
	{pkg: "cas", deny: []string{"index", "config", "remote", "registry", "repo", "qcow2", "cmd/"}, why: "the store decides what gets in, knowing nothing of indexes or transports"},
	{pkg: "index", deny: []string{"cas", "config", "remote", "registry", "repo", "cmd/"}, why: "the catalog never touches blobs"},
	{pkg: "config", deny: []string{"index", "cas", "remote", "registry", "repo", "cmd/"}, why: "configuration is read before anything else"},
	{pkg: "remote", deny: []string{"cas", "index", "qcow2", "config", "repo", "registry", "cmd/"}, why: "a transport moves bytes and knows nothing of stores"},
	{pkg: "registry", deny: []string{"cas", "index", "qcow2", "config", "repo", "remote", "cmd/"}, why: "a transport moves bytes and knows nothing of stores"},
	{pkg: "guestfs", deny: []string{"cas", "repo", "remote", "registry", "cmd/"}, why: "builds are orchestrated by repo"},
	{pkg: "nbd", deny: []string{"qcow2", "cas", "index", "config", "remote", "registry", "repo", "guestfs", "cmd/"}, why: "the protocol serves any io.ReaderAt and knows nothing else of canga"},
	{pkg: "repo", deny: []string{"cmd/"}, why: "libraries never talk to people"},
	{pkg: "cmd/canga", deny: []string{"cas"}, direct: true, why: "every way into a store goes through repo"},
}

// pkgInfo is the part of go list's output the rules need.
type pkgInfo struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkgInfo {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkgInfo
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkgInfo
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// ours trims the module path, or reports that path is not ours.
func ours(path string) (string, bool) {
	rel, ok := strings.CutPrefix(path, module+"/")
	return rel, ok
}

func matches(rel, pattern string) bool {
	if strings.HasSuffix(pattern, "/") {
		return strings.HasPrefix(rel, pattern)
	}
	return rel == pattern || strings.HasPrefix(rel, pattern+"/")
}

// violations lists what the rules forbid in pkgs.
func violations(pkgs []pkgInfo) []string {
	var out []string
	for _, p := range pkgs {
		rel, ok := ours(p.ImportPath)
		if !ok {
			continue
		}
		for _, r := range rules {
			if !matches(rel, r.pkg) {
				continue
			}
			deps := p.Deps
			if r.direct {
				deps = p.Imports
			}
			for _, d := range deps {
				drel, ok := ours(d)
				if !ok {
					continue
				}
				if slices.ContainsFunc(r.deny, func(pat string) bool { return matches(drel, pat) }) {
					out = append(out, rel+" imports "+drel+": "+r.why)
				}
			}
		}
	}
	return out
}

func TestLayers(t *testing.T) {
	pkgs := listPackages(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestRulesBite: the rules do catch a forbidden import, direct or not.
func TestRulesBite(t *testing.T) {
	fake := []pkgInfo{
		{ImportPath: module + "/remote", Deps: []string{"fmt", module + "/internal/atomicfile", module + "/cas"}},
		{ImportPath: module + "/cmd/canga", Imports: []string{module + "/repo", module + "/cas"}, Deps: []string{module + "/cas"}},
		{ImportPath: module + "/repo", Deps: []string{module + "/cmd/canga"}},
		{ImportPath: module + "/index/signing", Deps: []string{module + "/repo"}},
	}
	got := violations(fake)
	want := []string{"remote imports cas", "cmd/canga imports cas", "repo imports cmd/canga", "index/signing imports repo"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %d violations", got, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("violation %d: %q, want %q", i, got[i], w)
		}
	}
	if v := violations([]pkgInfo{{ImportPath: module + "/cmd/canga", Deps: []string{module + "/cas"}, Imports: []string{module + "/repo"}}}); len(v) != 0 {
		t.Errorf("cmd/canga may reach cas through repo: %v", v)
	}
}

// printers are the ways a library could talk to people or end the
// process; only cmd/canga may.
var printers = map[string][]string{
	"fmt": {"Print", "Printf", "Println"},
	"log": {"Print", "Printf", "Println", "Fatal", "Fatalf", "Fatalln", "Panic", "Panicf", "Panicln"},
	"os":  {"Stdout", "Stderr", "Exit"},
}

// TestLibrariesDoNotPrint: no package but cmd/canga prints, logs or exits.
func TestLibrariesDoNotPrint(t *testing.T) {
	for _, p := range listPackages(t) {
		rel, ok := ours(p.ImportPath)
		if !ok || strings.HasPrefix(rel, "cmd/") {
			continue
		}
		for _, name := range p.GoFiles {
			for _, v := range printsIn(t, filepath.Join(p.Dir, name)) {
				t.Errorf("%s/%s: %s: a library reports through errors and callbacks, only cmd/canga talks to people", rel, name, v)
			}
		}
	}
}

func printsIn(t *testing.T, file string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	local := map[string]string{} // import name in this file -> package path
	for _, imp := range f.Imports {
		path := strings.Trim(imp.Path.Value, `"`)
		name := filepath.Base(path)
		if imp.Name != nil {
			name = imp.Name.Name
		}
		local[name] = path
	}
	var found []string
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok && slices.Contains(printers[local[id.Name]], n.Sel.Name) {
				found = append(found, local[id.Name]+"."+n.Sel.Name)
			}
		case *ast.CallExpr:
			if id, ok := n.Fun.(*ast.Ident); ok && (id.Name == "print" || id.Name == "println") {
				found = append(found, id.Name)
			}
		}
		return true
	})
	return found
}

// TestPrintsInBites: the scanner finds what it looks for.
func TestPrintsInBites(t *testing.T) {
	dir := t.TempDir()
	src := "package x\nimport (\n\tf \"fmt\"\n\t\"os\"\n)\nfunc g() { f.Println(1); _ = os.Stderr; println(2); os.Exit(1) }\n"
	p := filepath.Join(dir, "x.go")
	if err := writeFile(p, src); err != nil {
		t.Fatal(err)
	}
	got := printsIn(t, p)
	want := []string{"fmt.Println", "os.Stderr", "println", "os.Exit"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
