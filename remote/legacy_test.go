package remote

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// legacyRepo is a Cangallo (version 0) repository: HEX.qcow2 files named
// by image ID beside index.yaml, made with qemu-img the way Cangallo did
// (a delta's backing file is PARENTHEX.qcow2).
type legacyRepo struct {
	t     testing.TB
	dir   string
	ids   []digest.Digest
	entry []string
}

func newLegacyRepo(t testing.TB) *legacyRepo {
	need(t, "qemu-img", "qemu-io", "sha256sum")
	return &legacyRepo{t: t, dir: t.TempDir()}
}

func legacyName(id digest.Digest) string { return id.Encoded() + ".qcow2" }

// add makes an image (a delta of parent if not empty), names it by its
// image ID and returns the ID. edit, if not nil, changes the file after
// the ID was computed.
func (l *legacyRepo) add(parent digest.Digest, pattern byte, edit func(path string)) digest.Digest {
	t := l.t
	tmp := filepath.Join(l.dir, fmt.Sprintf("new-%d.qcow2", len(l.ids)))
	args := []string{"create", "-q", "-f", "qcow2"}
	if parent != "" {
		args = append(args, "-b", legacyName(parent), "-F", "qcow2")
	}
	run(t, "qemu-img", append(args, tmp, "4M")...)
	qemuWrite(t, tmp, pattern, int64(len(l.ids))<<20, 128<<10)
	id := imageID(t, tmp)
	if edit != nil {
		edit(tmp)
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, legacyName(id))); err != nil {
		t.Fatal(err)
	}
	l.ids = append(l.ids, id)
	var e strings.Builder
	fmt.Fprintf(&e, "  %s:\n", id.Encoded())
	if parent != "" {
		fmt.Fprintf(&e, "    parent: %s\n", parent.Encoded())
	}
	fmt.Fprintf(&e, "    virtual-size: 4194304\n    format: qcow2\n    actual-size: 200704\n")
	fmt.Fprintf(&e, "    creation-time: 2016-03-13 16:52:28.123456789 +01:00\n    sha256: %s\n", id.Encoded())
	l.entry = append(l.entry, e.String())
	return id
}

func (l *legacyRepo) writeIndex() {
	var b strings.Builder
	b.WriteString("---\nversion: 0\nimages:\n")
	for _, e := range l.entry {
		b.WriteString(e)
	}
	fmt.Fprintf(&b, "tags:\n  base: %s\n", l.ids[0].Encoded())
	writeFile(l.t, filepath.Join(l.dir, IndexFile), []byte(b.String()))
}

// dropBackingFormat turns the backing format extension of a qcow2 file
// into an unknown one, as in images made by the qemu-img of Cangallo's
// time ("rebase -u -b" without -F), which today's qemu-img refuses to make.
func dropBackingFormat(t testing.TB) func(path string) {
	return func(path string) {
		b := readFile(t, path)
		var magic [4]byte
		binary.BigEndian.PutUint32(magic[:], 0xe2792aca)
		i := bytes.Index(b[:4096], magic[:])
		if i < 0 {
			t.Fatal("no backing format extension")
		}
		binary.BigEndian.PutUint32(b[i:], 0x0badf00d)
		writeFile(t, path, b)
	}
}

