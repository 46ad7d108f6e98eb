package main_test

// End-to-end tests of remote repositories (SPEC §2, §3, §5 fetch, pull,
// import, serve, sign, verify, §6): a publisher's repository served by
// real web servers, consumers that fetch and pull from it, and attacks by
// the server. The oracles are qemu-img, sha256sum, ssh-keygen and curl.

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// TestRemoteRoundTrip: fetch is byte-exact, list marks what is not
// downloaded, pull brings the chain with verified blobs, import + export
// give back the publisher's overlay, and fsck passes; against python's
// http.server and against canga serve.
func TestRemoteRoundTrip(t *testing.T) {
	pub := remPublisher(t)
	for _, srv := range remServers {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			served := remCopyRepo(t, pub.Repo)
			url := srv.start(t, served)
			home, cache := remConsumer(t, url, "")

			// Before the first fetch the remote is empty, not an error.
			if p := remPresent(t, home, remName); len(p) != 0 {
				t.Errorf("list before fetch shows %v", p)
			}
			fails(t, home, "pull", remName+":child")

			out := ok(t, home, "fetch")
			if !strings.HasPrefix(out, remName+": 2 images, 3 tags") {
				t.Errorf("fetch printed %q", out)
			}
			for _, f := range []string{"index.yaml", "index.yaml.sig"} {
				if got, want := testkit.ReadFile(t, filepath.Join(cache, f)), testkit.ReadFile(t, filepath.Join(served, f)); !bytes.Equal(got, want) {
					t.Errorf("cached %s differs from the publisher's\ncached:\n%s\npublisher:\n%s", f, got, want)
				}
			}

			flags := remListFlags(t, home)
			for name, want := range map[string]string{
				remName + ":base": " *", remName + ":child": "^*", remName + ":team/child:1.0": "^*",
			} {
				if flags[name] != want {
					t.Errorf("list: %s has flags %q, want %q (all: %q)", name, flags[name], want, flags)
				}
			}
			present := remPresent(t, home, remName)
			if len(present) != 2 || present[pub.BaseID] || present[pub.ChildID] {
				t.Errorf("list --json before pull: present %v", present)
			}
			// show works on an image that is not downloaded.
			if out := ok(t, home, "show", remName+":child"); !strings.Contains(out, strings.TrimPrefix(pub.ChildID, "sha256:")[:12]) {
				t.Errorf("show %s:child:\n%s", remName, out)
			}

			ok(t, home, "pull", remName+":child")
			names := remRequireGoodBlobs(t, cache)
			want := []string{strings.TrimPrefix(pub.BaseBlob, "sha256:"), strings.TrimPrefix(pub.ChildBlob, "sha256:")}
			if !remSameSet(names, want) {
				t.Errorf("cache blobs after pull: %v, want the parent's and the child's %v", names, want)
			}
			for _, b := range []string{pub.BaseBlob, pub.ChildBlob} {
				if got, want := testkit.FileDigest(t, remBlobFile(cache, b)).String(), testkit.FileDigest(t, remBlobFile(served, b)).String(); got != want {
					t.Errorf("pulled blob %s differs from the publisher's", b)
				}
			}
			present = remPresent(t, home, remName)
			if !present[pub.BaseID] || !present[pub.ChildID] {
				t.Errorf("list --json after pull: present %v", present)
			}
			for name, fl := range remListFlags(t, home) {
				if strings.HasPrefix(name, remName+":") && fl[1] == '*' {
					t.Errorf("list after pull: %s still has * (%q)", name, fl)
				}
			}
			if tmp := remDirNames(t, filepath.Join(cache, ".tmp")); len(tmp) != 0 {
				t.Errorf("pull left %v in the cache's .tmp", tmp)
			}
			// The pulled chain is one qemu can open from the cache itself.
			chain := testkit.QemuChain(t, remBlobFile(cache, pub.ChildBlob))
			if len(chain) != 2 || chain[0].BackingFilename != strings.TrimPrefix(pub.BaseBlob, "sha256:") {
				t.Errorf("qemu-img info --backing-chain of the pulled child: %+v", chain)
			}

			if out := strings.TrimSpace(ok(t, home, "import", "child", "--tag", "x")); out != pub.ChildID {
				t.Errorf("import printed %q, want %s", out, pub.ChildID)
			}
			exported := filepath.Join(t.TempDir(), "out.qcow2")
			ok(t, home, "export", "x", exported)
			testkit.QemuCompare(t, exported, pub.Child)
			if got := testkit.RawDigest(t, exported).String(); got != pub.ChildID {
				t.Errorf("exported image ID %s, want %s", got, pub.ChildID)
			}
			if got := testkit.RawDigest(t, pub.Child).String(); got != pub.ChildID {
				t.Errorf("the publisher's overlay has image ID %s, its add printed %s", got, pub.ChildID)
			}
			remRequireGoodBlobs(t, filepath.Join(home, "default"))
			items := listJSON(t, home)
			if it := remFindItem(items, "default", pub.ChildID); it == nil || !it.Present || it.Parent != pub.BaseID || !remContains(it.Tags, "x") {
				t.Errorf("default repository after import: %+v", it)
			}
			if it := remFindItem(items, "default", pub.BaseID); it == nil || !it.Present {
				t.Errorf("import did not bring the parent: %+v", it)
			}

			ok(t, home, "fsck", remName)
			ok(t, home, "fsck")
			// gc of the cache keeps what its index references.
			ok(t, home, "gc", remName)
			if names := remRequireGoodBlobs(t, cache); len(names) != 2 {
				t.Errorf("gc of the cache left %v", names)
			}
			// A remote's cache is written by fetch and pull only.
			fails(t, home, "import", "x", remName)
			fails(t, home, "add", pub.Child, remName)
			fails(t, home, "tag", "y", remName+":child")
			fails(t, home, "del", remName+":child")
			if p := remPresent(t, home, remName); len(p) != 2 || !p[pub.ChildID] {
				t.Errorf("after refused writes to the cache, list shows %v", p)
			}
			if got, want := testkit.ReadFile(t, filepath.Join(cache, "index.yaml")), testkit.ReadFile(t, filepath.Join(served, "index.yaml")); !bytes.Equal(got, want) {
				t.Errorf("a refused write changed the cached index")
			}
			// A second pull has nothing to do, and a second fetch changes
			// nothing.
			before := remCacheState(t, cache)
			ok(t, home, "pull", remName+":team/child:1.0")
			ok(t, home, "fetch", remName)
			if after := remCacheState(t, cache); !bytes.Equal(before.index, after.index) || !bytes.Equal(before.sig, after.sig) {
				t.Errorf("fetch of an unchanged remote changed the cache")
			}
		})
	}
}

func remSameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

func remContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func remFindItem(items []listEntry, repo, id string) *listEntry {
	for i := range items {
		if items[i].Repo == repo && items[i].ID == id {
			return &items[i]
		}
	}
	return nil
}

func remDirNames(t testing.TB, dir string) []string {
	t.Helper()
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	return dirNames(t, dir)
}

