package main_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

func shortID(id string) string { return strings.TrimPrefix(id, "sha256:")[:16] }

func mustItem(t *testing.T, home, id string) listEntry {
	t.Helper()
	it := findItem(listJSON(t, home), id)
	if it == nil {
		t.Fatalf("image %s is not in list --json", id)
	}
	return *it
}

// requireBlobsNamedByDigest checks SPEC §2's blob store with sha256sum:
// every file is named by its digest and is read-only.
func requireBlobsNamedByDigest(t *testing.T, home string) {
	t.Helper()
	for _, name := range dirNames(t, blobDir(home)) {
		p := filepath.Join(blobDir(home), name)
		if got := testkit.Sha256sum(t, p).String(); got != "sha256:"+name {
			t.Errorf("blob %s has sha256sum %s", name, got)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o444 {
			t.Errorf("blob %s has mode %v, want 0444", name, fi.Mode().Perm())
		}
		if isChunkList(t, p) {
			if fi.Size()%32 != 0 {
				t.Errorf("chunk list %s of %d bytes: not 32 per chunk", name, fi.Size())
			}
			continue
		}
		testkit.QemuCheck(t, p)
	}
}

// The whole life of two images, each step checked with qemu-img and
// sha256sum.
func TestRepoWorkflow(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	base := filepath.Join(work, "base.qcow2")
	copyFile(t, baseQcow2(t), base)
	baseID := testkit.RawDigest(t, base).String()

	// add a base image, with its metadata.
	start := time.Now().Add(-time.Second)
	if r := canga(t, home, "add", base, "--tag", "base", "--description", "Base ext4 disk", "--os", "Debian 12"); r.code != 0 || r.stdout != baseID+"\n" {
		t.Fatalf("canga add should print the ID qemu-img convert + sha256sum give, %s\n%v", baseID, r)
	} else if r.stderr != "" {
		t.Errorf("add of a base image, stderr not a terminal: want silence\n%v", r)
	}
	requireBlobsNamedByDigest(t, home)
	b := mustItem(t, home, baseID)
	created, err := time.Parse(time.RFC3339, b.Created)
	if err != nil || created.Before(start.Truncate(time.Second)) || created.After(time.Now()) {
		t.Errorf("created %q (%v), want the time of the add", b.Created, err)
	}
	baseBlob := blobPath(home, b.Blob)
	if b.Repo != "default" || !slices.Equal(b.Tags, []string{"base"}) || b.Parent != "" || b.Description != "Base ext4 disk" ||
		b.OS != "Debian 12" || b.VirtualSize != 64<<20 || b.BlobSize != fileSize(t, baseBlob) || !b.Present {
		t.Errorf("list --json entry: %+v", b)
	}
	info := testkit.QemuInfo(t, baseBlob)
	if info.Format != "qcow2" || info.BackingFilename != "" || info.VirtualSize != 64<<20 || info.FormatSpecific.Data.Compat != "1.1" {
		t.Errorf("base blob: %+v", info)
	}
	if _, c, _ := testkit.QemuCheckReport(t, baseBlob); c.CompressedClusters == 0 {
		t.Errorf("base blob is not compressed (default zlib): %+v", c)
	}
	testkit.QemuCompare(t, baseBlob, base)
	if testkit.RawDigest(t, baseBlob).String() != baseID {
		t.Errorf("the base blob does not read as the image")
	}

	// An overlay to run a VM on, then writes into it as a VM would make:
	// data, zero writes over the base's data, a discard, a partial cluster.
	ov := filepath.Join(work, "vm.qcow2")
	ok(t, home, "overlay", "base", ov)
	oi := testkit.QemuInfo(t, ov)
	if oi.BackingFilename != baseBlob || oi.BackingFormat != "qcow2" || oi.VirtualSize != 64<<20 {
		t.Errorf("overlay: backing %q (%s), size %d; want %q (qcow2), %d", oi.BackingFilename, oi.BackingFormat, oi.VirtualSize, baseBlob, 64<<20)
	}
	testkit.QemuCompare(t, ov, base)
	data := dataClusters(t, baseRaw(t))
	testkit.QemuIO(t, "qcow2", ov, "write -P 0xc4 5M 512k", "write -z "+itoa(data[10])+" 128k", "discard "+itoa(data[20])+" 64k",
		"write -P 0x03 "+itoa(7<<20+512)+" 1k", "write -z "+itoa(data[30]+4096)+" 4k")
	childID := testkit.RawDigest(t, ov).String()
	if childID == baseID {
		t.Fatal("the writes changed nothing")
	}

	// add the overlay: a delta against the base, found by its backing chain.
	r := canga(t, home, "add", ov, "--tag", "child")
	if r.code != 0 || strings.TrimSpace(r.stdout) != childID {
		t.Fatalf("add of the overlay: want %s\n%v", childID, r)
	}
	if !strings.Contains(r.stderr, "parent "+shortID(baseID)) {
		t.Errorf("add should say which parent it found\n%v", r)
	}
	c := mustItem(t, home, childID)
	childBlob := blobPath(home, c.Blob)
	if c.Parent != baseID || !slices.Equal(c.Tags, []string{"child"}) || c.VirtualSize != 64<<20 || c.BlobSize != fileSize(t, childBlob) {
		t.Errorf("child entry: %+v", c)
	}
	chain := testkit.QemuChain(t, childBlob)
	if len(chain) != 2 || chain[0].BackingFilename != filepath.Base(baseBlob) || chain[0].BackingFormat != "qcow2" ||
		chain[1].Filename != baseBlob || chain[1].BackingFilename != "" {
		t.Errorf("qemu-img info --backing-chain of the child blob: %+v", chain)
	}
	if fileSize(t, childBlob) > fileSize(t, baseBlob)/10 {
		t.Errorf("child blob is %d bytes, base blob %d: not a small delta", fileSize(t, childBlob), fileSize(t, baseBlob))
	}
	testkit.QemuCompare(t, childBlob, ov)
	if testkit.RawDigest(t, childBlob).String() != childID {
		t.Errorf("the child blob, opened in place, does not read as the image")
	}
	requireBlobsNamedByDigest(t, home)

	// export: one standalone file, as qcow2, compressed qcow2 and raw.
	out := filepath.Join(work, "out.qcow2")
	ok(t, home, "export", "child", out)
	testkit.QemuCompare(t, out, ov)
	testkit.QemuCheck(t, out)
	if i := testkit.QemuInfo(t, out); i.BackingFilename != "" {
		t.Errorf("export has a backing file %q", i.BackingFilename)
	}
	outc := filepath.Join(work, "outc.qcow2")
	ok(t, home, "export", "-c", "child", outc)
	testkit.QemuCompare(t, outc, ov)
	if _, cc, _ := testkit.QemuCheckReport(t, outc); cc.CompressedClusters == 0 {
		t.Errorf("export -c wrote no compressed cluster")
	}
	outRaw := filepath.Join(work, "out.raw")
	ok(t, home, "export", "child", outRaw, "-O", "raw")
	if got := testkit.Sha256sum(t, outRaw).String(); got != childID {
		t.Errorf("export -O raw: sha256sum %s, want the image ID %s", got, childID)
	}
	// An overlay on the child: a chain of three that qemu resolves.
	ov2 := filepath.Join(work, "vm2.qcow2")
	ok(t, home, "overlay", childID[:20], ov2)
	testkit.QemuCompare(t, ov2, ov)

	// list: the seed's table.
	text := ok(t, home, "list")
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "NAME") {
		t.Fatalf("list:\n%s", text)
	}
	rowBase := regexp.MustCompile(`^  default:base +64\.0 MiB +[0-9.]+ MiB +just now +Base ext4 disk$`)
	rowChild := regexp.MustCompile(`^\^ default:child +64\.0 MiB +[0-9.]+ (KiB|MiB) +just now *$`)
	if !slices.ContainsFunc(lines, rowBase.MatchString) || !slices.ContainsFunc(lines, rowChild.MatchString) {
		t.Errorf("list rows do not match %v and %v:\n%s", rowBase, rowChild, text)
	}

	// show --json: one document with the entry, tags, chain and children.
	show := func(name string) map[string]any {
		t.Helper()
		out := ok(t, home, "show", "--json", name)
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("show --json %s: %v\n%s", name, err, out)
		}
		return m
	}
	cs := show("child")
	for k, want := range map[string]any{
		"repo": "default", "id": childID, "parent": baseID, "blob": c.Blob, "blob-size": float64(c.BlobSize),
		"virtual-size": float64(64 << 20), "cluster-size": float64(65536), "compression": "zlib", "present": true,
	} {
		if cs[k] != want {
			t.Errorf("show --json child: %s = %v, want %v", k, cs[k], want)
		}
	}
	if !jsonList(cs["chain"], childID, baseID) || !jsonList(cs["children"]) || !jsonList(cs["tags"], "child") {
		t.Errorf("show --json child: chain %v, children %v, tags %v", cs["chain"], cs["children"], cs["tags"])
	}
	bs := show(shortID(baseID))
	if bs["id"] != baseID || bs["description"] != "Base ext4 disk" || bs["os"] != "Debian 12" || !jsonList(bs["children"], childID) || !jsonList(bs["chain"], baseID) {
		t.Errorf("show --json base: %v", bs)
	}
	if _, ok := bs["parent"]; ok {
		t.Errorf("show --json base has a parent: %v", bs["parent"])
	}
	if s := ok(t, home, "show", "child"); !strings.Contains(s, childID) || !strings.Contains(s, shortID(baseID)) {
		t.Errorf("show child:\n%s", s)
	}

	// del of the parent while the child exists is refused and changes nothing.
	before := snapshot(t, home)
	for _, name := range []string{"base", baseID, strings.TrimPrefix(baseID, "sha256:")[:8], "default:base"} {
		r := fails(t, home, "del", name)
		if !strings.Contains(r.stderr, "children") || !strings.Contains(r.stderr, "--recursive") {
			t.Errorf("del %s should name the children and --recursive\n%v", name, r)
		}
		requireUnchanged(t, home, before)
	}

	// tag: a new tag says nothing, moving one says so on stderr.
	if r := canga(t, home, "tag", "latest", "base"); r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Errorf("new tag:\n%v", r)
	}
	r = canga(t, home, "tag", "latest", "child")
	if r.code != 0 || !strings.HasPrefix(r.stderr, "canga: ") || !strings.Contains(r.stderr, "moved") ||
		!strings.Contains(r.stderr, shortID(baseID)) || !strings.Contains(r.stderr, shortID(childID)) {
		t.Errorf("moving a tag should say so, from what to what\n%v", r)
	}
	if it := mustItem(t, home, childID); !slices.Equal(it.Tags, []string{"child", "latest"}) {
		t.Errorf("child tags %v", it.Tags)
	}
	if it := mustItem(t, home, baseID); !slices.Equal(it.Tags, []string{"base"}) {
		t.Errorf("base tags %v", it.Tags)
	}
	if r := canga(t, home, "tag", "latest", "child"); r.code != 0 || r.stderr != "" {
		t.Errorf("re-tagging the same image should be quiet\n%v", r)
	}
	ok(t, home, "tag", "tmp", "default:child")
	ok(t, home, "deltag", "default:tmp")
	ok(t, home, "deltag", "latest")
	if it := mustItem(t, home, childID); !slices.Equal(it.Tags, []string{"child"}) {
		t.Errorf("after deltag, child tags %v", it.Tags)
	}
	before = snapshot(t, home)
	fails(t, home, "deltag", "latest")
	requireUnchanged(t, home, before)

	// Adding the same content again is a no-op that says so, whatever its
	// format; it may add a tag.
	for _, f := range []string{base, baseRaw(t)} {
		r := canga(t, home, "add", f)
		if r.code != 0 || strings.TrimSpace(r.stdout) != baseID || !strings.Contains(r.stderr, "already") {
			t.Errorf("second add of the base content\n%v", r)
		}
		requireUnchanged(t, home, before)
	}
	// A blob of the repository itself, opened in place, is that image.
	if r := canga(t, home, "add", childBlob); r.code != 0 || strings.TrimSpace(r.stdout) != childID || !strings.Contains(r.stderr, "already") {
		t.Errorf("add of the child's own blob\n%v", r)
	}
	requireUnchanged(t, home, before)
	r = canga(t, home, "add", ov, "--tag", "again")
	if r.code != 0 || strings.TrimSpace(r.stdout) != childID || !strings.Contains(r.stderr, "already") {
		t.Errorf("second add of the child with a tag\n%v", r)
	}
	if it := mustItem(t, home, childID); !slices.Equal(it.Tags, []string{"again", "child"}) {
		t.Errorf("child tags %v", it.Tags)
	}
	if after := snapshot(t, home); !mapsEqual(after.blobs, before.blobs) {
		t.Errorf("a second add changed the blobs")
	}

	// fsck passes on a sound repository: two images, each a qcow2 blob and
	// a chunk list.
	if out := ok(t, home, "fsck"); !strings.Contains(out, "2 images, 4 blobs, 2 image IDs verified") || !strings.Contains(out, "0 faults") {
		t.Errorf("fsck:\n%s", out)
	}

	// gc removes unreferenced blobs and .tmp debris, and nothing else.
	junkBlob := []byte("an unreferenced blob")
	sum := sha256.Sum256(junkBlob)
	junkPath := filepath.Join(blobDir(home), hex.EncodeToString(sum[:]))
	if err := os.WriteFile(junkPath, junkBlob, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repoDir(home), ".tmp", "tmp-add-12345.qcow2"), []byte("debris"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := canga(t, home, "fsck"); r.code != 0 || !strings.Contains(r.stdout, "1 unused blobs") {
		t.Errorf("fsck with an unused blob: it is no fault, but should be mentioned\n%v", r)
	}
	if out := ok(t, home, "gc"); !strings.Contains(out, "removed 1 blobs and 1 temporary files") {
		t.Errorf("gc: %s", out)
	}
	if _, err := os.Stat(junkPath); err == nil {
		t.Errorf("gc left the unreferenced blob")
	}
	if names := tmpEntries(t, home); len(names) != 0 {
		t.Errorf("gc left .tmp/%v", names)
	}
	requireBlobsNamedByDigest(t, home)
	if after := qcow2Blobs(t, home); len(after) != 2 {
		t.Errorf("after gc: blobs %v", after)
	}
	ok(t, home, "fsck")

	// One flipped byte in a blob: fsck fails and names the image.
	testkit.FlipByte(t, childBlob, fileSize(t, childBlob)/2)
	r = canga(t, home, "fsck")
	if r.code == 0 || !strings.Contains(r.stdout, "FAULT "+shortID(childID)) || !strings.HasPrefix(r.stderr, "canga: ") {
		t.Errorf("fsck with a damaged child blob should fail naming %s\n%v", shortID(childID), r)
	}
	testkit.FlipByte(t, childBlob, fileSize(t, childBlob)/2)
	testkit.FlipByte(t, baseBlob, 100) // in the header
	r = canga(t, home, "fsck")
	if r.code == 0 || !strings.Contains(r.stdout, "FAULT "+shortID(baseID)) {
		t.Errorf("fsck with a damaged base blob should fail naming %s\n%v", shortID(baseID), r)
	}
	testkit.FlipByte(t, baseBlob, 100)
	ok(t, home, "fsck")

	// del --recursive removes both, their tags and their blobs.
	r = canga(t, home, "del", "--recursive", "base")
	if r.code != 0 || !strings.Contains(r.stdout, childID) || !strings.Contains(r.stdout, baseID) {
		t.Errorf("del --recursive\n%v", r)
	}
	if items := listJSON(t, home); len(items) != 0 {
		t.Errorf("after del --recursive: %+v", items)
	}
	if names := dirNames(t, blobDir(home)); len(names) != 0 {
		t.Errorf("after del --recursive, blobs: %v", names)
	}
	for _, name := range []string{"base", "child", "again"} {
		fails(t, home, "show", name)
	}
	ok(t, home, "fsck")
	// The overlay made earlier still points at the deleted blob: qemu
	// can no longer open it, which is what del means.
	if _, code, _ := testkit.RunCode(t, "qemu-img", "info", "--backing-chain", ov); code == 0 {
		t.Errorf("the overlay's backing blob is still there")
	}
}

