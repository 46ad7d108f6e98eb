package main_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
	"golang.org/x/sys/unix"
)

// A repository on a read-only file system can be read, exported and
// checked; every write fails saying why, and changes nothing. (As root,
// permission bits stop nothing, so the file system is mounted read-only.)
func TestReadOnlyRepository(t *testing.T) {
	mnt := testkit.Tmpfs(t, "64m")
	home, work := filepath.Join(mnt, "home"), t.TempDir()
	baseID := addID(t, home, baseRaw(t), "--tag", "base")
	ov := filepath.Join(work, "ov.qcow2")
	ok(t, home, "overlay", "base", ov)
	testkit.QemuIO(t, "qcow2", ov, "write -P 0x61 2M 64k")
	childID := addID(t, home, ov, "--tag", "child")
	testkit.RemountReadOnly(t, mnt)
	before := snapshot(t, home)

	// Reading works.
	if items := listJSON(t, home); len(items) != 2 {
		t.Errorf("list: %+v", items)
	}
	ok(t, home, "list")
	ok(t, home, "show", "child")
	ok(t, home, "fsck")
	out := filepath.Join(work, "out.qcow2")
	ok(t, home, "export", "child", out)
	testkit.QemuCompare(t, out, ov)
	ok(t, home, "overlay", "child", filepath.Join(work, "ov2.qcow2"))
	testkit.QemuCompare(t, filepath.Join(work, "ov2.qcow2"), ov)
	ok(t, home, "create", filepath.Join(work, "ov3.qcow2"), "--backing", "base")

	// Writing does not.
	for _, args := range [][]string{
		{"add", otherRaw(t), "--tag", "other"},
		{"add", ov, "--tag", "again"}, // already there: only the tag would change
		{"tag", "new", "base"},
		{"tag", "child", baseID},
		{"deltag", "child"},
		{"del", "child"},
		{"del", "--recursive", "base"},
		{"gc"},
	} {
		r := fails(t, home, args...)
		if !strings.Contains(r.stderr, "read-only") && !strings.Contains(r.stderr, "not writable") {
			t.Errorf("stderr should say the repository cannot be written\n%v", r)
		}
		requireUnchanged(t, home, before)
	}
	if it := mustItem(t, home, childID); len(it.Tags) != 1 || it.Tags[0] != "child" {
		t.Errorf("child tags %v", it.Tags)
	}
}

// A disk that fills up during add: an error that says so, the index and
// the blobs as they were, no partial blob, and nothing left in .tmp/ once
// gc has run. The space comes back.
func TestFullDiskDuringAdd(t *testing.T) {
	mnt := testkit.Tmpfs(t, "20m")
	home := filepath.Join(mnt, "home")
	addID(t, home, otherRaw(t), "--tag", "other")
	before := snapshot(t, home)

	for _, args := range [][]string{
		{"add", bigRaw(t), "--compression", "none", "--tag", "big"},
		{"add", bigRaw(t), "--tag", "big"},
	} {
		r := fails(t, home, args...)
		if !strings.Contains(r.stderr, "no space left on device") {
			t.Errorf("stderr should say the disk is full\n%v", r)
		}
		requireUnchanged(t, home, before)
		if names := tmpEntries(t, home); len(names) != 0 {
			t.Errorf("a failed add left .tmp/%v", names)
		}
	}
	ok(t, home, "gc")
	if names := tmpEntries(t, home); len(names) != 0 {
		t.Errorf("gc left .tmp/%v", names)
	}
	requireUnchanged(t, home, before)
	ok(t, home, "fsck")
	id := addID(t, home, baseQcow2(t), "--tag", "base")
	if id != testkit.RawDigest(t, baseQcow2(t)).String() {
		t.Errorf("add after a full disk: %s", id)
	}
	ok(t, home, "fsck")
}

// The disk fills up at every step of an add in turn (while the blob is
// written, at its commit, at the index's): whatever step fails, the
// repository is sound, the index is the old one or the new one, and gc
// leaves neither debris nor an unused blob.
func TestFullDiskAtEveryStep(t *testing.T) {
	mnt := testkit.Tmpfs(t, "16m")
	home := filepath.Join(mnt, "home")
	src := otherRaw(t)
	id := addID(t, home, src, "--tag", "other")
	blobSize := mustItem(t, home, id).BlobSize
	ok(t, home, "del", id)
	ok(t, home, "gc")
	filler := filepath.Join(mnt, "filler")
	const page = 4096
	pages := (blobSize + page - 1) / page
	var failedAt []int64
	indexFailures := 0
	for _, free := range []int64{0, 1, pages / 4, pages / 2, pages - 2, pages - 1, pages, pages + 1, pages + 2, pages + 3, pages + 8} {
		var st unix.Statfs_t
		if err := unix.Statfs(mnt, &st); err != nil {
			t.Fatal(err)
		}
		avail := int64(st.Bavail) * st.Bsize
		fill := avail - free*page
		if fill < 0 {
			t.Fatalf("%d bytes free, want %d pages", avail, free)
		}
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		if fill > 0 {
			if err := unix.Fallocate(int(f.Fd()), 0, 0, fill); err != nil {
				t.Fatalf("fallocate %d: %v", fill, err)
			}
		}
		f.Close()

		before := snapshot(t, home)
		r := canga(t, home, "add", src, "--tag", "other")
		requireNoPanic(t, r)
		if r.code != 0 {
			failedAt = append(failedAt, free)
			t.Logf("%d pages free: %s", free, strings.TrimSpace(r.stderr))
			if strings.Contains(r.stderr, "index.yaml") {
				indexFailures++
			}
			requireCleanFailure(t, r)
			if !strings.Contains(r.stderr, "no space left on device") {
				t.Errorf("%d pages free: stderr should say the disk is full\n%v", free, r)
			}
			if after := snapshot(t, home); !bytes.Equal(after.index, before.index) {
				t.Errorf("%d pages free: a failed add changed index.yaml", free)
			}
		}
		if r := canga(t, home, "fsck"); r.code != 0 {
			t.Errorf("%d pages free: fsck after add (exit %d)\n%v", free, r.code, r)
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		ok(t, home, "gc")
		if names := tmpEntries(t, home); len(names) != 0 {
			t.Errorf("%d pages free: gc left .tmp/%v", free, names)
		}
		st2 := snapshot(t, home)
		// A stored image is two blobs: its qcow2 file and its chunk list.
		if r.code == 0 {
			if len(st2.blobs) != 2 || findItem(listJSON(t, home), id) == nil {
				t.Errorf("%d pages free: add succeeded but list/blobs say otherwise: %v", free, sortedKeys(st2.blobs))
			}
			ok(t, home, "del", id)
			ok(t, home, "gc")
		} else if len(st2.blobs) != 0 {
			t.Errorf("%d pages free: after a failed add and gc, blobs %v", free, sortedKeys(st2.blobs))
		}
	}
	t.Logf("blob of %d pages; the add failed with this many pages free: %v", pages, failedAt)
	if len(failedAt) == 0 || failedAt[len(failedAt)-1] == pages+8 || indexFailures == 0 {
		t.Errorf("the free space did not straddle what the add needs (no failure at the index write): failed at %v", failedAt)
	}
}