// TestRemoteBadBlobs: a server that serves a blob whose bytes were
// changed, or a truncated one, makes pull fail and stores nothing bad;
// once the server is fixed, pull works.
func TestRemoteBadBlobs(t *testing.T) {
	pub := remPublisher(t)
	type damageFn func(t *testing.T, path string)
	flip := func(t *testing.T, path string) { testkit.FlipByte(t, path, fileSize(t, path)/2+123) }
	truncate := func(t *testing.T, path string) {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fileSize(t, path)/2); err != nil {
			t.Fatal(err)
		}
	}
	// A byte inside the header: refused as soon as the first cluster is in.
	flipHeader := func(t *testing.T, path string) { testkit.FlipByte(t, path, 0x70) }
	appendBytes := func(t *testing.T, path string) {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(make([]byte, 65536)); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		server string
		base   bool // damage the base's blob, else the child's
		damage damageFn
	}{
		{"flipped base byte", "python", true, flip},
		{"flipped child byte", "python", false, flip},
		{"flipped header byte", "python", false, flipHeader},
		{"truncated base", "python", true, truncate},
		{"truncated child", "python", false, truncate},
		{"longer base", "python", true, appendBytes},
		{"flipped base byte", "canga-serve", true, flip},
		{"longer child", "canga-serve", false, appendBytes},
		{"truncated child", "canga-serve", false, truncate},
	}
	for _, tc := range tests {
		t.Run(tc.server+"/"+tc.name, func(t *testing.T) {
			t.Parallel()
			served := remCopyRepo(t, pub.Repo)
			url := remStart(t, tc.server, served)
			home, cache := remConsumer(t, url, "")
			ok(t, home, "fetch")
			bad, badID := pub.ChildBlob, pub.ChildID
			if tc.base {
				bad, badID = pub.BaseBlob, pub.BaseID
			}
			path := remBlobFile(served, bad)
			good := filepath.Join(t.TempDir(), "good")
			copyFile(t, path, good)
			tc.damage(t, path)

			r := fails(t, home, "pull", remName+":child")
			t.Logf("pull: %s", r.stderr)
			if !strings.Contains(r.stderr, "pull "+remShortID(badID)) {
				t.Errorf("the error does not name the damaged image %s:\n%s", remShortID(badID), r.stderr)
			}
			remRequireGoodBlobs(t, cache, bad)
			if strings.Contains(tc.name, "flipped") {
				remNoPartial(t, cache, bad)
			}
			if p := remPresent(t, home, remName); p[badID] {
				t.Errorf("the damaged image is present after a failed pull: %v", p)
			}
			fails(t, home, "export", remName+":child", filepath.Join(t.TempDir(), "x.qcow2"))
			fails(t, home, "import", remName+":child")
			if names := remRequireGoodBlobs(t, filepath.Join(home, "default")); len(names) != 0 {
				t.Errorf("a failed import left blobs %v in the default repository", names)
			}
			if _, err := os.Stat(filepath.Join(home, "default", "index.yaml")); err == nil {
				if items := listJSON(t, home); remFindItem(items, "default", pub.ChildID) != nil {
					t.Errorf("a failed import added the child to the default repository")
				}
			}
			ok(t, home, "fsck", remName)

			// The publisher repairs the file: pull completes.
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			copyFile(t, good, path)
			ok(t, home, "pull", remName+":child")
			remRequireGoodBlobs(t, cache)
			if p := remPresent(t, home, remName); !p[pub.ChildID] || !p[pub.BaseID] {
				t.Errorf("after the repair, present %v", p)
			}
		})
	}
}

func remShortID(id string) string { return strings.TrimPrefix(id, "sha256:")[:16] }

func remStart(t testing.TB, server, dir string) string {
	t.Helper()
	for _, s := range remServers {
		if s.name == server {
			return s.start(t, dir)
		}
	}
	t.Fatalf("no server %s", server)
	return ""
}

// TestRemoteResume: a server that dies in the middle of a blob and comes
// back later. The first pull fails and keeps what it got; the second goes
// on from there with a Range request (or, when the server ignores Range,
// starts the blob again) and stores exactly the publisher's blob.
func TestRemoteResume(t *testing.T) {
	pub := remPublisher(t)
	size := fileSize(t, remBlobFile(pub.Repo, pub.BaseBlob))
	const cut = 2<<20 + 12345
	if size < 2*cut {
		t.Fatalf("the base blob has %d bytes: too small to cut at %d", size, cut)
	}
	for _, honour := range []bool{true, false} {
		t.Run("range="+strconv.FormatBool(honour), func(t *testing.T) {
			t.Parallel()
			f := &remFlaky{dir: pub.Repo, blob: strings.TrimPrefix(pub.BaseBlob, "sha256:"), cut: cut, honourRange: honour}
			url := remStartFlaky(t, f)
			home, cache := remConsumer(t, url, "")
			ok(t, home, "fetch")

			start := time.Now()
			fails(t, home, "pull", remName+":child")
			t.Logf("the pull that met a dead server failed after %v", time.Since(start).Round(time.Millisecond))
			partial := filepath.Join(cache, ".tmp", "partial-"+f.blob)
			fi, err := os.Stat(partial)
			if err != nil {
				t.Fatalf("no partial download kept after the server died: %v (.tmp: %v)", err, remDirNames(t, filepath.Join(cache, ".tmp")))
			}
			kept := fi.Size()
			if kept <= 0 || kept > cut {
				t.Errorf("the partial holds %d bytes; the server sent %d", kept, cut)
			}
			if b := testkit.ReadFile(t, partial); !bytes.Equal(b, testkit.ReadFile(t, remBlobFile(pub.Repo, pub.BaseBlob))[:len(b)]) {
				t.Errorf("the partial is not a prefix of the blob")
			}
			remRequireGoodBlobs(t, cache, pub.BaseBlob)

			f.up()
			ok(t, home, "pull", remName+":child")
			ranges, cuts := f.seen()
			if cuts != 1 {
				t.Errorf("the server cut %d transfers, want 1", cuts)
			}
			last := ranges[len(ranges)-1]
			if want := "bytes=" + strconv.FormatInt(kept, 10) + "-"; last != want {
				t.Errorf("the second pull asked for Range %q, want %q (requests: %q)", last, want, ranges)
			}
			if ranges[0] != "" {
				t.Errorf("the first request of the blob had Range %q", ranges[0])
			}
			names := remRequireGoodBlobs(t, cache)
			if !remContains(names, f.blob) || !remContains(names, strings.TrimPrefix(pub.ChildBlob, "sha256:")) {
				t.Errorf("blobs after the resumed pull: %v", names)
			}
			if tmp := remDirNames(t, filepath.Join(cache, ".tmp")); len(tmp) != 0 {
				t.Errorf(".tmp after the resumed pull: %v", tmp)
			}
			ok(t, home, "fsck", remName)
		})
	}
}

// TestRemoteResumeBadPrefix: the bytes a first, interrupted, attempt
// kept are wrong (a bad proxy, a bad disk). The resumed download ends in
// a digest mismatch; canga starts the blob again from zero, once, and
// stores the right bytes.
func TestRemoteResumeBadPrefix(t *testing.T) {
	t.Parallel()
	pub := remPublisher(t)
	const cut = 2<<20 + 12345
	f := &remFlaky{dir: pub.Repo, blob: strings.TrimPrefix(pub.BaseBlob, "sha256:"), cut: cut, honourRange: true,
		flipAt: 2<<20 + 100, downStatus: http.StatusNotFound}
	url := remStartFlaky(t, f)
	home, cache := remConsumer(t, url, "")
	ok(t, home, "fetch")
	fails(t, home, "pull", remName+":base")
	partial := filepath.Join(cache, ".tmp", "partial-"+f.blob)
	kept := fileSize(t, partial)
	if kept <= f.flipAt {
		t.Fatalf("the partial holds %d bytes, not the bad one at %d", kept, f.flipAt)
	}
	first, _ := f.seen()
	f.up()
	ok(t, home, "pull", remName+":base")
	all, _ := f.seen()
	ranges := all[len(first):]
	want := []string{"bytes=" + strconv.FormatInt(kept, 10) + "-", ""}
	if len(ranges) != len(want) || ranges[0] != want[0] || ranges[1] != want[1] {
		t.Errorf("the second pull sent Range headers %q, want %q: resume, then start again", ranges, want)
	}
	remRequireGoodBlobs(t, cache)
	if p := remPresent(t, home, remName); !p[pub.BaseID] {
		t.Errorf("present: %v", p)
	}
	remNoPartial(t, cache, pub.BaseBlob)
}

