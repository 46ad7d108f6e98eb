package main_test

// Helpers of the remote-repository tests (e2e_remote_test.go): a publisher
// repository built once, copies of it to serve and to damage, real web
// servers (python's http.server, canga serve, and a Go file server that
// can drop connections), and consumers whose config.yaml names them.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// remName is the name of the remote in every consumer's config.yaml.
const remName = "pub"

// remPrincipal signs the publisher's index.
const remPrincipal = "publisher@example.org"

// remPub is the publisher: a canga home with a base image, a child made
// with overlay + qemu-io + add, tags, and a signed index.
type remPub struct {
	Home, Repo          string // CANGA_HOME and its default repository
	Child               string // the overlay file the child was added from
	BaseID, ChildID     string
	BaseBlob, ChildBlob string // blob digests
	Key                 string // ed25519 private key that signed index.yaml
	AllowedSigners      string // names remPrincipal for Key
}

// remPublisher builds the publisher once for the test binary. Read it,
// never write it: tests serve and damage copies (remCopyRepo).
func remPublisher(t testing.TB) remPub {
	t.Helper()
	base := baseQcow2(t)
	return shared(t, "rem-publisher", func(t testing.TB, dir string) remPub {
		return remBuildPublisher(t, dir, base)
	})
}

func remBuildPublisher(t testing.TB, dir, base string) remPub {
	t.Helper()
	p := remPub{Home: filepath.Join(dir, "home"), Child: filepath.Join(dir, "child.qcow2")}
	p.Repo = filepath.Join(p.Home, "default")
	if err := os.MkdirAll(p.Home, 0o755); err != nil {
		t.Fatal(err)
	}
	remWriteConfig(t, p.Home, p.Repo)
	p.BaseID = strings.TrimSpace(ok(t, p.Home, "add", base, "--tag", "base", "--description", "rem base", "--os", "Linux"))
	ok(t, p.Home, "overlay", "base", p.Child)
	// Data, a zeroed range over the base's data, and a pattern at the end.
	testkit.QemuIO(t, "qcow2", p.Child, "write -P 0x5a 1M 3M", "write -z 8M 2M", "write -P 0xc3 60M 1M")
	p.ChildID = strings.TrimSpace(ok(t, p.Home, "add", p.Child, "--tag", "child", "--description", "rem child"))
	ok(t, p.Home, "tag", "team/child:1.0", "child")
	ix := testkit.ReadFile(t, filepath.Join(p.Repo, "index.yaml"))
	p.BaseBlob = remEntryField(string(ix), p.BaseID, "blob")
	p.ChildBlob = remEntryField(string(ix), p.ChildID, "blob")
	if p.BaseBlob == "" || p.ChildBlob == "" {
		t.Fatalf("no blobs for %s and %s in\n%s", p.BaseID, p.ChildID, ix)
	}
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	p.Key = testkit.Keygen(t, keys, "publisher", "", "-t", "ed25519")
	p.AllowedSigners = filepath.Join(keys, "allowed_signers")
	remWriteAllowedSigners(t, p.AllowedSigners, remPrincipal, p.Key+".pub", "")
	ok(t, p.Home, "sign", "--key", p.Key)
	return p
}

// remWriteConfig writes a config.yaml whose default repository is
// repoDir, plus the extra lines under repos: (already indented).
func remWriteConfig(t testing.TB, home, repoDir string, extra ...string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "default_repo: default\nrepos:\n  default:\n    path: %s\n", repoDir)
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	testkit.WriteFile(t, filepath.Join(home, "config.yaml"), []byte(b.String()), 0o644)
}

// remWriteAllowedSigners writes an allowed_signers file naming principal
// for the public key pubFile, with options (empty: namespaces=canga-index).
func remWriteAllowedSigners(t testing.TB, file, principal, pubFile, options string) {
	t.Helper()
	pub := testkit.ReadFile(t, pubFile)
	if options == "" {
		options = `namespaces="canga-index"`
	}
	line := principal + " " + options + " " + strings.TrimSpace(string(pub)) + "\n"
	testkit.WriteFile(t, file, []byte(line), 0o644)
}

