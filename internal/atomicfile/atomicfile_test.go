package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// entries lists dir, to check that no temp file is left.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestWrite(t *testing.T) {
	old := syscall.Umask(0o077) // the mode must not depend on it
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFile(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	if got := read(t, p); got != "two" {
		t.Fatalf("got %q", got)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// A failed write leaves the old file and no temp file.
	boom := errors.New("boom")
	err := Write(p, 0o644, func(f *os.File) error {
		f.WriteString("half")
		return boom
	})
	if !errors.Is(err, boom) || read(t, p) != "two" {
		t.Fatalf("err %v, content %q", err, read(t, p))
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("left %v", names)
	}
}

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	write := func(s string) func(*os.File) error {
		return func(f *os.File) error { _, err := f.WriteString(s); return err }
	}
	if err := Create(p, 0o444, write("first")); err != nil {
		t.Fatal(err)
	}
	if err := Create(p, 0o444, write("second")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("err %v, want fs.ErrExist", err)
	}
	if got := read(t, p); got != "first" {
		t.Fatalf("got %q: an existing file must win", got)
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("left %v", names)
	}
}

func TestWriteReadOnlyDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o755)
	if os.Geteuid() == 0 {
		t.Log("root writes into a 0555 directory: only the error path of a missing directory is checked")
		if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o644); err == nil {
			t.Fatal("write into a missing directory succeeded")
		}
		return
	}
	if err := WriteFile(filepath.Join(dir, "f"), nil, 0o644); err == nil {
		t.Fatal("write into a read-only directory succeeded")
	}
}