// TestRemoteHostileBacking: a remote blob whose backing file is a host
// file (or a json: or relative name) never enters the cache, though the
// index names it with its right digest and size.
func TestRemoteHostileBacking(t *testing.T) {
	pub := remPublisher(t)
	vsize := strconv.FormatInt(testkit.QemuInfo(t, pub.Child).VirtualSize, 10)
	parentHex := strings.TrimPrefix(pub.BaseBlob, "sha256:")
	tests := []struct {
		name, server string
		base         bool // replace the base's blob (a base must have no backing file)
		backing      string
		opts         []string // more qemu-img create arguments
		size         string   // virtual size, if not the index's
		want         string   // in the error
	}{
		{"shadow", "python", false, "/etc/shadow", nil, "", "backing"},
		{"dotdot", "python", false, "../x", nil, "", "backing"},
		{"json", "python", false, `json:{"file.filename":"/etc/passwd"}`, nil, "", "backing"},
		{"parent by absolute path", "python", false, "/PARENT", nil, "", "backing"},
		{"parent without backing format", "python", false, "PARENTHEX", []string{"-F", "raw"}, "", "backing format"},
		{"external data file", "python", false, "PARENTHEX", []string{"-o", "data_file=DATAFILE"}, "", "data"},
		{"virtual size not the index's", "python", false, "PARENTHEX", nil, "1T", "virtual size"},
		{"base with a backing file", "python", true, "/etc/passwd", nil, "", "backing"},
		{"shadow", "canga-serve", false, "/etc/shadow", nil, "", "backing"},
		{"json", "canga-serve", false, `json:{"file.filename":"/etc/passwd"}`, nil, "", "backing"},
	}
	for _, tc := range tests {
		t.Run(tc.server+"/"+tc.name, func(t *testing.T) {
			t.Parallel()
			served := remCopyRepo(t, pub.Repo)
			if err := os.Remove(filepath.Join(served, "index.yaml.sig")); err != nil {
				t.Fatal(err)
			}
			backing := strings.ReplaceAll(tc.backing, "/PARENT", remBlobFile(served, pub.BaseBlob))
			backing = strings.ReplaceAll(backing, "PARENTHEX", parentHex)
			tmp := t.TempDir()
			evil := filepath.Join(tmp, "evil.qcow2")
			args := []string{"create", "-q", "-f", "qcow2", "-u", "-b", backing}
			if len(tc.opts) == 0 || tc.opts[0] != "-F" {
				args = append(args, "-F", "qcow2")
			}
			for _, o := range tc.opts {
				args = append(args, strings.ReplaceAll(o, "DATAFILE", filepath.Join(tmp, "data.raw")))
			}
			size := vsize
			if tc.size != "" {
				size = tc.size
			}
			testkit.Run(t, "qemu-img", append(args, evil, size)...)
			if got := testkit.QemuInfo(t, evil).BackingFilename; got != backing {
				t.Fatalf("qemu-img made backing file %q", got)
			}
			id := pub.ChildID
			if tc.base {
				id = pub.BaseID
			}
			bad := remPutBlob(t, served, id, evil)
			url := remStart(t, tc.server, served)
			home, cache := remConsumer(t, url, "")
			ok(t, home, "fetch")

			// Pull the hostile image itself: a refusal elsewhere in the
			// chain would cancel its download, whose partial is then
			// kept for a later attempt, as documented.
			name := remName + ":child"
			if tc.base {
				name = remName + ":base"
			}
			r := fails(t, home, "pull", name)
			t.Logf("pull: %s", r.stderr)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("the error does not say %q:\n%s", tc.want, r.stderr)
			}
			remRequireGoodBlobs(t, cache, bad)
			remNoPartial(t, cache, bad)
			if p := remPresent(t, home, remName); p[id] {
				t.Errorf("the hostile image is present: %v", p)
			}
			fails(t, home, "pull", remName+":child")
			fails(t, home, "import", remName+":child", "--tag", "x")
			remRequireGoodBlobs(t, cache, bad)
			if names := remRequireGoodBlobs(t, filepath.Join(home, "default")); len(names) != 0 {
				t.Errorf("a refused import left blobs %v", names)
			}
			ok(t, home, "fsck", remName)
		})
	}
}