// remEntryField reads "    FIELD: VALUE" of image id in an index.yaml
// that canga wrote (two-space indentation).
func remEntryField(ix, id, field string) string {
	in := false
	for _, l := range strings.Split(ix, "\n") {
		switch {
		case l == "  "+id+":":
			in = true
		case in && strings.HasPrefix(l, "    "+field+": "):
			return strings.TrimPrefix(l, "    "+field+": ")
		case in && !strings.HasPrefix(l, "    "):
			return ""
		}
	}
	return ""
}

// remSetEntryField replaces "    FIELD: ..." of image id; the field must
// be there.
func remSetEntryField(t testing.TB, ix, id, field, value string) string {
	t.Helper()
	lines := strings.Split(ix, "\n")
	in := false
	for i, l := range lines {
		switch {
		case l == "  "+id+":":
			in = true
		case in && strings.HasPrefix(l, "    "+field+": "):
			lines[i] = "    " + field + ": " + value
			return strings.Join(lines, "\n")
		case in && !strings.HasPrefix(l, "    "):
			in = false
		}
	}
	t.Fatalf("no %s in the entry of %s:\n%s", field, id, ix)
	return ""
}

// ---- copies of repositories, and the files in them ----

// remCopyRepo copies a repository directory (blobs stay 0444).
func remCopyRepo(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "served")
	testkit.Run(t, "cp", "-a", src, dst)
	return dst
}

// remPubHome makes a canga home whose default repository is repoDir, to
// run canga (add, sign, serve) as the publisher of a copy.
func remPubHome(t testing.TB, repoDir string) string {
	t.Helper()
	home := t.TempDir()
	remWriteConfig(t, home, repoDir)
	return home
}

// remConsumer makes a canga home that has remote remName at url, cached
// in CACHE, with allowed_signers when signers is not empty. It returns the
// home and the cache directory.
func remConsumer(t testing.TB, url, signers string) (home, cache string) {
	t.Helper()
	home = t.TempDir()
	cache = filepath.Join(home, "cache-"+remName)
	extra := []string{"  " + remName + ":", "    url: " + url, "    path: " + cache}
	if signers != "" {
		extra = append(extra, "    allowed_signers: "+signers)
	}
	remWriteConfig(t, home, filepath.Join(home, "default"), extra...)
	return home, cache
}

// remWriteFile replaces a file of a served repository by rename, as a
// publisher would.
func remWriteFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	tmp := path + ".rem-tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// remEditIndex rewrites REPO/index.yaml through fn.
func remEditIndex(t testing.TB, repoDir string, fn func(string) string) {
	t.Helper()
	p := filepath.Join(repoDir, "index.yaml")
	old := string(testkit.ReadFile(t, p))
	next := fn(old)
	if next == old {
		t.Fatalf("the edit changed nothing in\n%s", old)
	}
	remWriteFile(t, p, []byte(next), 0o644)
}

// remBlobFile is the file of a blob digest in a repository directory.
func remBlobFile(repoDir, blob string) string {
	return filepath.Join(repoDir, "blobs", "sha256", strings.TrimPrefix(blob, "sha256:"))
}

// remPutBlob stores file in a served repository under its sha256sum and
// points image id's entry at it (blob, blob-size): the index then says
// exactly what the server serves, and only the content is hostile.
func remPutBlob(t testing.TB, repoDir, id, file string) string {
	t.Helper()
	d := testkit.Sha256sum(t, file).String()
	dst := remBlobFile(repoDir, d)
	copyFile(t, file, dst)
	if err := os.Chmod(dst, 0o444); err != nil {
		t.Fatal(err)
	}
	size := fileSize(t, file)
	remEditIndex(t, repoDir, func(ix string) string {
		ix = remSetEntryField(t, ix, id, "blob", d)
		return remSetEntryField(t, ix, id, "blob-size", strconv.FormatInt(size, 10))
	})
	return d
}

// ---- what a consumer's cache holds ----

// remCacheFiles is a cache's index.yaml and index.yaml.sig (nil: absent).
type remCacheFiles struct{ index, sig []byte }

