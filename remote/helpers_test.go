package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cangallo/canga/cas"
	"github.com/opencontainers/go-digest"
)

// need fails the test when an external tool is missing: these tests use
// real tools, and a missing one must be noticed, not skipped.
func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by this test (apt-get install qemu-utils openssh-client python3 curl): %v", tool, err)
		}
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// testClient retries fast, so that tests of failures do not wait.
func testClient() *Client {
	c := NewClient("test")
	c.BaseDelay = 5 * time.Millisecond
	c.MaxDelay = 50 * time.Millisecond
	c.MaxAttempts = 3
	return c
}

func sha256File(t testing.TB, path string) digest.Digest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil)))
}

// sha256sum asks coreutils, an oracle independent of this package.
func sha256sum(t testing.TB, path string) string {
	t.Helper()
	out := run(t, "sha256sum", path)
	return strings.Fields(out)[0]
}

// imageID computes an image ID the way SPEC §1 says anyone can:
// qemu-img convert -O raw, then sha256sum.
func imageID(t testing.TB, img string) digest.Digest {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "out.raw")
	run(t, "qemu-img", "convert", "-O", "raw", img, raw)
	return digest.Digest("sha256:" + sha256sum(t, raw))
}

// qemuWrite writes a pattern into an image with qemu-io, so that images
// differ and deltas hold data.
func qemuWrite(t testing.TB, img string, pattern byte, off, length int64) {
	t.Helper()
	run(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x%02x %d %d", pattern, off, length), img)
}

// image is one image of a test repository.
type image struct {
	id, blob digest.Digest
	size     int64
	parent   *image
	vsize    int64
}

func (im *image) hex() string { return im.blob.Encoded() }

// repo builds a version 1 repository directory: blobs made by qemu-img,
// named by their sha256, with backing names that are the parent's HEX.
type repo struct {
	t      testing.TB
	dir    string
	images []*image
}

func newRepo(t testing.TB) *repo {
	t.Helper()
	need(t, "qemu-img", "qemu-io", "sha256sum")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &repo{t: t, dir: dir}
}

func (r *repo) blobDir() string { return filepath.Join(r.dir, "blobs", "sha256") }

// add makes an image of 4 MiB with a pattern at some offset, a delta of
// parent if not nil.
func (r *repo) add(parent *image, pattern byte, off int64) *image {
	t := r.t
	t.Helper()
	tmp := filepath.Join(r.blobDir(), fmt.Sprintf("new-%d.qcow2", len(r.images)))
	args := []string{"create", "-q", "-f", "qcow2"}
	if parent != nil {
		args = append(args, "-b", parent.hex(), "-F", "qcow2")
	}
	args = append(args, tmp, "4M")
	run(t, "qemu-img", args...)
	qemuWrite(t, tmp, pattern, off, 64<<10)
	im := &image{parent: parent, vsize: 4 << 20}
	im.id = imageID(t, tmp)
	im.blob = digest.Digest("sha256:" + sha256sum(t, tmp))
	fi, err := os.Stat(tmp)
	if err != nil {
		t.Fatal(err)
	}
	im.size = fi.Size()
	if err := os.Rename(tmp, filepath.Join(r.blobDir(), im.hex())); err != nil {
		t.Fatal(err)
	}
	r.images = append(r.images, im)
	return im
}

// addFile puts an arbitrary file in the repository as an image's blob.
func (r *repo) addFile(path string, parent *image, id digest.Digest) *image {
	t := r.t
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	im := &image{parent: parent, id: id, vsize: 4 << 20}
	im.blob = digest.FromBytes(b)
	im.size = int64(len(b))
	if err := os.WriteFile(filepath.Join(r.blobDir(), im.hex()), b, 0o444); err != nil {
		t.Fatal(err)
	}
	r.images = append(r.images, im)
	return im
}

// writeIndex writes a version 1 index of every image, with comments and
// odd spacing that a byte-exact fetch must keep.
func (r *repo) writeIndex() []byte {
	t := r.t
	t.Helper()
	var b strings.Builder
	b.WriteString("# a hand-written index: comments and   odd spacing stay\nversion: 1\nimages:\n")
	imgs := append([]*image(nil), r.images...)
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].id < imgs[j].id })
	for _, im := range imgs {
		fmt.Fprintf(&b, "  %s:    # image\n", im.id)
		fmt.Fprintf(&b, "    blob:   %s\n", im.blob)
		fmt.Fprintf(&b, "    blob-size: %d\n", im.size)
		if im.parent != nil {
			fmt.Fprintf(&b, "    parent: %s\n", im.parent.id)
		}
		fmt.Fprintf(&b, "    virtual-size: %d\n", im.vsize)
		b.WriteString("    description: \"test image ✓\"\n")
	}
	b.WriteString("tags: {}\n")
	data := []byte(b.String())
	if err := os.WriteFile(filepath.Join(r.dir, IndexFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

// keys makes an ed25519 key pair with ssh-keygen and an allowed_signers
// file naming it.
type keys struct {
	priv, allowed string
}

func newKeys(t testing.TB, principal string) keys {
	t.Helper()
	need(t, "ssh-keygen")
	dir := t.TempDir()
	priv := filepath.Join(dir, "id")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", priv)
	pub, err := os.ReadFile(priv + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(allowed, []byte(principal+" "+string(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	return keys{priv: priv, allowed: allowed}
}

// sign signs dir/index.yaml into dir/index.yaml.sig with ssh-keygen.
func (k keys) sign(t testing.TB, dir string) {
	t.Helper()
	os.Remove(filepath.Join(dir, SigFile))
	run(t, "ssh-keygen", "-q", "-Y", "sign", "-f", k.priv, "-n", "canga-index", filepath.Join(dir, IndexFile))
}

// freePort returns a port nobody listens on (at the time of asking).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// pythonServer serves dir with python3 -m http.server, an independent
// static server (which, unlike ours, ignores Range), and returns its URL.
func pythonServer(t testing.TB, dir string) string {
	t.Helper()
	need(t, "python3")
	var lastErr error
	for range 3 { // the free port can be taken in between: try another
		url, err := startPython(t, dir, freePort(t))
		if err == nil {
			return url
		}
		lastErr = err
	}
	t.Fatal(lastErr)
	return ""
}

func startPython(t testing.TB, dir string, port int) (string, error) {
	cmd := exec.Command("python3", "-m", "http.server", "--bind", "127.0.0.1", strconv.Itoa(port), "--directory", dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "no-such-file")
		if err == nil {
			resp.Body.Close()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
			})
			return url, nil
		}
		select {
		case err := <-exited:
			return "", fmt.Errorf("python3 http.server exited: %v: %s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	_ = cmd.Process.Kill()
	<-exited
	return "", fmt.Errorf("python3 http.server did not answer within 15s: %s", out.String())
}

// ourServer serves dir with Handler on a real listener.
func ourServer(t testing.TB, dir string) string {
	t.Helper()
	srv := httptest.NewServer(Handler(dir))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// servers are the two static servers every remote test runs against.
var servers = []struct {
	name  string
	start func(testing.TB, string) string
}{
	{"python", pythonServer},
	{"handler", ourServer},
}

// reqLog records the requests a test server saw.
type reqLog struct {
	mu   sync.Mutex
	reqs []loggedReq
}

type loggedReq struct {
	path, rng string
}

func (l *reqLog) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, loggedReq{path: r.URL.Path, rng: r.Header.Get("Range")})
}

func (l *reqLog) all() []loggedReq {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedReq(nil), l.reqs...)
}

// blobsIn lists the blobs of a store.
func blobsIn(t testing.TB, s *cas.Store) []cas.BlobInfo {
	t.Helper()
	infos, junk, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(junk) > 0 {
		t.Fatalf("junk in the store: %v", junk)
	}
	return infos
}

// tmpEntries lists what is left in a store's .tmp/.
func tmpEntries(t testing.TB, s *cas.Store) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Dir(), ".tmp"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func newStore(t testing.TB) *cas.Store {
	t.Helper()
	s, err := cas.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