// TestRemoteSignedFetch: a remote with allowed_signers must present a
// valid signature on every fetch; otherwise the fetch fails and the
// previous index and signature stay as they were.
func TestRemoteSignedFetch(t *testing.T) {
	pub := remPublisher(t)
	keys := t.TempDir()
	other := testkit.Keygen(t, keys, "other", "", "-t", "ed25519")
	tests := []struct {
		name   string
		server string
		attack func(t *testing.T, served string)
	}{
		{"index tampered after signing", "python", func(t *testing.T, served string) {
			remEditIndex(t, served, func(s string) string { return strings.Replace(s, "rem base", "evil base", 1) })
		}},
		{"one byte appended to the index", "canga-serve", func(t *testing.T, served string) {
			p := filepath.Join(served, "index.yaml")
			remWriteFile(t, p, append(testkit.ReadFile(t, p), '\n'), 0o644)
		}},
		{"signed by a key not in allowed_signers", "python", func(t *testing.T, served string) {
			testkit.SSHSign(t, other, "canga-index", filepath.Join(served, "index.yaml"))
		}},
		{"signed by the right key for another namespace", "python", func(t *testing.T, served string) {
			testkit.SSHSign(t, pub.Key, "file", filepath.Join(served, "index.yaml"))
		}},
		{"no signature", "python", func(t *testing.T, served string) {
			if err := os.Remove(filepath.Join(served, "index.yaml.sig")); err != nil {
				t.Fatal(err)
			}
		}},
		{"no signature", "canga-serve", func(t *testing.T, served string) {
			if err := os.Remove(filepath.Join(served, "index.yaml.sig")); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty signature", "python", func(t *testing.T, served string) {
			remWriteFile(t, filepath.Join(served, "index.yaml.sig"), nil, 0o644)
		}},
		{"garbage signature", "python", func(t *testing.T, served string) {
			remWriteFile(t, filepath.Join(served, "index.yaml.sig"), []byte("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"), 0o644)
		}},
		{"signature of the previous index", "python", func(t *testing.T, served string) {
			// A new index under the old signature: the publisher added an
			// image and did not sign again.
			home := remPubHome(t, served)
			ok(t, home, "add", otherRaw(t), "--tag", "other")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.server+"/"+tc.name, func(t *testing.T) {
			t.Parallel()
			served := remCopyRepo(t, pub.Repo)
			url := remStart(t, tc.server, served)
			home, cache := remConsumer(t, url, pub.AllowedSigners)
			out := ok(t, home, "fetch")
			if !strings.Contains(out, "signed by "+remPrincipal) || !strings.Contains(out, testkit.Fingerprint(t, pub.Key+".pub")) {
				t.Errorf("fetch of a signed index printed %q", out)
			}
			if out := ok(t, home, "verify", remName); !strings.Contains(out, remPrincipal) {
				t.Errorf("verify of the cache printed %q", out)
			}

			tc.attack(t, served)
			r := remFetchFailsKeeps(t, home, cache)
			t.Logf("fetch: %s", r.stderr)
			if !strings.Contains(strings.ToLower(r.stderr), "signature") {
				t.Errorf("the error does not mention the signature:\n%s", r.stderr)
			}
			// The previous index is still usable.
			if p := remPresent(t, home, remName); len(p) != 2 {
				t.Errorf("after a refused fetch, list shows %v", p)
			}
			ok(t, home, "pull", remName+":child")
			remRequireGoodBlobs(t, cache)
			ok(t, home, "verify", remName)

			// Signed again by the publisher: the fetch goes through.
			pubHome := remPubHome(t, served)
			ok(t, pubHome, "sign", "--key", pub.Key)
			ok(t, home, "fetch")
			if got, want := testkit.ReadFile(t, filepath.Join(cache, "index.yaml")), testkit.ReadFile(t, filepath.Join(served, "index.yaml")); !bytes.Equal(got, want) {
				t.Errorf("after re-signing, the cached index differs from the publisher's")
			}
		})
	}
}

// TestRemoteSignedCacheTampered: a cached index edited behind canga's
// back is refused when the remote requires a signature.
func TestRemoteSignedCacheTampered(t *testing.T) {
	t.Parallel()
	pub := remPublisher(t)
	url := testkit.PythonHTTPServer(t, remCopyRepo(t, pub.Repo))
	home, cache := remConsumer(t, url, pub.AllowedSigners)
	ok(t, home, "fetch")
	p := filepath.Join(cache, "index.yaml")
	b := testkit.ReadFile(t, p)
	remWriteFile(t, p, bytes.Replace(b, []byte("rem base"), []byte("evil base"), 1), 0o644)
	fails(t, home, "pull", remName+":child")
	fails(t, home, "verify", remName)
	remRequireGoodBlobs(t, cache)
	if names := remDirNames(t, filepath.Join(cache, "blobs", "sha256")); len(names) != 0 {
		t.Errorf("a pull from a tampered cache stored %v", names)
	}
	// The next fetch repairs it.
	ok(t, home, "fetch")
	ok(t, home, "pull", remName+":child")
}

// TestRemoteBadIndex: an index whose digests are path-like or malformed
// is refused at fetch; the previous index stays.
func TestRemoteBadIndex(t *testing.T) {
	pub := remPublisher(t)
	baseHex := strings.TrimPrefix(pub.BaseID, "sha256:")
	childHex := strings.TrimPrefix(pub.ChildID, "sha256:")
	tests := []struct {
		name string
		edit func(t *testing.T, ix string) string
	}{
		{"path-like blob", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob", "sha256:../../etc/passwd")
		}},
		{"path-like blob of 64 characters", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob", "sha256:../../../../../../../../../../../../../../../../../etc/passwd")
		}},
		{"path-like image ID", func(t *testing.T, ix string) string {
			return strings.ReplaceAll(ix, pub.ChildID, "sha256:../../etc/passwd")
		}},
		{"path-like parent", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "parent", "sha256:../../etc/passwd")
		}},
		{"path-like tag target", func(t *testing.T, ix string) string {
			return strings.Replace(ix, "  child: "+pub.ChildID, "  child: sha256:../../etc/passwd", 1)
		}},
		{"blob with upper-case hex", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob", strings.ToUpper(pub.ChildBlob))
		}},
		{"blob with 63 hex digits", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob", pub.ChildBlob[:len(pub.ChildBlob)-1])
		}},
		{"blob with a non-hex digit", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob", pub.ChildBlob[:len(pub.ChildBlob)-1]+"g")
		}},
		{"blob without algorithm", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob", strings.TrimPrefix(pub.ChildBlob, "sha256:"))
		}},
		{"blob with md5", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob", "md5:d41d8cd98f00b204e9800998ecf8427e")
		}},
		{"blob with a slash", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob", "sha256:"+strings.Repeat("a", 31)+"/"+strings.Repeat("a", 32))
		}},
		{"empty blob", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob", `""`)
		}},
		{"bare hex image ID in version 1", func(t *testing.T, ix string) string {
			return strings.ReplaceAll(ix, pub.ChildID, childHex)
		}},
		{"image ID with 65 hex digits", func(t *testing.T, ix string) string {
			return strings.ReplaceAll(ix, pub.ChildID, pub.ChildID+"0")
		}},
		{"parent that is no image", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "parent", "sha256:"+strings.Repeat("0", 64))
		}},
		{"parent loop", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "parent", pub.ChildID)
		}},
		{"negative blob-size", func(t *testing.T, ix string) string {
			return remSetEntryField(t, ix, pub.ChildID, "blob-size", "-1")
		}},
		{"version 2", func(t *testing.T, ix string) string {
			return strings.Replace(ix, "version: 1", "version: 2", 1)
		}},
		{"not YAML", func(t *testing.T, ix string) string { return "version: 1\nimages: {" + baseHex }},
	}
	served := remCopyRepo(t, pub.Repo)
	if err := os.Remove(filepath.Join(served, "index.yaml.sig")); err != nil {
		t.Fatal(err)
	}
	good := string(testkit.ReadFile(t, filepath.Join(served, "index.yaml")))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "repo")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			// Blobs are not needed: the fetch must stop at the index.
			remWriteFile(t, filepath.Join(dir, "index.yaml"), []byte(good), 0o644)
			url := testkit.PythonHTTPServer(t, dir)
			home, cache := remConsumer(t, url, "")
			ok(t, home, "fetch")
			bad := tc.edit(t, good)
			if bad == good {
				t.Fatalf("the edit changed nothing")
			}
			remWriteFile(t, filepath.Join(dir, "index.yaml"), []byte(bad), 0o644)
			r := remFetchFailsKeeps(t, home, cache)
			t.Logf("fetch: %s", r.stderr)
			if p := remPresent(t, home, remName); len(p) != 2 {
				t.Errorf("after a refused fetch, list shows %v", p)
			}
			remRequireGoodBlobs(t, cache)
		})
	}
}

