package remote

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
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

// testClient retries fast, so that tests of failures do not wait.
func testClient() *Client {
	c := NewClient("test")
	c.BaseDelay = 5 * time.Millisecond
	c.MaxDelay = 50 * time.Millisecond
	c.MaxAttempts = 3
	return c
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

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// randomBytes is deterministic pseudo-random data.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

// staticRepo lays out the files of a static repository (SPEC §2) in a
// temp dir: an index, and one blob of random bytes named by its digest.
// The transport knows nothing of what the files mean.
func staticRepo(t testing.TB, blobSize int) (dir, blobHex string, blob, idx []byte) {
	t.Helper()
	dir = t.TempDir()
	blob = randomBytes(uint64(blobSize), blobSize)
	sum := sha256.Sum256(blob)
	blobHex = hex.EncodeToString(sum[:])
	idx = []byte("version: 1\nimages: {}\n")
	writeFile(t, filepath.Join(dir, IndexFile), idx)
	writeFile(t, filepath.Join(dir, BlobPath(blobHex)), blob)
	return dir, blobHex, blob, idx
}