func TestPullLegacy(t *testing.T) {
	l := newLegacyRepo(t)
	base := l.add("", 0x11, nil)
	mid := l.add(base, 0x22, nil)
	top := l.add(mid, 0x33, dropBackingFormat(t))
	l.writeIndex()
	url := pythonServer(t, l.dir)
	store := newStore(t)
	c := testClient()
	f, _, err := c.Fetch(context.Background(), store, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Index.Version != 0 || !bytes.Equal(readFile(t, filepath.Join(store.Dir(), IndexFile)), readFile(t, filepath.Join(l.dir, IndexFile))) {
		t.Fatal("the Cangallo index was not cached as served")
	}
	var lastDone, lastTotal int64
	got, err := c.PullImage(context.Background(), store, url, f.Index, top, func(done, total int64) { lastDone, lastTotal = done, total })
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, id := range []digest.Digest{base, mid, top} {
		served := filepath.Join(l.dir, legacyName(id))
		kept := filepath.Join(store.Dir(), legacyName(id))
		fi, err := os.Lstat(kept)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o444 {
			t.Fatalf("%s: %v, %v", kept, fi, err)
		}
		sfi, _ := os.Stat(served)
		want += sfi.Size()
		if got[id].Size != fi.Size() || got[id].Digest != "" {
			t.Fatalf("%s: got %+v", id, got[id])
		}
		// The kept files are the served ones, except that the top one now
		// says its backing format.
		if same := bytes.Equal(readFile(t, kept), readFile(t, served)); same != (id != top) {
			t.Fatalf("%s: same bytes as served: %v", id, same)
		}
	}
	if lastDone != want || lastTotal != want {
		t.Fatalf("progress ended at %d/%d, want %d (sizes learned from the server)", lastDone, lastTotal, want)
	}
	// qemu sees the chain in the cache as Cangallo laid it out, and its
	// content is the image ID.
	topPath := filepath.Join(store.Dir(), legacyName(top))
	info := run(t, "qemu-img", "info", "--backing-chain", topPath)
	if strings.Count(info, "image: ") != 3 || !strings.Contains(info, "backing file format: qcow2") {
		t.Fatalf("qemu-img info --backing-chain:\n%s", info)
	}
	if id := imageID(t, topPath); id != top {
		t.Fatalf("image ID of the kept chain %s, want %s", id, top)
	}
	if left := tmpEntries(t, store); len(left) != 0 {
		t.Fatalf(".tmp/ not empty: %v", left)
	}
	if n := len(blobsIn(t, store)); n != 0 {
		t.Fatalf("%d blobs in blobs/: Cangallo images are kept beside the index", n)
	}

	// A second pull needs no server at all.
	if _, err := c.PullImage(context.Background(), store, "http://127.0.0.1:1/", f.Index, top, nil); err != nil {
		t.Fatalf("pull of pulled images: %v", err)
	}
}

func TestPullLegacyRefused(t *testing.T) {
	cases := []struct {
		name string
		make func(l *legacyRepo, base digest.Digest) digest.Digest
		want error
	}{
		{"content does not match the ID", func(l *legacyRepo, base digest.Digest) digest.Digest {
			return l.add(base, 0x44, func(path string) { qemuWrite(l.t, path, 0x45, 0, 512) })
		}, ErrImageIDMismatch},
		{"base content does not match the ID", func(l *legacyRepo, base digest.Digest) digest.Digest {
			return l.add("", 0x44, func(path string) { qemuWrite(l.t, path, 0x45, 0, 512) })
		}, ErrImageIDMismatch},
		{"backing /etc/passwd", func(l *legacyRepo, base digest.Digest) digest.Digest {
			return l.add(base, 0x44, func(path string) {
				run(l.t, "qemu-img", "rebase", "-u", "-b", "/etc/passwd", "-F", "qcow2", path)
			})
		}, ErrRefused},
		{"backing the parent by blob name", func(l *legacyRepo, base digest.Digest) digest.Digest {
			return l.add(base, 0x44, func(path string) {
				run(l.t, "qemu-img", "rebase", "-u", "-b", base.Encoded(), "-F", "qcow2", path)
			})
		}, ErrRefused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLegacyRepo(t)
			base := l.add("", 0x11, nil)
			bad := tc.make(l, base)
			l.writeIndex()
			url := pythonServer(t, l.dir)
			store := newStore(t)
			c := testClient()
			f, _, err := c.Fetch(context.Background(), store, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.PullImage(context.Background(), store, url, f.Index, bad, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("error: %v", err)
			if _, err := os.Lstat(filepath.Join(store.Dir(), legacyName(bad))); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the bad image was kept: %v", err)
			}
			if left := tmpEntries(t, store); len(left) != 0 {
				t.Fatalf(".tmp/ not empty: %v", left)
			}
		})
	}
}

// TestCheckPulledHeader covers what the pull tests do not: the Legacy
// allowance for a missing backing format, which a canga blob does not get.
func TestCheckPulledHeader(t *testing.T) {
	dir := t.TempDir()
	withFmt := filepath.Join(dir, "with.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "parent.qcow2", "-F", "qcow2", withFmt, "4M")
	noFmt := filepath.Join(dir, "without.qcow2")
	writeFile(t, noFmt, readFile(t, withFmt))
	dropBackingFormat(t)(noFmt)
	cases := []struct {
		file string
		want Expect
		ok   bool
	}{
		{withFmt, Expect{Backing: "parent.qcow2"}, true},
		{withFmt, Expect{Backing: "parent.qcow2", Legacy: true}, true},
		{noFmt, Expect{Backing: "parent.qcow2", Legacy: true}, true},
		{noFmt, Expect{Backing: "parent.qcow2"}, false},
		{withFmt, Expect{Backing: "parent"}, false},
		{withFmt, Expect{}, false},
		{withFmt, Expect{Backing: "parent.qcow2", VirtualSize: 4 << 20}, true},
		{withFmt, Expect{Backing: "parent.qcow2", VirtualSize: 5 << 20}, false},
	}
	for i, tc := range cases {
		f, err := os.Open(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		_, err = CheckPulledHeader(f, fi.Size(), tc.want)
		f.Close()
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrRefused)) {
			t.Errorf("case %d (%s, %+v): %v", i, filepath.Base(tc.file), tc.want, err)
		}
	}
	// A file cut short is refused, not a panic.
	b := readFile(t, withFmt)
	for _, n := range []int{0, 3, 4, 50, 100, 104, 200, 1000} {
		if _, err := CheckPulledHeader(bytesReaderAt(b[:n]), int64(n), Expect{Backing: "parent.qcow2"}); !errors.Is(err, ErrRefused) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}