// TestRemoteSignVerifyCLI: canga sign makes signatures ssh-keygen accepts,
// canga verify accepts ssh-keygen's, and refuses what it must.
func TestRemoteSignVerifyCLI(t *testing.T) {
	pub := remPublisher(t)
	keyTypes := []struct {
		typ   string
		extra []string
	}{
		{"ed25519", nil},
		{"rsa", []string{"-b", "3072"}},
		{"ecdsa", []string{"-b", "256"}},
	}
	for _, kt := range keyTypes {
		t.Run(kt.typ, func(t *testing.T) {
			t.Parallel()
			keys := t.TempDir()
			key := testkit.Keygen(t, keys, "signer-"+kt.typ, "", append([]string{"-t", kt.typ}, kt.extra...)...)
			principal := kt.typ + "@example.org"
			signers := remAllowedSigners(t, keys, principal, key, "")
			served := remCopyRepo(t, pub.Repo)
			home := remPubHome(t, served)
			ix := filepath.Join(served, "index.yaml")
			sig := ix + ".sig"

			out := ok(t, home, "sign", "--key", key)
			if fp := testkit.Fingerprint(t, key+".pub"); !strings.Contains(out, fp) {
				t.Errorf("sign printed %q, want the key's fingerprint %s", out, fp)
			}
			if out, accepted := testkit.SSHVerify(t, signers, principal, "canga-index", ix, sig); !accepted {
				t.Errorf("ssh-keygen -Y verify refuses canga sign's signature:\n%s", out)
			}
			if out := ok(t, home, "verify", "--allowed-signers", signers); !strings.Contains(out, principal) {
				t.Errorf("verify printed %q, want the principal %s", out, principal)
			}

			testkit.SSHSign(t, key, "canga-index", ix)
			if out := ok(t, home, "verify", "--allowed-signers", signers); !strings.Contains(out, principal) {
				t.Errorf("verify of ssh-keygen's signature printed %q, want the principal %s", out, principal)
			}
		})
	}

	t.Run("refusals", func(t *testing.T) {
		t.Parallel()
		keys := t.TempDir()
		other := testkit.Keygen(t, keys, "other", "", "-t", "ed25519")
		tests := []struct {
			name    string
			signers func(t *testing.T) string
			setup   func(t *testing.T, served string)
		}{
			{"index tampered", func(t *testing.T) string { return pub.AllowedSigners }, func(t *testing.T, served string) {
				remEditIndex(t, served, func(s string) string { return s + "# one more line\n" })
			}},
			{"unknown key", func(t *testing.T) string {
				return remAllowedSigners(t, keys, remPrincipal, other, "")
			}, nil},
			{"no signature", func(t *testing.T) string { return pub.AllowedSigners }, func(t *testing.T, served string) {
				if err := os.Remove(filepath.Join(served, "index.yaml.sig")); err != nil {
					t.Fatal(err)
				}
			}},
			{"key allowed for another namespace", func(t *testing.T) string {
				return remAllowedSigners(t, keys, remPrincipal, pub.Key, `namespaces="git"`)
			}, nil},
			{"key expired", func(t *testing.T) string {
				return remAllowedSigners(t, keys, remPrincipal, pub.Key, `valid-before="20000101"`)
			}, nil},
			{"key not yet valid", func(t *testing.T) string {
				return remAllowedSigners(t, keys, remPrincipal, pub.Key, `valid-after="29990101"`)
			}, nil},
			{"signature for another namespace", func(t *testing.T) string { return pub.AllowedSigners }, func(t *testing.T, served string) {
				testkit.SSHSign(t, pub.Key, "file", filepath.Join(served, "index.yaml"))
			}},
			{"empty allowed_signers", func(t *testing.T) string {
				f := filepath.Join(t.TempDir(), "empty")
				if err := os.WriteFile(f, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				return f
			}, nil},
			{"missing allowed_signers", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				served := remCopyRepo(t, pub.Repo)
				if tc.setup != nil {
					tc.setup(t, served)
				}
				signers := tc.signers(t)
				home := remPubHome(t, served)
				fails(t, home, "verify", "--allowed-signers", signers)
				// ssh-keygen agrees, where it can be asked.
				if _, err := os.Stat(filepath.Join(served, "index.yaml.sig")); err == nil {
					if _, err := os.Stat(signers); err == nil {
						if out, accepted := testkit.SSHVerify(t, signers, remPrincipal, "canga-index", filepath.Join(served, "index.yaml"), filepath.Join(served, "index.yaml.sig")); accepted {
							t.Errorf("ssh-keygen accepts what canga refused:\n%s", out)
						}
					}
				}
			})
		}
	})

	t.Run("bad keys", func(t *testing.T) {
		t.Parallel()
		keys := t.TempDir()
		locked := filepath.Join(keys, "locked")
		testkit.Run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", locked)
		junk := filepath.Join(keys, "junk")
		if err := os.WriteFile(junk, []byte("not a key\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{filepath.Join(keys, "missing"), junk, locked, keys} {
			served := remCopyRepo(t, pub.Repo)
			home := remPubHome(t, served)
			before := testkit.ReadFile(t, filepath.Join(served, "index.yaml.sig"))
			cmd := canga(t, home, "sign", "--key", key)
			requireCleanFailure(t, cmd)
			if after := testkit.ReadFile(t, filepath.Join(served, "index.yaml.sig")); !bytes.Equal(before, after) {
				t.Errorf("a failed sign with %s changed index.yaml.sig", key)
			}
		}
	})

	t.Run("remote cache", func(t *testing.T) {
		t.Parallel()
		url := testkit.PythonHTTPServer(t, remCopyRepo(t, pub.Repo))
		home, cache := remConsumer(t, url, pub.AllowedSigners)
		ok(t, home, "fetch")
		// The remote's allowed_signers from config.yaml, without the flag.
		if out := ok(t, home, "verify", remName); !strings.Contains(out, remPrincipal) {
			t.Errorf("verify %s printed %q", remName, out)
		}
		before := remCacheState(t, cache)
		fails(t, home, "sign", remName, "--key", pub.Key)
		if after := remCacheState(t, cache); !bytes.Equal(before.sig, after.sig) {
			t.Errorf("sign of a remote's cache changed its signature")
		}
		// verify without allowed_signers anywhere.
		plain, _ := remConsumer(t, url, "")
		ok(t, plain, "fetch")
		fails(t, plain, "verify", remName)
	})
}

// TestRemoteCangalloV0: a Cangallo (version 0) repository made by hand,
// served by python: fetch, pull, import and export give back the image,
// and an image whose content is not its ID, or whose backing name is not
// its parent's file, is refused.
func TestRemoteCangalloV0(t *testing.T) {
	src := otherRaw(t)
	build := func(t *testing.T) (dir, baseHex, childHex string) {
		dir = filepath.Join(t.TempDir(), "v0")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "base.tmp")
		testkit.Run(t, "qemu-img", "convert", "-O", "qcow2", src, tmp)
		baseHex = strings.TrimPrefix(testkit.RawDigest(t, tmp).String(), "sha256:")
		if err := os.Rename(tmp, filepath.Join(dir, baseHex+".qcow2")); err != nil {
			t.Fatal(err)
		}
		// qemu-img resolves a relative backing name from the image's
		// directory, as Cangallo's repositories rely on.
		child := filepath.Join(dir, "child.tmp")
		testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", baseHex+".qcow2", "-F", "qcow2", child)
		testkit.QemuIO(t, "qcow2", child, "write -P 0x42 2M 1M", "write -z 4M 1M", "write -P 0x17 30M 64k")
		childHex = strings.TrimPrefix(testkit.RawDigest(t, child).String(), "sha256:")
		if err := os.Rename(child, filepath.Join(dir, childHex+".qcow2")); err != nil {
			t.Fatal(err)
		}
		return dir, baseHex, childHex
	}
	writeIndex := func(t *testing.T, dir, baseHex, childHex string) {
		vsize := testkit.QemuInfo(t, filepath.Join(dir, baseHex+".qcow2")).VirtualSize
		entry := func(hex, parent, desc string) string {
			f := filepath.Join(dir, hex+".qcow2")
			var b strings.Builder
			fmt.Fprintf(&b, "  '%s':\n", hex)
			if parent != "" {
				fmt.Fprintf(&b, "    parent: '%s'\n", parent)
			}
			fmt.Fprintf(&b, "    description: %s\n    os: Debian\n    virtual-size: %d\n    format: qcow2\n    actual-size: %d\n", desc, vsize, fileSize(t, f))
			fmt.Fprintf(&b, "    file-sha256: %s\n    creation-time: 2016-03-13 16:52:28.123456789 +01:00\n    sha256: '%s'\n",
				strings.TrimPrefix(testkit.Sha256sum(t, f).String(), "sha256:"), hex)
			return b.String()
		}
		ix := "---\nversion: 0\nimages:\n" + entry(baseHex, "", "v0 base") + entry(childHex, baseHex, "v0 child") +
			fmt.Sprintf("tags:\n  v0base: '%s'\n  v0/child:1.0: '%s'\n", baseHex, childHex)
		if err := os.WriteFile(filepath.Join(dir, "index.yaml"), []byte(ix), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		dir, baseHex, childHex := build(t)
		writeIndex(t, dir, baseHex, childHex)
		original := filepath.Join(t.TempDir(), "original.qcow2")
		testkit.Run(t, "qemu-img", "convert", "-O", "qcow2", filepath.Join(dir, childHex+".qcow2"), original)
		url := testkit.PythonHTTPServer(t, dir)
		home, cache := remConsumer(t, url, "")
		ok(t, home, "fetch")
		if got, want := testkit.ReadFile(t, filepath.Join(cache, "index.yaml")), testkit.ReadFile(t, filepath.Join(dir, "index.yaml")); !bytes.Equal(got, want) {
			t.Errorf("the cached v0 index differs from the served one")
		}
		flags := remListFlags(t, home)
		if flags[remName+":v0base"] != " *" || flags[remName+":v0/child:1.0"] != "^*" {
			t.Errorf("list before pull: %q", flags)
		}
		ok(t, home, "pull", remName+":v0/child:1.0")
		for _, hex := range []string{baseHex, childHex} {
			f := filepath.Join(cache, hex+".qcow2")
			if got := testkit.RawDigest(t, f).String(); got != "sha256:"+hex {
				t.Errorf("pulled %s.qcow2 has image ID %s", hex, got)
			}
		}
		present := remPresent(t, home, remName)
		if !present["sha256:"+baseHex] || !present["sha256:"+childHex] {
			t.Errorf("present after pull: %v", present)
		}
		ok(t, home, "fsck", remName)

		if out := strings.TrimSpace(ok(t, home, "import", "v0/child:1.0", "--tag", "x")); out != "sha256:"+childHex {
			t.Errorf("import printed %q", out)
		}
		exported := filepath.Join(t.TempDir(), "out.qcow2")
		ok(t, home, "export", "x", exported)
		testkit.QemuCompare(t, exported, original)
		if got := testkit.RawDigest(t, exported).String(); got != "sha256:"+childHex {
			t.Errorf("exported image ID %s, want sha256:%s", got, childHex)
		}
		def := filepath.Join(home, "default")
		if names := remRequireGoodBlobs(t, def); len(names) != 2 {
			t.Errorf("the default repository holds blobs %v, want 2", names)
		}
		it := remFindItem(listJSON(t, home), "default", "sha256:"+childHex)
		if it == nil || it.Parent != "sha256:"+baseHex || !it.Present || it.Blob == "" {
			t.Fatalf("the imported child: %+v", it)
		}
		// The imported blob is a canga blob: its backing file is its
		// parent's blob HEX.
		chain := testkit.QemuChain(t, remBlobFile(def, it.Blob))
		if len(chain) != 2 || !strings.HasPrefix(chain[1].Filename, filepath.Join(def, "blobs", "sha256")+"/") {
			t.Errorf("backing chain of the imported blob: %+v", chain)
		}
		ok(t, home, "fsck")
	})

	attacks := []struct {
		name    string
		corrupt func(t *testing.T, dir, baseHex, childHex string)
	}{
		{"content is not its image ID", func(t *testing.T, dir, baseHex, childHex string) {
			testkit.QemuIO(t, "qcow2", filepath.Join(dir, childHex+".qcow2"), "write -P 0x66 5M 64k")
		}},
		{"backing file /etc/shadow", func(t *testing.T, dir, baseHex, childHex string) {
			testkit.Run(t, "qemu-img", "rebase", "-u", "-b", "/etc/shadow", "-F", "qcow2", filepath.Join(dir, childHex+".qcow2"))
		}},
		{"backing file ../PARENT", func(t *testing.T, dir, baseHex, childHex string) {
			testkit.Run(t, "qemu-img", "rebase", "-u", "-b", "../v0/"+baseHex+".qcow2", "-F", "qcow2", filepath.Join(dir, childHex+".qcow2"))
		}},
		{"base with a backing file", func(t *testing.T, dir, baseHex, childHex string) {
			testkit.Run(t, "qemu-img", "rebase", "-u", "-b", "/etc/passwd", "-F", "raw", filepath.Join(dir, baseHex+".qcow2"))
		}},
		{"file far larger than its virtual size", func(t *testing.T, dir, baseHex, childHex string) {
			// Sparse: the server would send zeros after the image, more
			// than any qcow2 of its virtual size needs.
			if err := os.Truncate(filepath.Join(dir, childHex+".qcow2"), 192<<20); err != nil {
				t.Fatal(err)
			}
		}},
		{"not qcow2", func(t *testing.T, dir, baseHex, childHex string) {
			copyFile(t, "/etc/passwd", filepath.Join(dir, childHex+".qcow2"))
		}},
	}
	for _, tc := range attacks {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, baseHex, childHex := build(t)
			tc.corrupt(t, dir, baseHex, childHex)
			writeIndex(t, dir, baseHex, childHex)
			url := testkit.PythonHTTPServer(t, dir)
			home, cache := remConsumer(t, url, "")
			ok(t, home, "fetch")
			r := fails(t, home, "pull", remName+":v0/child:1.0")
			t.Logf("pull: %s", r.stderr)
			if _, err := os.Stat(filepath.Join(cache, childHex+".qcow2")); err == nil {
				t.Errorf("the refused image %s.qcow2 is in the cache", childHex)
			}
			for _, e := range dirNames(t, cache) {
				if hex, ok := strings.CutSuffix(e, ".qcow2"); ok {
					if got := testkit.RawDigest(t, filepath.Join(cache, e)).String(); got != "sha256:"+hex {
						t.Errorf("the cache keeps %s, whose image ID is %s", e, got)
					}
				}
			}
			if p := remPresent(t, home, remName); p["sha256:"+childHex] {
				t.Errorf("present after a refused pull: %v", p)
			}
			fails(t, home, "import", remName+":v0/child:1.0")
			if names := remRequireGoodBlobs(t, filepath.Join(home, "default")); len(names) != 0 {
				t.Errorf("a refused import left blobs %v", names)
			}
		})
	}
}

