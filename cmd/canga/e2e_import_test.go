package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// otherRepoHome is a home with a second local repository, "other", next
// to the default one; it returns the home and other's directory.
func otherRepoHome(t *testing.T) (home, other string) {
	t.Helper()
	home = t.TempDir()
	other = filepath.Join(t.TempDir(), "other")
	conf := fmt.Sprintf("default_repo: default\nrepos:\n  default:\n    path: %s\n  other:\n    path: %s\n", filepath.Join(home, "default"), other)
	if err := os.WriteFile(filepath.Join(home, "config.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return home, other
}

// TestImportTamperedLocal: a blob of another local repository whose bytes
// no longer match its name is refused by import, and the default
// repository stays byte for byte as it was (SPEC §2: nothing enters
// blobs/ unhashed, whatever the source).
func TestImportTamperedLocal(t *testing.T) {
	home, other := otherRepoHome(t)
	id := addID(t, home, baseQcow2(t), "other", "--tag", "disk")
	od := filepath.Join(other, "blobs", "sha256")
	blobs := qcow2Only(t, od, dirNames(t, od))
	if len(blobs) != 1 {
		t.Fatalf("other's blobs: %v", blobs)
	}
	blob := filepath.Join(od, blobs[0])
	fi, err := os.Stat(blob)
	if err != nil {
		t.Fatal(err)
	}
	// Flip one byte past the header, as a user with write access would.
	if err := os.Chmod(blob, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(blob, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	off := fi.Size() - 100
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()

	ok(t, home, "list") // the default repository exists, empty
	before := snapshot(t, home)
	r := fails(t, home, "import", "other:disk")
	if r.code != 1 || !strings.Contains(r.stderr, "digest mismatch") {
		t.Errorf("import of a tampered blob: want exit 1 and a digest mismatch\n%v", r)
	}
	requireUnchanged(t, home, before)
	tmp, _ := os.ReadDir(filepath.Join(home, "default", ".tmp"))
	if len(tmp) != 0 {
		t.Errorf("import left %d files in .tmp/", len(tmp))
	}
	if p := canga(t, home, "show", "default:"+id[7:19]); p.code == 0 {
		t.Errorf("the tampered image is in the default repository:\n%v", p)
	}
}

// TestImportLocalCopies: import from another local repository makes a
// blob of the default repository's own: a copy (or a clone), never a
// hard link that the other repository's owner could change later.
func TestImportLocalCopies(t *testing.T) {
	home, other := otherRepoHome(t)
	id := addID(t, home, baseQcow2(t), "other", "--tag", "disk")
	out := strings.TrimSpace(ok(t, home, "import", "other:disk", "--tag", "mine"))
	if out != id {
		t.Fatalf("import printed %q, want %s", out, id)
	}
	od := filepath.Join(other, "blobs", "sha256")
	entries := qcow2Only(t, od, dirNames(t, od))
	if len(entries) != 1 {
		t.Fatal(entries)
	}
	name := entries[0]
	theirs, err := os.Stat(filepath.Join(other, "blobs", "sha256", name))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.Stat(filepath.Join(home, "default", "blobs", "sha256", name))
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(theirs, ours) {
		t.Fatal("the imported blob is the other repository's file")
	}
	if n := ours.Sys().(*syscall.Stat_t).Nlink; n != 1 {
		t.Fatalf("the imported blob has %d links", n)
	}
	if ours.Mode().Perm() != 0o444 {
		t.Fatalf("the imported blob has mode %v", ours.Mode())
	}
	ok(t, home, "fsck")
	if got := strings.Fields(ok(t, home, "digest", filepath.Join(home, "default", "blobs", "sha256", name)))[0]; got != id {
		t.Fatalf("the imported blob's image ID is %s, want %s", got, id)
	}
}
