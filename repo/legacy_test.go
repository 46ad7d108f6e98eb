package repo

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

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/internal/testkit"
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
	testkit.Need(t, "qemu-img", "qemu-io")
	return &legacyRepo{t: t, dir: t.TempDir()}
}

// add makes an image (a delta of parent if not empty), names it by its
// image ID and returns the ID. edit, if not nil, changes the file after
// the ID was computed.
func (l *legacyRepo) add(parent digest.Digest, pattern byte, edit func(path string)) digest.Digest {
	t := l.t
	tmp := filepath.Join(l.dir, fmt.Sprintf("new-%d.qcow2", len(l.ids)))
	args := []string{"create", "-q", "-f", "qcow2"}
	if parent != "" {
		args = append(args, "-b", index.LegacyFileName(parent), "-F", "qcow2")
	}
	testkit.Run(t, "qemu-img", append(args, tmp, "4M")...)
	testkit.QemuWrite(t, tmp, pattern, int64(len(l.ids))<<20, 128<<10)
	id := testkit.RawDigest(t, tmp)
	if edit != nil {
		edit(tmp)
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, index.LegacyFileName(id))); err != nil {
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

func (l *legacyRepo) writeIndex() *index.Index {
	var b strings.Builder
	b.WriteString("---\nversion: 0\nimages:\n")
	for _, e := range l.entry {
		b.WriteString(e)
	}
	fmt.Fprintf(&b, "tags:\n  base: %s\n", l.ids[0].Encoded())
	writeFile(l.t, filepath.Join(l.dir, IndexFile), []byte(b.String()))
	ix, err := index.Parse([]byte(b.String()))
	if err != nil {
		l.t.Fatal(err)
	}
	return ix
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

// TestCopyLegacy: a Cangallo chain is pulled into its remote's cache as
// Cangallo laid it out, each file verified by image ID; imported from
// there into a local repository, it becomes canga blobs whose backing
// names are their parents' blobs.
func TestCopyLegacy(t *testing.T) {
	l := newLegacyRepo(t)
	base := l.add("", 0x11, nil)
	mid := l.add(base, 0x22, nil)
	top := l.add(mid, 0x33, dropBackingFormat(t))
	l.writeIndex()
	url := testkit.PythonHTTPServer(t, l.dir)
	cache := remoteRepo(t, url, "")
	ctx := context.Background()
	f, err := cache.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f.Index.Version != 0 {
		t.Fatal("not read as a Cangallo index")
	}
	src, err := cache.remoteSource()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[digest.Digest]int64{}
	if _, err := cache.Copy(ctx, src, f.Index, top, CopyOptions{Progress: func(id digest.Digest, done, size int64) {
		if size >= 0 {
			sizes[id] = size
		}
	}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []digest.Digest{base, mid, top} {
		served := filepath.Join(l.dir, index.LegacyFileName(id))
		kept := filepath.Join(cache.Dir(), index.LegacyFileName(id))
		fi, err := os.Lstat(kept)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o444 {
			t.Fatalf("%s: %v, %v", kept, fi, err)
		}
		if sfi, _ := os.Stat(served); sizes[id] != sfi.Size() {
			t.Errorf("%s: progress knew size %d, the server's is %d", index.ShortID(id), sizes[id], sfi.Size())
		}
		// The kept files are the served ones, except that the top one now
		// says its backing format.
		if same := bytes.Equal(readFile(t, kept), readFile(t, served)); same != (id != top) {
			t.Fatalf("%s: same bytes as served: %v", id, same)
		}
	}
	// qemu sees the chain in the cache as Cangallo laid it out, and its
	// content is the image ID.
	topPath := filepath.Join(cache.Dir(), index.LegacyFileName(top))
	info := testkit.Run(t, "qemu-img", "info", "--backing-chain", topPath)
	if strings.Count(info, "image: ") != 3 || !strings.Contains(info, "backing file format: qcow2") {
		t.Fatalf("qemu-img info --backing-chain:\n%s", info)
	}
	if id := testkit.RawDigest(t, topPath); id != top {
		t.Fatalf("image ID of the kept chain %s, want %s", id, top)
	}
	if left := tmpEntries(t, cache); len(left) != 0 {
		t.Fatalf(".tmp/ not empty: %v", left)
	}
	if blobs, _, _ := cache.store.List(ctx); len(blobs) != 0 {
		t.Fatalf("%d blobs in blobs/: Cangallo images are kept beside the index", len(blobs))
	}
	// A second pull needs no server at all.
	dead := httpSource{c: testClient(), url: "http://127.0.0.1:1/", signers: noSigners}
	if _, err := cache.Copy(ctx, dead, f.Index, top, CopyOptions{}); err != nil {
		t.Fatalf("pull of pulled images: %v", err)
	}

	// Imported into a local repository, from the cache.
	dst := localRepo(t)
	if _, err := dst.Copy(ctx, cache.AsSource(), f.Index, top, CopyOptions{Tag: "old:1"}); err != nil {
		t.Fatal(err)
	}
	ix, err := dst.Index()
	if err != nil {
		t.Fatal(err)
	}
	te := ix.Images[top]
	if te == nil || te.Blob == "" || te.Legacy != nil || ix.Tags["old:1"] != top {
		t.Fatalf("imported entry %+v, tags %v", te, ix.Tags)
	}
	tp, _ := dst.store.Path(te.Blob)
	if got := testkit.QemuInfo(t, tp).BackingFilename; got != ix.Images[mid].Blob.Encoded() {
		t.Fatalf("the imported top names %s, want its parent's blob", got)
	}
	if id := testkit.RawDigest(t, tp); id != top {
		t.Fatalf("image ID %s, want %s", id, top)
	}
	rep, err := dst.Fsck(ctx, nil)
	if err != nil || len(rep.Faults) != 0 {
		t.Fatalf("fsck: %v %+v", err, rep)
	}
}

func TestCopyLegacyRefused(t *testing.T) {
	cases := []struct {
		name string
		make func(l *legacyRepo, base digest.Digest) digest.Digest
		want error
	}{
		{"content does not match the ID", func(l *legacyRepo, base digest.Digest) digest.Digest {
			return l.add(base, 0x44, func(path string) { testkit.QemuWrite(l.t, path, 0x45, 0, 512) })
		}, ErrImageIDMismatch},
		{"base content does not match the ID", func(l *legacyRepo, base digest.Digest) digest.Digest {
			return l.add("", 0x44, func(path string) { testkit.QemuWrite(l.t, path, 0x45, 0, 512) })
		}, ErrImageIDMismatch},
		{"backing /etc/passwd", func(l *legacyRepo, base digest.Digest) digest.Digest {
			return l.add(base, 0x44, func(path string) {
				testkit.Run(l.t, "qemu-img", "rebase", "-u", "-b", "/etc/passwd", "-F", "qcow2", path)
			})
		}, ErrRefused},
		{"backing the parent by blob name", func(l *legacyRepo, base digest.Digest) digest.Digest {
			return l.add(base, 0x44, func(path string) {
				testkit.Run(l.t, "qemu-img", "rebase", "-u", "-b", base.Encoded(), "-F", "qcow2", path)
			})
		}, ErrRefused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLegacyRepo(t)
			base := l.add("", 0x11, nil)
			bad := tc.make(l, base)
			ix := l.writeIndex()
			cache := remoteRepo(t, testkit.PythonHTTPServer(t, l.dir), "")
			src, err := cache.remoteSource()
			if err != nil {
				t.Fatal(err)
			}
			_, err = cache.Copy(context.Background(), src, ix, bad, CopyOptions{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("error: %v", err)
			if _, err := os.Lstat(filepath.Join(cache.Dir(), index.LegacyFileName(bad))); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the bad image was kept: %v", err)
			}
			if left := tmpEntries(t, cache); len(left) != 0 {
				t.Fatalf(".tmp/ not empty: %v", left)
			}
		})
	}
}

// TestExpectCheck covers what the copy tests do not: the Cangallo
// allowance for a missing backing format, which a canga blob does not get,
// and files cut short.
func TestExpectCheck(t *testing.T) {
	dir := t.TempDir()
	withFmt := filepath.Join(dir, "with.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "parent.qcow2", "-F", "qcow2", withFmt, "4M")
	noFmt := filepath.Join(dir, "without.qcow2")
	writeFile(t, noFmt, readFile(t, withFmt))
	dropBackingFormat(t)(noFmt)
	cases := []struct {
		file string
		want expect
		ok   bool
	}{
		{withFmt, expect{backing: "parent.qcow2"}, true},
		{withFmt, expect{backing: "parent.qcow2", legacy: true}, true},
		{noFmt, expect{backing: "parent.qcow2", legacy: true}, true},
		{noFmt, expect{backing: "parent.qcow2"}, false},
		{withFmt, expect{backing: "parent"}, false},
		{withFmt, expect{}, false},
		{withFmt, expect{backing: "parent.qcow2", virtualSize: 4 << 20}, true},
		{withFmt, expect{backing: "parent.qcow2", virtualSize: 5 << 20}, false},
	}
	for i, tc := range cases {
		b := readFile(t, tc.file)
		err := tc.want.check(bytes.NewReader(b), int64(len(b)))
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrRefused)) {
			t.Errorf("case %d (%s, %+v): %v", i, filepath.Base(tc.file), tc.want, err)
		}
	}
	b := readFile(t, withFmt)
	for _, n := range []int{0, 3, 4, 50, 100, 104, 200, 1000} {
		if err := (expect{backing: "parent.qcow2"}).check(bytes.NewReader(b[:n]), int64(n)); !errors.Is(err, ErrRefused) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}