// TestRemoteServeHTTP: canga serve answers HEAD and GET with Range for
// blobs and nothing else: no listings, no path out of the repository.
func TestRemoteServeHTTP(t *testing.T) {
	t.Parallel()
	pub := remPublisher(t)
	served := remCopyRepo(t, pub.Repo)
	hex := strings.TrimPrefix(pub.ChildBlob, "sha256:")
	// A link inside the repository to a host file, named like a blob.
	evilHex := strings.Repeat("e", 64)
	if err := os.Symlink("/etc/passwd", filepath.Join(served, "blobs", "sha256", evilHex)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(served, "etc")); err != nil {
		t.Fatal(err)
	}
	url := remServe(t, served)
	blobURL := url + "blobs/sha256/" + hex
	blob := testkit.ReadFile(t, remBlobFile(served, pub.ChildBlob))
	size := int64(len(blob))

	t.Run("HEAD", func(t *testing.T) {
		out, code := remCurl(t, "-I", blobURL)
		if code != 0 {
			t.Fatalf("curl -I: exit %d", code)
		}
		hd := strings.ToLower(out)
		for _, want := range []string{"http/1.1 200", "content-length: " + strconv.FormatInt(size, 10), "accept-ranges: bytes", `etag: "sha256:` + hex + `"`} {
			if !strings.Contains(hd, want) {
				t.Errorf("HEAD %s: no %q in\n%s", blobURL, want, out)
			}
		}
	})
	t.Run("GET whole", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "blob")
		if _, code := remCurl(t, "-f", "-o", dst, blobURL); code != 0 {
			t.Fatalf("curl: exit %d", code)
		}
		if got := testkit.Sha256sum(t, dst).String(); got != pub.ChildBlob {
			t.Errorf("GET of the blob: sha256sum %s", got)
		}
		dst = filepath.Join(t.TempDir(), "index")
		if _, code := remCurl(t, "-f", "-o", dst, url+"index.yaml"); code != 0 {
			t.Fatalf("curl: exit %d", code)
		}
		if !bytes.Equal(testkit.ReadFile(t, dst), testkit.ReadFile(t, filepath.Join(served, "index.yaml"))) {
			t.Errorf("GET index.yaml differs from the file")
		}
	})
	ranges := []struct {
		rng        string
		first, end int64 // expected bytes [first, end)
	}{
		{"100-1123", 100, 1124},
		{"0-0", 0, 1},
		{"65536-", 65536, size},
		{"-100", size - 100, size},
		{strconv.FormatInt(size-10, 10) + "-" + strconv.FormatInt(size+1000, 10), size - 10, size},
	}
	for _, rg := range ranges {
		t.Run("GET range "+rg.rng, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "part")
			out, code := remCurl(t, "-r", rg.rng, "-o", dst, "-w", "%{http_code}", blobURL)
			if code != 0 || out != "206" {
				t.Fatalf("curl -r %s: exit %d, status %q", rg.rng, code, out)
			}
			if got := testkit.ReadFile(t, dst); !bytes.Equal(got, blob[rg.first:rg.end]) {
				t.Errorf("curl -r %s: %d bytes, not bytes %d-%d of the blob", rg.rng, len(got), rg.first, rg.end-1)
			}
		})
	}
	t.Run("HEAD range", func(t *testing.T) {
		out, _ := remCurl(t, "-I", "-r", "10-19", blobURL)
		hd := strings.ToLower(out)
		if !strings.Contains(hd, " 206") || !strings.Contains(hd, "content-range: bytes 10-19/"+strconv.FormatInt(size, 10)) {
			t.Errorf("HEAD with Range:\n%s", out)
		}
	})
	t.Run("range not satisfiable", func(t *testing.T) {
		out, _ := remCurl(t, "-r", strconv.FormatInt(size, 10)+"-", "-o", "/dev/null", "-w", "%{http_code}", blobURL)
		if out != "416" {
			t.Errorf("range past the end: status %q, want 416", out)
		}
	})
	notFound := []string{
		"/blobs/sha256/../../etc/passwd",
		"/blobs/sha256/%2e%2e/%2e%2e/etc/passwd",
		"/blobs/sha256/..%2f..%2fetc%2fpasswd",
		"/../../../../etc/passwd",
		"/etc/passwd",
		"/",
		"/blobs/",
		"/blobs/sha256/",
		"/blobs/sha256",
		"/.tmp/",
		"/.lock",
		"/blobs/sha256/" + evilHex,
		"/blobs/sha256/" + strings.ToUpper(hex),
		"/blobs/sha256/" + hex + "/",
		"/blobs/sha256/" + hex[:63],
		"/blobs/sha256//" + hex,
		"//index.yaml",
		"/./index.yaml",
		"/blobs/./sha256/" + hex,
		"/index.yaml/",
		"/index.yaml%00",
	}
	for _, p := range notFound {
		out, code := remCurl(t, "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", strings.TrimSuffix(url, "/")+p)
		if code != 0 || out != "404" {
			t.Errorf("GET %s: exit %d, status %q, want 404", p, code, out)
		}
	}
	t.Run("conditional GET", func(t *testing.T) {
		out, _ := remCurl(t, "-I", url+"index.yaml")
		var etag string
		for _, l := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "etag") {
				etag = strings.TrimSpace(v)
			}
		}
		if want := `"` + testkit.Sha256sum(t, filepath.Join(served, "index.yaml")).String() + `"`; etag != want {
			t.Fatalf("ETag of index.yaml %q, want %q", etag, want)
		}
		code, _ := remCurl(t, "-H", "If-None-Match: "+etag, "-o", "/dev/null", "-w", "%{http_code}", url+"index.yaml")
		if code != "304" {
			t.Errorf("GET index.yaml If-None-Match its ETag: status %q, want 304", code)
		}
	})
	t.Run("address in use", func(t *testing.T) {
		home := remPubHome(t, served)
		requireCleanFailure(t, canga(t, home, "serve", "--addr", strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")))
	})
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		out, _ := remCurl(t, "-X", m, "-o", "/dev/null", "-w", "%{http_code}", blobURL)
		if out != "405" {
			t.Errorf("%s of a blob: status %q, want 405", m, out)
		}
	}
	// The blob is still there, untouched.
	if got := testkit.Sha256sum(t, remBlobFile(served, pub.ChildBlob)).String(); got != pub.ChildBlob {
		t.Errorf("the served blob changed: %s", got)
	}
}