func remCacheState(t testing.TB, cache string) remCacheFiles {
	t.Helper()
	var s remCacheFiles
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{"index.yaml", &s.index}, {"index.yaml.sig", &s.sig}} {
		b, err := os.ReadFile(filepath.Join(cache, f.name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		*f.dst = b
	}
	return s
}

// remFetchFailsKeeps runs a fetch that must fail cleanly and leave the
// cached index and signature byte-identical.
func remFetchFailsKeeps(t testing.TB, home, cache string) result {
	t.Helper()
	before := remCacheState(t, cache)
	if before.index == nil {
		t.Fatalf("no cached index in %s before the failing fetch", cache)
	}
	r := fails(t, home, "fetch", remName)
	after := remCacheState(t, cache)
	if !bytes.Equal(before.index, after.index) {
		t.Errorf("a failed fetch changed the cached index.yaml\nbefore:\n%s\nafter:\n%s", before.index, after.index)
	}
	if !bytes.Equal(before.sig, after.sig) || (before.sig == nil) != (after.sig == nil) {
		t.Errorf("a failed fetch changed the cached index.yaml.sig\nbefore:\n%s\nafter:\n%s", before.sig, after.sig)
	}
	return r
}

// remRequireGoodBlobs checks that every file of DIR/blobs/sha256 is named
// by its sha256sum, and that none of the absent blobs is there. It
// returns the names found.
func remRequireGoodBlobs(t testing.TB, dir string, absent ...string) []string {
	t.Helper()
	bd := filepath.Join(dir, "blobs", "sha256")
	entries, err := os.ReadDir(bd)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && isChunkList(t, filepath.Join(bd, e.Name())) {
			// A chunk list (SPEC §9): checked by its digest below, not
			// listed.
		} else {
			names = append(names, e.Name())
		}
		if !e.Type().IsRegular() {
			t.Errorf("%s/%s is not a regular file (%v)", bd, e.Name(), e.Type())
			continue
		}
		if got := testkit.Sha256sum(t, filepath.Join(bd, e.Name())).String(); got != "sha256:"+e.Name() {
			t.Errorf("blob %s/%s holds bytes whose sha256sum is %s", bd, e.Name(), got)
		}
	}
	for _, a := range absent {
		if _, err := os.Lstat(remBlobFile(dir, a)); err == nil {
			t.Errorf("the refused blob %s is in %s", a, bd)
		}
	}
	return names
}

// remNoPartial fails if DIR/.tmp holds a download partial of blob.
func remNoPartial(t testing.TB, dir, blob string) {
	t.Helper()
	p := filepath.Join(dir, ".tmp", "partial-"+strings.TrimPrefix(blob, "sha256:"))
	if fi, err := os.Stat(p); err == nil {
		t.Errorf("the partial of the refused blob is kept: %s (%d bytes)", p, fi.Size())
	}
}

// remPresent is list --json's present flag of each image of repo.
func remPresent(t testing.TB, home, repo string) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	for _, it := range listJSON(t, home) {
		if it.Repo == repo {
			m[it.ID] = it.Present
		}
	}
	return m
}

// remListFlags reads canga list's table: NAME -> its two flag characters.
func remListFlags(t testing.TB, home string) map[string]string {
	t.Helper()
	out := ok(t, home, "list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || !strings.Contains(lines[0], "NAME") {
		t.Fatalf("list: no header line\n%s", out)
	}
	m := map[string]string{}
	for _, l := range lines[1:] {
		if len(l) < 3 {
			t.Fatalf("list: short line %q\n%s", l, out)
		}
		f := strings.Fields(l[2:])
		if len(f) == 0 {
			t.Fatalf("list: line %q\n%s", l, out)
		}
		m[f[0]] = l[:2]
	}
	return m
}

// ---- servers ----

// remServe serves repoDir with canga serve and returns its base URL.
func remServe(t testing.TB, repoDir string) string {
	t.Helper()
	home := remPubHome(t, repoDir)
	for range 3 {
		port := testkit.FreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if testkit.StartServer(t, "http://"+addr+"/index.yaml", cangaEnv(home), cangaBin, "serve", "--addr", addr) {
			return "http://" + addr + "/"
		}
	}
	t.Fatalf("canga serve would not start")
	return ""
}

