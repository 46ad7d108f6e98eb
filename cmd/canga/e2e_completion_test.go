package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// completionHome is a home with two tagged images, and a work directory
// with a few files, for the completion tests.
func completionHome(t *testing.T) (home, work, bin string, ids []string) {
	t.Helper()
	home, work, bin = t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.Symlink(cangaBin, filepath.Join(bin, "canga")); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, addID(t, home, baseRaw(t), "--tag", "debian:12"))
	ids = append(ids, addID(t, home, otherRaw(t), "--tag", "debian/web:12"))
	for _, f := range []string{"disk.qcow2", "disk.raw", "notes.txt"} {
		testkit.WriteFile(t, filepath.Join(work, f), []byte("x"), 0o644)
	}
	if err := os.Mkdir(filepath.Join(work, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	return home, work, bin, ids
}

// bash completion, as bash runs it: the script canga prints is sourced and
// its function called with COMP_LINE and COMP_POINT set, as on a TAB.
func TestCompletionBash(t *testing.T) {
	testkit.Need(t, "bash")
	home, work, bin, ids := completionHome(t)
	script := filepath.Join(t.TempDir(), "canga.bash")
	testkit.WriteFile(t, script, []byte(ok(t, home, "completion", "bash")), 0o644)

	cases := []struct {
		line string
		want []string // exactly these candidates, in any order
	}{
		{"canga sh", []string{"show"}},
		{"canga de", []string{"deltag", "del"}},
		{"canga show deb", []string{"debian:12", "debian/web:12"}},
		{"canga show debian/", []string{"debian/web:12"}},
		// bash splits words at ":": the candidates are what follows it.
		{"canga show debian:", []string{"12"}},
		{"canga show default:debian/", []string{"debian/web:12"}},
		{"canga show " + strings.TrimPrefix(ids[0], "sha256:")[:6], []string{strings.TrimPrefix(ids[0], "sha256:")[:16]}},
		{"canga export debian:12 di", []string{"disk.qcow2", "disk.raw", "dir"}},
		{"canga add no", []string{"notes.txt"}},
		{"canga convert -O ", []string{"qcow2", "raw"}},
		{"canga convert --compression=z", []string{"zlib", "zstd"}},
		{"canga add --par", []string{"--parent"}},
		{"canga add --tag x --parent debian/", []string{"debian/web:12"}},
		{"canga deltag debian/", []string{"debian/web:12"}},
		{"canga list oc", []string{"oci://"}},
		{"canga list def", []string{"default"}},
		{"canga fsck --repo ", []string{"default"}},
		{"canga completion ", []string{"bash", "zsh", "fish"}},
		{"canga help conv", []string{"convert"}},
		{"canga -q inf", []string{"info"}},
		{"canga __comp", nil}, // hidden
	}
	var sh strings.Builder
	sh.WriteString("source " + script + "\n")
	sh.WriteString(`c() { COMP_LINE=$1; COMP_POINT=${#1}; COMPREPLY=(); _canga; printf '%s\n' "${COMPREPLY[@]}"; echo '--'; }` + "\n")
	for _, c := range cases {
		sh.WriteString("c '" + c.line + "'\n")
	}
	cmd := exec.Command("bash", "--norc", "--noprofile", "-c", sh.String())
	cmd.Dir = work
	cmd.Env = append(cangaEnv(home), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	results := strings.Split(strings.TrimSuffix(string(out), "--\n"), "--\n")
	if len(results) != len(cases) {
		t.Fatalf("%d results for %d lines:\n%s", len(results), len(cases), out)
	}
	for i, c := range cases {
		got := strings.Fields(results[i])
		slices.Sort(got)
		want := slices.Clone(c.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%q<TAB>: %q, want %q", c.line, got, want)
		}
	}
}

// A TAB never creates a home, and completes nothing from one that is not
// there.
func TestCompletionLeavesNoHome(t *testing.T) {
	home := filepath.Join(t.TempDir(), "nothing")
	if out := ok(t, home, "__complete", "--", "show", ""); strings.TrimSpace(out) != "" {
		t.Errorf("candidates from no home: %q", out)
	}
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("__complete made the home: %v", err)
	}
}

// The zsh and fish scripts parse, and fish, which can complete without a
// terminal, offers the same candidates.
func TestCompletionZshFish(t *testing.T) {
	testkit.Need(t, "zsh", "fish")
	home, work, bin, _ := completionHome(t)
	dir := t.TempDir()
	zsh := testkit.WriteFile(t, filepath.Join(dir, "_canga"), []byte(ok(t, home, "completion", "zsh")), 0o644)
	fish := testkit.WriteFile(t, filepath.Join(dir, "canga.fish"), []byte(ok(t, home, "completion", "fish")), 0o644)
	testkit.Run(t, "zsh", "-n", zsh)
	testkit.Run(t, "fish", "-n", fish)

	cases := []struct {
		line string
		want []string
	}{
		{"canga sh", []string{"show"}},
		{"canga show deb", []string{"debian:12", "debian/web:12"}},
		{"canga convert -O ", []string{"qcow2", "raw"}},
		{"canga add no", []string{"notes.txt"}},
	}
	for _, c := range cases {
		cmd := exec.Command("fish", "--no-config", "-c", "source "+fish+"; complete -C '"+c.line+"'")
		cmd.Dir = work
		cmd.Env = append(cangaEnv(home), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish: %v\n%s", err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" {
				got = append(got, strings.SplitN(l, "\t", 2)[0])
			}
		}
		slices.Sort(got)
		want := slices.Clone(c.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("fish: %q<TAB>: %q, want %q", c.line, got, want)
		}
	}
}