// TestRemoteFetchFailures: a server that is down, or that serves an index
// or a signature larger than canga accepts: the fetch fails and the
// previous index stays.
func TestRemoteFetchFailures(t *testing.T) {
	pub := remPublisher(t)
	t.Run("server down", func(t *testing.T) {
		t.Parallel()
		f := &remFlaky{dir: pub.Repo}
		url := remStartFlaky(t, f)
		home, cache := remConsumer(t, url, "")
		ok(t, home, "fetch")
		f.down()
		r := remFetchFailsKeeps(t, home, cache)
		t.Logf("fetch: %s", r.stderr)
		if p := remPresent(t, home, remName); len(p) != 2 {
			t.Errorf("after a failed fetch, list shows %v", p)
		}
	})
	t.Run("no server", func(t *testing.T) {
		t.Parallel()
		// With a password in the URL: no error may show it.
		home, cache := remConsumer(t, fmt.Sprintf("http://user:s3cret@127.0.0.1:%d/", testkit.FreePort(t)), "")
		r := fails(t, home, "fetch")
		if strings.Contains(r.stderr+r.stdout, "s3cret") {
			t.Errorf("the error shows the password of the URL:\n%s", r.stderr)
		}
		if st := remCacheState(t, cache); st.index != nil || st.sig != nil {
			t.Errorf("a failed first fetch left an index")
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewTLSServer(http.FileServer(http.Dir(pub.Repo)))
		t.Cleanup(srv.Close)
		home, cache := remConsumer(t, srv.URL+"/", "")
		start := time.Now()
		r := fails(t, home, "fetch")
		t.Logf("fetch: %s", r.stderr)
		// A certificate does not fix itself: no retries with back-off
		// (they take at least 3.75s).
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("a fetch from a server with an untrusted certificate took %v: retried?", d)
		}
		if st := remCacheState(t, cache); st.index != nil {
			t.Errorf("a refused first fetch left an index")
		}
	})
	large := []struct {
		name, file string
		size       int64
	}{
		{"index larger than 64 MiB", "index.yaml", 64<<20 + 1},
		{"signature larger than 64 KiB", "index.yaml.sig", 64<<10 + 1},
	}
	for _, tc := range large {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			served := remCopyRepo(t, pub.Repo)
			url := testkit.PythonHTTPServer(t, served)
			home, cache := remConsumer(t, url, "")
			ok(t, home, "fetch")
			// Sparse: python sends zeros, canga must stop at its bound.
			p := filepath.Join(served, tc.file)
			tmp := p + ".big"
			f, err := os.Create(tmp)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(tc.size); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, p); err != nil {
				t.Fatal(err)
			}
			if tc.file == "index.yaml.sig" {
				// With a new index: an unchanged one is a 304, and a
				// cache that requires no signature does not ask for it.
				ok(t, remPubHome(t, served), "tag", "moved", "base")
			}
			r := remFetchFailsKeeps(t, home, cache)
			t.Logf("fetch: %s", r.stderr)
		})
	}
}

