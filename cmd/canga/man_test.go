package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

var overstrike = regexp.MustCompile(".\b")

func model(t *testing.T) *kong.Application {
	t.Helper()
	var c cli
	k, err := newParser(&c, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return k.Model
}

// Every command has a page, rendered by man; every flag and argument of
// the command and every global flag is on it, and every command is in
// canga.1.
func TestManPagesCoverTheModel(t *testing.T) {
	if _, err := exec.LookPath("man"); err != nil {
		t.Fatal("man not found: install man-db (scripts/deps.sh does)")
	}
	app := model(t)
	dir := t.TempDir()
	pages := manPages(app, "2026-01-02")
	for name, text := range pages {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	render := func(name string) string {
		t.Helper()
		cmd := exec.Command("man", "--warnings", "-l", filepath.Join(dir, name))
		cmd.Env = append(os.Environ(), "MANWIDTH=200", "LC_ALL=C.UTF-8")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("man -l %s: %v", name, err)
		}
		// Bold and underline are overstrikes (c BS c, _ BS c), and hyphens
		// may be U+2010 or U+2212, depending on the device: plain text.
		text := overstrike.ReplaceAllString(string(out), "")
		return strings.NewReplacer("\u2010", "-", "\u2212", "-").Replace(text)
	}
	main := render("canga.1")
	var commands int
	for _, n := range app.Children {
		if n.Hidden {
			if _, ok := pages["canga-"+n.Name+".1"]; ok {
				t.Errorf("hidden command %s has a page", n.Name)
			}
			continue
		}
		commands++
		if !strings.Contains(main, "canga "+n.Name) || !strings.Contains(main, "canga-"+n.Name+"(1)") {
			t.Errorf("canga.1 does not list %s", n.Name)
		}
		page := render("canga-" + n.Name + ".1")
		if !strings.Contains(page, "canga "+n.Name) {
			t.Errorf("canga-%s.1 has no synopsis", n.Name)
		}
		for _, f := range n.Flags {
			if !strings.Contains(page, "--"+f.Name) {
				t.Errorf("canga-%s.1 lacks --%s", n.Name, f.Name)
			}
			if f.Short != 0 && !strings.Contains(page, "-"+string(f.Short)+", --"+f.Name) {
				t.Errorf("canga-%s.1 lacks -%c for --%s", n.Name, f.Short, f.Name)
			}
		}
		for _, p := range n.Positional {
			if !strings.Contains(page, p.Name) {
				t.Errorf("canga-%s.1 lacks its argument %s", n.Name, p.Name)
			}
		}
		for _, f := range app.Flags {
			if !strings.Contains(page, "--"+f.Name) {
				t.Errorf("canga-%s.1 lacks the global --%s", n.Name, f.Name)
			}
		}
	}
	if commands < 25 || len(pages) != commands+1 {
		t.Errorf("%d pages for %d commands", len(pages), commands)
	}
	for _, f := range app.Flags {
		if !strings.Contains(main, "--"+f.Name) {
			t.Errorf("canga.1 lacks the global --%s", f.Name)
		}
	}
}