// jsonList reports whether v is a JSON array of exactly these strings.
func jsonList(v any, want ...string) bool {
	a, ok := v.([]any)
	if !ok || len(a) != len(want) {
		return false
	}
	for i := range a {
		if a[i] != want[i] {
			return false
		}
	}
	return true
}

// --parent turns a standalone image into a delta against an image of the
// repository, even one it has little in common with.
func TestAddParentFlag(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	baseID := addID(t, home, baseRaw(t), "--tag", "base")
	otherID := addID(t, home, otherRaw(t), "--tag", "other")
	ov := filepath.Join(work, "vm.qcow2")
	ok(t, home, "overlay", "base", ov)
	testkit.QemuIO(t, "qcow2", ov, "write -P 0x99 9M 256k", "write -z 12M 64k")
	full := filepath.Join(work, "full.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-O", "qcow2", ov, full)
	fullID := testkit.RawDigest(t, full).String()
	baseBlob := blobPath(home, mustItem(t, home, baseID).Blob)

	id := addID(t, home, full, "--parent", "base", "--tag", "derived")
	if id != fullID {
		t.Fatalf("add --parent printed %s, want %s", id, fullID)
	}
	d := mustItem(t, home, id)
	blob := blobPath(home, d.Blob)
	if d.Parent != baseID {
		t.Errorf("parent %s, want %s", d.Parent, baseID)
	}
	if i := testkit.QemuInfo(t, blob); i.BackingFilename != filepath.Base(baseBlob) || i.BackingFormat != "qcow2" {
		t.Errorf("blob backing %q (%s), want %q (qcow2)", i.BackingFilename, i.BackingFormat, filepath.Base(baseBlob))
	}
	if n := fileSize(t, blob); n > fileSize(t, baseBlob)/10 {
		t.Errorf("delta blob is %d bytes, base blob %d", n, fileSize(t, baseBlob))
	}
	testkit.QemuCompare(t, blob, full)
	testkit.QemuCheck(t, blob)

	// A parent of another size and content: the delta is large, but
	// right.
	ok(t, home, "del", "derived")
	if _, err := os.Stat(blob); err == nil {
		t.Errorf("del left the blob of the deleted image")
	}
	if names := qcow2Blobs(t, home); len(names) != 2 {
		t.Errorf("after del, blobs %v (want base's and other's)", names)
	}
	requireBlobsNamedByDigest(t, home)
	id = addID(t, home, full, "--parent", shortID(otherID), "--tag", "odd-parent")
	d = mustItem(t, home, id)
	if id != fullID || d.Parent != otherID {
		t.Errorf("add --parent other: %s with parent %s", id, d.Parent)
	}
	testkit.QemuCompare(t, blobPath(home, d.Blob), full)
	testkit.QemuCheck(t, blobPath(home, d.Blob))
	ok(t, home, "fsck")

	before := snapshot(t, home)
	for _, p := range []string{"nosuch", "abc", strings.Repeat("f", 64)} {
		r := fails(t, home, "add", ov, "--parent", p)
		if !strings.Contains(r.stderr, "--parent") {
			t.Errorf("error should name --parent\n%v", r)
		}
	}
	requireUnchanged(t, home, before)
}