// TestRemoteConcurrentPulls: pulls of one chain by several canga at once
// all succeed and store each blob once, intact.
func TestRemoteConcurrentPulls(t *testing.T) {
	t.Parallel()
	pub := remPublisher(t)
	url := testkit.PythonHTTPServer(t, remCopyRepo(t, pub.Repo))
	home, cache := remConsumer(t, url, "")
	ok(t, home, "fetch")
	const n = 4
	results := make([]result, n)
	done := make(chan int)
	for i := range n {
		name := remName + ":child"
		if i%2 == 1 {
			name = remName + ":base"
		}
		go func() {
			results[i] = canga(t, home, "pull", name)
			done <- i
		}()
	}
	for range n {
		<-done
	}
	for _, r := range results {
		if r.code != 0 {
			t.Errorf("a concurrent pull failed: %v", r)
		}
	}
	if names := remRequireGoodBlobs(t, cache); len(names) != 2 {
		t.Errorf("blobs after concurrent pulls: %v", names)
	}
	if tmp := remDirNames(t, filepath.Join(cache, ".tmp")); len(tmp) != 0 {
		t.Errorf(".tmp after concurrent pulls: %v", tmp)
	}
	ok(t, home, "fsck", remName)
}

// TestRemoteImportOntoExistingParent: importing a child whose parent the
// destination already has, stored as a different blob (another
// compression), must leave a repository whose chains open: the imported
// child's blob must name the destination's parent blob as its backing
// file (or the import must fail and change nothing).
func TestRemoteImportOntoExistingParent(t *testing.T) {
	pub := remPublisher(t)
	base := baseQcow2(t)
	for _, comp := range []string{"zlib", "none", "zstd"} {
		t.Run("parent stored with "+comp, func(t *testing.T) {
			t.Parallel()
			url := testkit.PythonHTTPServer(t, remCopyRepo(t, pub.Repo))
			home, _ := remConsumer(t, url, "")
			if id := addID(t, home, base, "--compression", comp, "--tag", "mybase"); id != pub.BaseID {
				t.Fatalf("add of the base gave %s, the publisher's is %s", id, pub.BaseID)
			}
			ok(t, home, "fetch")
			before := snapshot(t, home)
			r := canga(t, home, "import", remName+":child", "--tag", "x")
			if r.code != 0 {
				requireCleanFailure(t, r)
				requireUnchanged(t, home, before)
				return
			}
			exported := filepath.Join(t.TempDir(), "out.qcow2")
			if r := canga(t, home, "export", "x", exported); r.code != 0 {
				t.Errorf("export of the imported child fails:\n%v", r)
			} else {
				testkit.QemuCompare(t, exported, pub.Child)
			}
			if r := canga(t, home, "fsck"); r.code != 0 {
				t.Errorf("fsck after the import:\n%v", r)
			}
			it := remFindItem(listJSON(t, home), "default", pub.ChildID)
			parent := remFindItem(listJSON(t, home), "default", pub.BaseID)
			if it == nil || parent == nil {
				t.Fatalf("after import: child %+v, parent %+v", it, parent)
			}
			if got := testkit.QemuInfo(t, remBlobFile(filepath.Join(home, "default"), it.Blob)).BackingFilename; got != strings.TrimPrefix(parent.Blob, "sha256:") {
				t.Errorf("the imported child's blob names backing file %s; the repository's parent blob is %s", got, parent.Blob)
			}
		})
	}
}

// TestRemoteSignersMisconfigured: an allowed_signers that is configured
// but missing, empty or unreadable never turns the signature check off.
func TestRemoteSignersMisconfigured(t *testing.T) {
	pub := remPublisher(t)
	url := testkit.PythonHTTPServer(t, remCopyRepo(t, pub.Repo))
	tests := []struct {
		name    string
		signers func(t *testing.T) string
	}{
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }},
		{"empty", func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "empty")
			if err := os.WriteFile(f, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return f
		}},
		{"a directory", func(t *testing.T) string { return t.TempDir() }},
		{"syntax error", func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "bad")
			if err := os.WriteFile(f, []byte(remPrincipal+" ssh-ed25519 !!!notbase64\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return f
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			home, cache := remConsumer(t, url, tc.signers(t))
			r := fails(t, home, "fetch")
			t.Logf("fetch: %s", r.stderr)
			if st := remCacheState(t, cache); st.index != nil {
				t.Errorf("the index was cached though allowed_signers is unusable")
			}
			fails(t, home, "pull", remName+":child")
		})
	}
}

// TestRemoteURLForms: a remote below a path, with or without the
// trailing slash, and a publisher that stops signing (the cached
// signature goes with it).
func TestRemoteURLForms(t *testing.T) {
	pub := remPublisher(t)
	for _, suffix := range []string{"repo", "repo/"} {
		t.Run(suffix, func(t *testing.T) {
			t.Parallel()
			top := t.TempDir()
			served := filepath.Join(top, "repo")
			testkit.Run(t, "cp", "-a", pub.Repo, served)
			url := testkit.PythonHTTPServer(t, top) + suffix
			home, cache := remConsumer(t, url, "")
			ok(t, home, "fetch")
			ok(t, home, "pull", remName+":child")
			remRequireGoodBlobs(t, cache)
			if p := remPresent(t, home, remName); !p[pub.ChildID] || !p[pub.BaseID] {
				t.Errorf("present: %v", p)
			}
			// The publisher changes the index and no longer signs it.
			if err := os.Remove(filepath.Join(served, "index.yaml.sig")); err != nil {
				t.Fatal(err)
			}
			ok(t, remPubHome(t, served), "tag", "unsigned", "base")
			ok(t, home, "fetch")
			if st := remCacheState(t, cache); st.sig != nil {
				t.Errorf("the publisher's signature is gone, the cache keeps one")
			}
		})
	}
}