// remServers are the two servers the main scenarios run against.
var remServers = []struct {
	name  string
	start func(testing.TB, string) string
}{
	{"python", testkit.PythonHTTPServer},
	{"canga-serve", remServe},
}

// remFlaky is a Go file server (with Range, unlike python's) that cuts
// the first download of one blob after cut bytes and is then down (every
// request dropped without an answer) until up is called.
type remFlaky struct {
	dir  string
	blob string // hex
	cut  int64
	// honourRange false makes the server, once up again, ignore Range
	// requests the way python's http.server does (200, whole file).
	honourRange bool
	// flipAt > 0 corrupts the byte at that offset of the first, cut,
	// transfer: the partial then holds a bad byte.
	flipAt int64
	// downStatus, if not 0, is the answer while down, instead of a
	// dropped connection.
	downStatus int

	mu     sync.Mutex
	state  string   // "first", "down", "up"
	ranges []string // Range headers of the requests for the blob, in order
	cuts   int
}

func (f *remFlaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	isBlob := r.URL.Path == "/blobs/sha256/"+f.blob
	f.mu.Lock()
	state := f.state
	if isBlob {
		f.ranges = append(f.ranges, r.Header.Get("Range"))
		if state == "first" {
			f.state = "down"
			f.cuts++
		}
	}
	f.mu.Unlock()
	switch {
	case state == "down" && f.downStatus != 0:
		http.Error(w, "down", f.downStatus)
		return
	case state == "down":
		panic(http.ErrAbortHandler) // the connection closes with no answer
	case state == "first" && isBlob:
		http.FileServer(http.Dir(f.dir)).ServeHTTP(&remCutWriter{ResponseWriter: w, left: f.cut, flipAt: f.flipAt}, r)
		panic(http.ErrAbortHandler)
	}
	if isBlob && !f.honourRange {
		r.Header.Del("Range")
	}
	http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
}

func (f *remFlaky) down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = "down"
}

func (f *remFlaky) up() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = "up"
}

func (f *remFlaky) seen() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ranges...), f.cuts
}

// remCutWriter passes on the first left bytes of a body, then fails.
type remCutWriter struct {
	http.ResponseWriter
	left   int64
	flipAt int64 // > 0: flip the byte at this offset of the body
	off    int64
}

var errRemCut = errors.New("cut")

func (w *remCutWriter) Write(b []byte) (int, error) {
	if w.left <= 0 {
		return 0, errRemCut
	}
	if int64(len(b)) > w.left {
		b = b[:w.left]
	}
	if w.flipAt > 0 && w.off <= w.flipAt && w.flipAt < w.off+int64(len(b)) {
		b = append([]byte(nil), b...)
		b[w.flipAt-w.off] ^= 0x01
	}
	n, err := w.ResponseWriter.Write(b)
	w.left -= int64(n)
	w.off += int64(n)
	if err == nil && w.left == 0 {
		if fl, ok := w.ResponseWriter.(http.Flusher); ok {
			fl.Flush()
		}
		return n, errRemCut
	}
	return n, err
}

// ReadFrom hides the ResponseWriter's, so that sendfile cannot bypass
// the cut.
func (w *remCutWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{w}, r)
}

// remStartFlaky serves f on a free port and returns its base URL.
func remStartFlaky(t testing.TB, f *remFlaky) string {
	t.Helper()
	f.state = "first"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return "http://" + ln.Addr().String() + "/"
}

// remCurl runs curl -sS and returns its stdout and exit code; -w output
// is at the end of stdout.
func remCurl(t testing.TB, args ...string) (string, int) {
	t.Helper()
	out, code, stderr := testkit.RunCode(t, "curl", append([]string{"-sS", "--max-time", "20"}, args...)...)
	if code != 0 {
		t.Logf("curl %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return out, code
}

// remAllowedSigners writes an allowed_signers file for one key.
func remAllowedSigners(t testing.TB, dir, principal, key, options string) string {
	t.Helper()
	f := filepath.Join(dir, "allowed_signers-"+filepath.Base(key)+"-"+strconv.Itoa(len(options)))
	remWriteAllowedSigners(t, f, principal, key+".pub", options)
	return f
}