// A file whose backing chain leads into the repository by content rather
// than by blob path is a delta too; a chain unknown to the repository is
// stored whole.
func TestAddBackingChain(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	baseID := addID(t, home, baseRaw(t), "--tag", "base")

	// The backing file is a copy of the base content, not the blob.
	copyFile(t, baseQcow2(t), filepath.Join(work, "mybase.qcow2"))
	ov := filepath.Join(work, "ov.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mybase.qcow2", "-F", "qcow2", ov)
	testkit.QemuIO(t, "qcow2", ov, "write -P 0x42 20M 128k")
	r := canga(t, home, "add", ov)
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 || id != testkit.RawDigest(t, ov).String() {
		t.Fatalf("%v", r)
	}
	e := mustItem(t, home, id)
	if e.Parent != baseID || !strings.Contains(r.stderr, "parent "+shortID(baseID)) {
		t.Errorf("parent %q, want %s found by content\n%v", e.Parent, baseID, r)
	}
	testkit.QemuCompare(t, blobPath(home, e.Blob), ov)
	if n := fileSize(t, blobPath(home, e.Blob)); n > 1<<20 {
		t.Errorf("delta blob is %d bytes", n)
	}

	// A chain the repository knows nothing of.
	copyFile(t, otherRaw(t), filepath.Join(work, "foreign.raw"))
	ov2 := filepath.Join(work, "ov2.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "foreign.raw", "-F", "raw", ov2)
	testkit.QemuIO(t, "qcow2", ov2, "write -P 0x43 1M 64k")
	r = canga(t, home, "add", ov2)
	id2 := strings.TrimSpace(r.stdout)
	if r.code != 0 || id2 != testkit.RawDigest(t, ov2).String() {
		t.Fatalf("%v", r)
	}
	e2 := mustItem(t, home, id2)
	if e2.Parent != "" || !strings.Contains(r.stderr, "not in repository") {
		t.Errorf("parent %q: a foreign chain should be stored whole, and say so\n%v", e2.Parent, r)
	}
	if i := testkit.QemuInfo(t, blobPath(home, e2.Blob)); i.BackingFilename != "" {
		t.Errorf("whole image blob has backing file %q", i.BackingFilename)
	}
	testkit.QemuCompare(t, blobPath(home, e2.Blob), ov2)
	requireBlobsNamedByDigest(t, home)
	ok(t, home, "fsck")
}

// collidingContents returns two 4 KiB raw disks whose image IDs share
// their first 4 hex digits (a birthday search over ~300 candidates).
func collidingContents(t *testing.T) ([]byte, []byte) {
	t.Helper()
	seen := map[uint16]uint64{}
	mk := func(i uint64) []byte {
		b := make([]byte, 4096)
		binary.BigEndian.PutUint64(b, i)
		copy(b[8:], "canga ambiguity test")
		return b
	}
	for i := uint64(0); i < 1<<20; i++ {
		sum := sha256.Sum256(mk(i))
		p := binary.BigEndian.Uint16(sum[:])
		if j, ok := seen[p]; ok {
			return mk(j), mk(i)
		}
		seen[p] = i
	}
	t.Fatal("no collision")
	return nil, nil
}

func TestAmbiguousPrefix(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	a, b := collidingContents(t)
	pa, pb := filepath.Join(work, "a.raw"), filepath.Join(work, "b.raw")
	if err := os.WriteFile(pa, a, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pb, b, 0o644); err != nil {
		t.Fatal(err)
	}
	idA, idB := addID(t, home, pa), addID(t, home, pb)
	if idA != testkit.RawDigest(t, pa).String() || idB != testkit.RawDigest(t, pb).String() {
		t.Fatalf("IDs %s %s differ from qemu's", idA, idB)
	}
	hexA, hexB := strings.TrimPrefix(idA, "sha256:"), strings.TrimPrefix(idB, "sha256:")
	if hexA[:4] != hexB[:4] {
		t.Fatalf("no shared prefix: %s %s", idA, idB)
	}
	// The shortest prefix of A that B does not share.
	n := 4
	for hexA[:n] == hexB[:n] {
		n++
	}
	before := snapshot(t, home)
	for _, prefix := range []string{hexA[:4], "sha256:" + hexA[:4], hexA[:n-1]} {
		for _, args := range [][]string{
			{"show", prefix},
			{"del", prefix},
			{"tag", "x", prefix},
			{"export", prefix, filepath.Join(work, "out")},
			{"overlay", prefix, filepath.Join(work, "out")},
			{"add", pa, "--parent", prefix},
		} {
			r := fails(t, home, args...)
			if !strings.Contains(r.stderr, "ambiguous") || !strings.Contains(r.stderr, idA) || !strings.Contains(r.stderr, idB) {
				t.Errorf("an ambiguous prefix should list both candidates\n%v", r)
			}
		}
	}
	requireUnchanged(t, home, before)
	if _, err := os.Stat(filepath.Join(work, "out")); err == nil {
		t.Errorf("a failed export or overlay left its output")
	}
	// One more digit and it is unique.
	for _, name := range []string{hexA[:n], "sha256:" + hexA[:n], hexA, idA} {
		var m map[string]any
		if err := json.Unmarshal([]byte(ok(t, home, "show", "--json", name)), &m); err != nil || m["id"] != idA {
			t.Errorf("show %s: %v %v", name, m["id"], err)
		}
	}
	// Fewer than 4 hex digits is never a prefix.
	for _, name := range []string{hexA[:1], hexA[:2], hexA[:3], "sha256:" + hexA[:3]} {
		r := fails(t, home, "show", name)
		if !strings.Contains(r.stderr, "not found") && !strings.Contains(r.stderr, "no image") {
			t.Errorf("show %s\n%v", name, r)
		}
	}
	// Upper case is not how IDs are written; an exact tag wins over a prefix.
	fails(t, home, "show", strings.ToUpper(hexA[:n]))
	ok(t, home, "tag", "abc", idB)
	var m map[string]any
	if err := json.Unmarshal([]byte(ok(t, home, "show", "--json", "abc")), &m); err != nil || m["id"] != idB {
		t.Errorf("show abc (a tag): %v %v", m["id"], err)
	}
}

// Names that are not images, tags that cannot be, and the repository stays
// as it was.
func TestBadNames(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	id := addID(t, home, otherRaw(t), "--tag", "other")
	before := snapshot(t, home)
	out := filepath.Join(work, "out.qcow2")
	for _, args := range [][]string{
		{"show", "nosuch"},
		{"show", "other:1.0"},
		{"show", "default:nosuch"},
		{"show", "sha256:" + strings.Repeat("0", 64)},
		{"show", strings.Repeat("0", 64)},
		{"show", "sha256:zzzz"},
		{"show", ""},
		{"export", "nosuch", out},
		{"overlay", "nosuch", out},
		{"del", "nosuch"},
		{"del", ""},
		{"tag", "t", "nosuch"},
		{"deltag", "nosuch"},
		{"deltag", "default:nosuch"},
		{"list", "nosuchrepo"},
		{"fsck", "nosuchrepo"},
		{"gc", "nosuchrepo"},
		{"add", otherRaw(t), "nosuchrepo"},
		// Tags that would read as something else.
		{"tag", "default:x", "other"},
		{"tag", "default", "other"},
		{"add", baseRaw(t), "--tag", "default:x"},
		{"add", baseRaw(t), "--tag", "default"},
		// Tags that break the rules.
		{"tag", "Upper", "other"},
		{"tag", "sha256:abc", "other"},
		{"tag", "abcd", "other"},
		{"tag", "deadbeef00", "other"},
		{"tag", "-x", "other"},
		{"tag", "", "other"},
		{"tag", "a b", "other"},
		{"tag", strings.Repeat("a", 129), "other"},
		{"tag", "ünïcode", "other"},
		{"add", baseRaw(t), "--tag", "Bad"},
	} {
		fails(t, home, args...)
		requireUnchanged(t, home, before)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a failed command left %s", out)
	}
	// The tag and the repository-qualified names still work.
	for _, name := range []string{"other", "default:other", id, "default:" + shortID(id)} {
		ok(t, home, "show", name)
	}
}

// add of what is not a usable image: a clear error, and the repository,
// .tmp/ included, as it was.
func TestAddNotAnImage(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	addID(t, home, otherRaw(t), "--tag", "other")

	dir := filepath.Join(work, "adir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(work, "junk.qcow2")
	j := make([]byte, 70000)
	for i := range j {
		j[i] = byte(i * 13)
	}
	copy(j, "QFI\xfb")
	if err := os.WriteFile(junk, j, 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(work, "truncated.qcow2")
	b, err := os.ReadFile(baseQcow2(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(truncated, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	headerOnly := filepath.Join(work, "header-only.qcow2")
	if err := os.WriteFile(headerOnly, b[:200], 0o644); err != nil {
		t.Fatal(err)
	}
	noBacking := filepath.Join(work, "no-backing.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "missing.qcow2", "-F", "qcow2", noBacking, "64M")
	loop := filepath.Join(work, "loop.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "loop.qcow2", "-F", "qcow2", loop, "1M")
	badZlib := filepath.Join(work, "bad-zlib.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", otherRaw(t), badZlib)
	scrambleCompressed(t, badZlib)

	for _, tc := range []struct{ name, file, want string }{
		{"directory", dir, "not a regular file"},
		{"missing", filepath.Join(work, "missing.qcow2"), "no such file"},
		{"junk after the qcow2 magic", junk, "qcow2"},
		{"truncated qcow2", truncated, "past the end"},
		{"header only", headerOnly, "qcow2"},
		{"missing backing file", noBacking, "missing.qcow2"},
		{"backing loop", loop, "loop"},
		{"garbage compressed data", badZlib, "decompress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, home)
			r := fails(t, home, "add", tc.file, "--tag", "bad")
			if !strings.Contains(strings.ToLower(r.stderr), tc.want) {
				t.Errorf("stderr should mention %q\n%v", tc.want, r)
			}
			requireUnchanged(t, home, before)
			if names := tmpEntries(t, home); len(names) != 0 {
				t.Errorf("a failed add left .tmp/%v", names)
			}
		})
	}
	ok(t, home, "fsck")
}

// scrambleCompressed overwrites the middle of every compressed cluster of
// a qemu-made compressed image (its data lies past the metadata) so that
// it no longer decompresses; the metadata stays sound.
func scrambleCompressed(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l1 := binary.BigEndian.Uint64(b[40:])
	l2 := binary.BigEndian.Uint64(b[l1:]) & 0x00fffffffffffe00
	n := 0
	for i := uint64(0); i < 8192; i++ {
		e := binary.BigEndian.Uint64(b[l2+8*i:])
		if e&(1<<62) == 0 {
			continue
		}
		off := e & (1<<54 - 1) // 64 KiB clusters: 62-(16-8) offset bits
		for k := off + 4; k < off+40 && k < uint64(len(b)); k++ {
			b[k] ^= 0x5a
		}
		n++
	}
	if n == 0 {
		t.Fatal("no compressed cluster found")
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A broken configuration or index is reported, never replaced.
func TestBadConfigAndIndex(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, home string)
		want  string
	}{
		{"config is a directory", func(t *testing.T, home string) {
			mkdir(t, filepath.Join(home, "config.yaml"))
		}, "config"},
		{"malformed config", func(t *testing.T, home string) {
			testkit.WriteFile(t, filepath.Join(home, "config.yaml"), []byte("default_repo: default\nrepos: [\n"), 0o644)
		}, "config"},
		{"config not a mapping", func(t *testing.T, home string) {
			testkit.WriteFile(t, filepath.Join(home, "config.yaml"), []byte("- just\n- a list\n"), 0o644)
		}, "config"},
		{"default repo not configured", func(t *testing.T, home string) {
			testkit.WriteFile(t, filepath.Join(home, "config.yaml"), []byte("default_repo: nope\nrepos:\n  default:\n    path: "+filepath.Join(home, "default")+"\n"), 0o644)
		}, "nope"},
		{"repository path is a file", func(t *testing.T, home string) {
			testkit.WriteFile(t, filepath.Join(home, "afile"), []byte("x"), 0o644)
			testkit.WriteFile(t, filepath.Join(home, "config.yaml"), []byte("default_repo: default\nrepos:\n  default:\n    path: "+filepath.Join(home, "afile")+"\n"), 0o644)
		}, "afile"},
		{"home is a file", nil, ""},
		{"malformed index", func(t *testing.T, home string) {
			ok(t, home, "list")
			testkit.WriteFile(t, filepath.Join(home, "default", "index.yaml"), []byte("version: 1\nimages: [\n"), 0o644)
		}, "index.yaml"},
		{"index of a future version", func(t *testing.T, home string) {
			ok(t, home, "list")
			testkit.WriteFile(t, filepath.Join(home, "default", "index.yaml"), []byte("version: 99\nimages: {}\n"), 0o644)
		}, "version"},
		{"index naming a bad ID", func(t *testing.T, home string) {
			ok(t, home, "list")
			testkit.WriteFile(t, filepath.Join(home, "default", "index.yaml"), []byte("version: 1\nimages:\n  sha256:xyz:\n    blob: sha256:abc\n"), 0o644)
		}, "index.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			if tc.setup == nil {
				home = filepath.Join(home, "file")
				testkit.WriteFile(t, home, []byte("not a directory"), 0o644)
			} else {
				tc.setup(t, home)
			}
			files := treeDigest(t, home)
			for _, args := range [][]string{{"list"}, {"add", otherRaw(t), "--tag", "x"}, {"show", "x"}, {"tag", "y", "x"}, {"fsck"}, {"gc"}} {
				r := fails(t, home, args...)
				if !strings.Contains(r.stderr, tc.want) {
					t.Errorf("stderr should mention %q\n%v", tc.want, r)
				}
				if after := treeDigest(t, home); !mapsEqual(files, after) {
					t.Errorf("canga %v changed the home:\nbefore %v\nafter  %v", args, files, after)
				}
			}
		})
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

// treeDigest maps every file and directory under root to its digest
// ("dir" for directories), the lock file excepted: it is written by any
// writer that takes the lock.
func treeDigest(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case fi.IsDir():
			m[rel] = "dir"
		case fi.Name() == ".lock":
		case fi.Mode().IsRegular():
			m[rel] = testkit.FileDigest(t, p).String()
		default:
			m[rel] = fi.Mode().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// add --compression: the blob is compressed as asked, and the index says
// so, as qemu-img sees it.
func TestAddCompression(t *testing.T) {
	home := t.TempDir()
	src := baseQcow2(t)
	id := testkit.RawDigest(t, src).String()
	for _, tc := range []struct {
		comp, qemuType string
		compressed     bool
	}{{"none", "zlib", false}, {"zstd", "zstd", true}, {"zlib", "zlib", true}} {
		t.Run(tc.comp, func(t *testing.T) {
			if got := addID(t, home, src, "--compression", tc.comp); got != id {
				t.Fatalf("add: %s, want %s", got, id)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(ok(t, home, "show", "--json", id)), &m); err != nil {
				t.Fatal(err)
			}
			blob := blobPath(home, m["blob"].(string))
			info := testkit.QemuInfo(t, blob)
			if m["compression"] != tc.comp || info.FormatSpecific.Data.CompressionType != tc.qemuType ||
				m["cluster-size"] != float64(info.ClusterSize) {
				t.Errorf("index: compression %v, cluster size %v; qemu-img info: %s, %d", m["compression"], m["cluster-size"], info.FormatSpecific.Data.CompressionType, info.ClusterSize)
			}
			if _, c, _ := testkit.QemuCheckReport(t, blob); (c.CompressedClusters > 0) != tc.compressed {
				t.Errorf("%d compressed clusters", c.CompressedClusters)
			}
			testkit.QemuCompare(t, blob, src)
			testkit.QemuCheck(t, blob)
			ok(t, home, "fsck")
			ok(t, home, "del", id)
		})
	}
}

// Overlays of another size than their base, and chains of several files
// above a blob of the repository, are stored as deltas that read right.
func TestAddOverlayShapes(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	baseID := addID(t, home, baseRaw(t), "--tag", "base")
	baseBlob := blobPath(home, mustItem(t, home, baseID).Blob)
	data := dataClusters(t, baseRaw(t))

	larger := filepath.Join(work, "larger.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", baseBlob, "-F", "qcow2", larger, "100M")
	testkit.QemuIO(t, "qcow2", larger, "write -P 0x11 70M 64k", "write -P 0x12 63M 2M") // across the base's end
	smaller := filepath.Join(work, "smaller.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", baseBlob, "-F", "qcow2", smaller, "40M")
	testkit.QemuIO(t, "qcow2", smaller, "write -P 0x13 1M 64k")
	mid := filepath.Join(work, "mid.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", baseBlob, "-F", "qcow2", mid)
	testkit.QemuIO(t, "qcow2", mid, "write -P 0x14 2M 128k", "write -z "+itoa(data[4])+" 64k")
	top := filepath.Join(work, "top.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "mid.qcow2", "-F", "qcow2", top)
	testkit.QemuIO(t, "qcow2", top, "write -P 0x15 2M 4k", "discard "+itoa(data[6])+" 64k", "write -P 0x16 "+itoa(data[4]+8192)+" 4k")

	for _, f := range []string{larger, smaller, top, mid} {
		t.Run(filepath.Base(f), func(t *testing.T) {
			id := addID(t, home, f)
			if id != testkit.RawDigest(t, f).String() {
				t.Fatalf("add: %s, qemu says %s", id, testkit.RawDigest(t, f).String())
			}
			e := mustItem(t, home, id)
			if e.Parent == "" {
				t.Errorf("stored whole, not as a delta")
			}
			blob := blobPath(home, e.Blob)
			testkit.QemuCompare(t, blob, f)
			testkit.QemuCheck(t, blob)
			if i := testkit.QemuInfo(t, blob); i.VirtualSize != testkit.QemuInfo(t, f).VirtualSize {
				t.Errorf("blob virtual size %d", i.VirtualSize)
			}
		})
	}
	ok(t, home, "fsck")
}

// An interrupted add (Ctrl-C, or SIGTERM from a service manager) stops
// soon, says so, removes its temp file and leaves the repository as it was.
func TestAddInterrupted(t *testing.T) {
	home := t.TempDir()
	addID(t, home, otherRaw(t), "--tag", "other")
	big := bigRaw(t)
	start := time.Now()
	id := addID(t, home, big)
	normal := time.Since(start)
	ok(t, home, "del", id)
	ok(t, home, "gc")
	before := snapshot(t, home)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, out := startCanga(t, home, "add", big, "--tag", "big")
			time.Sleep(normal / 3)
			sent := time.Now()
			_ = cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("canga add still running 10 s after %v", sig)
			}
			took := time.Since(sent)
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if ws.Signaled() || ws.ExitStatus() == 0 {
				t.Errorf("after %v: %v (an add that finished first would be a slow signal)\n%s", sig, cmd.ProcessState, out)
			}
			if !strings.HasPrefix(out.String(), "canga: ") || strings.Contains(out.String(), "goroutine ") {
				t.Errorf("output after %v:\n%s", sig, out)
			}
			if took > 2*time.Second {
				t.Errorf("took %v to stop after %v", took, sig)
			}
			requireUnchanged(t, home, before)
			if names := tmpEntries(t, home); len(names) != 0 {
				t.Errorf("an interrupted add left .tmp/%v", names)
			}
		})
	}
	ok(t, home, "fsck")
}

// A fresh home: list works on an empty repository and writes the config
// of SPEC §3; --home overrides CANGA_HOME.
func TestFreshHome(t *testing.T) {
	home := filepath.Join(t.TempDir(), "new", "home")
	if out := ok(t, home, "list", "--json"); strings.Join(strings.Fields(out), "") != `{"version":1,"images":[]}` {
		t.Errorf("list --json of a fresh home: %q", out)
	}
	cfg, err := os.ReadFile(filepath.Join(home, "config.yaml"))
	if err != nil || !strings.Contains(string(cfg), "default_repo: default") || !strings.Contains(string(cfg), filepath.Join(home, "default")) {
		t.Errorf("config.yaml: %q, %v", cfg, err)
	}
	other := t.TempDir()
	id := addID(t, home, otherRaw(t), "default", "--home", other, "--tag", "x")
	if items := listJSON(t, home); len(items) != 0 {
		t.Errorf("--home was ignored: %+v", items)
	}
	if r := canga(t, "", "--home", other, "show", "x"); r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Errorf("%v", r)
	}
	var fsck map[string]any
	if err := json.Unmarshal([]byte(ok(t, other, "fsck", "--json")), &fsck); err != nil {
		t.Errorf("fsck --json: %v", err)
	}
}

// A blob gone from the repository is a fault fsck names, list marks the
// image as not there, export fails; adding the image again restores it.
func TestMissingBlob(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	src := baseQcow2(t)
	id := addID(t, home, src, "--tag", "base")
	blob := blobPath(home, mustItem(t, home, id).Blob)
	if err := os.Remove(blob); err != nil {
		t.Fatal(err)
	}
	r := canga(t, home, "fsck")
	if r.code == 0 || !strings.Contains(r.stdout, "FAULT "+shortID(id)) || !strings.Contains(r.stdout, "missing") {
		t.Errorf("fsck with a missing blob\n%v", r)
	}
	if out := ok(t, home, "list"); !strings.Contains(out, "\n *default:base ") {
		t.Errorf("list should mark the image *:\n%s", out)
	}
	fails(t, home, "export", "base", filepath.Join(work, "out.qcow2"))
	fails(t, home, "overlay", "base", filepath.Join(work, "ov.qcow2"))

	// The natural repair: add the file again.
	if got := addID(t, home, src); got != id {
		t.Fatalf("add: %s", got)
	}
	if _, err := os.Stat(blob); err != nil {
		t.Errorf("adding the image again did not restore its missing blob: %v", err)
	}
	if r := canga(t, home, "fsck"); r.code != 0 {
		t.Errorf("after adding the image again, fsck still fails\n%v", r)
	}
}

// Three generations: each blob backs onto its parent's by relative name,
// qemu resolves the chain in place, and del --recursive of the middle one
// takes its descendants and leaves its parent.
func TestThreeGenerations(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	baseID := addID(t, home, baseRaw(t), "--tag", "base")
	ov1 := filepath.Join(work, "ov1.qcow2")
	ok(t, home, "overlay", "base", ov1)
	testkit.QemuIO(t, "qcow2", ov1, "write -P 0x21 10M 1M")
	childID := addID(t, home, ov1, "--tag", "child")
	ov2 := filepath.Join(work, "ov2.qcow2")
	ok(t, home, "overlay", "child", ov2)
	testkit.QemuIO(t, "qcow2", ov2, "write -P 0x22 10M 64k", "write -z "+itoa(10<<20+512<<10)+" 64k", "write -P 0x23 30M 64k")
	gcID := addID(t, home, ov2, "--tag", "grandchild")
	if gcID != testkit.RawDigest(t, ov2).String() {
		t.Fatalf("add: %s, qemu says %s", gcID, testkit.RawDigest(t, ov2).String())
	}

	blobs := map[string]string{}
	for _, id := range []string{baseID, childID, gcID} {
		blobs[id] = blobPath(home, mustItem(t, home, id).Blob)
	}
	chain := testkit.QemuChain(t, blobs[gcID])
	if len(chain) != 3 || chain[0].BackingFilename != filepath.Base(blobs[childID]) ||
		chain[1].Filename != blobs[childID] || chain[1].BackingFilename != filepath.Base(blobs[baseID]) ||
		chain[2].Filename != blobs[baseID] {
		t.Errorf("qemu-img info --backing-chain: %+v", chain)
	}
	if e := mustItem(t, home, gcID); e.Parent != childID {
		t.Errorf("grandchild's parent %s", e.Parent)
	}
	testkit.QemuCompare(t, blobs[gcID], ov2)
	testkit.QemuCompare(t, blobs[childID], ov1)
	out := filepath.Join(work, "out.qcow2")
	ok(t, home, "export", "grandchild", out)
	testkit.QemuCompare(t, out, ov2)
	var m map[string]any
	if err := json.Unmarshal([]byte(ok(t, home, "show", "--json", "grandchild")), &m); err != nil || !jsonList(m["chain"], gcID, childID, baseID) {
		t.Errorf("show --json chain: %v (%v)", m["chain"], err)
	}
	if text := ok(t, home, "list"); strings.Count(text, "\n^ ") != 2 {
		t.Errorf("list should mark two images with ^:\n%s", text)
	}
	ok(t, home, "fsck")

	before := snapshot(t, home)
	fails(t, home, "del", "child")
	requireUnchanged(t, home, before)
	r := canga(t, home, "del", "-r", "child")
	if r.code != 0 || strings.Count(r.stdout, "deleted ") != 2 {
		t.Errorf("%v", r)
	}
	items := listJSON(t, home)
	if len(items) != 1 || items[0].ID != baseID {
		t.Errorf("after del -r child: %+v", items)
	}
	if names := qcow2Blobs(t, home); len(names) != 1 || names[0] != filepath.Base(blobs[baseID]) {
		t.Errorf("blobs after del -r child: %v", names)
	}
	requireBlobsNamedByDigest(t, home)
	ok(t, home, "fsck")
}
