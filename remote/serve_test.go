package remote

import (
	"bufio"
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
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveRepo is a repository with one blob, an index, a signature, and the
// things a server must not serve.
type serveRepo struct {
	dir, blobHex string
	blob, index  []byte
}

func newServeRepo(t *testing.T) serveRepo {
	dir, blobHex, blob, idx := staticRepo(t, 3<<20)
	writeFile(t, filepath.Join(dir, SigFile), []byte("-----BEGIN SSH SIGNATURE-----\n"))
	for _, d := range []string{".tmp", "blobs/sha256/" + strings.Repeat("d", 64)} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, ".tmp", "partial-"+blobHex), []byte("secret work in progress"))
	writeFile(t, filepath.Join(dir, ".lock"), []byte("123\n"))
	bd := filepath.Join(dir, "blobs", "sha256")
	// A symbolic link with a blob's name, to a file of the host.
	if err := os.Symlink("/etc/passwd", filepath.Join(bd, strings.Repeat("a", 64))); err != nil {
		t.Fatal(err)
	}
	// ... and to a blob inside the repository: not followed either.
	if err := os.Symlink(blobHex, filepath.Join(bd, strings.Repeat("b", 64))); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(bd, strings.Repeat("c", 64)), 0o644); err != nil {
		t.Fatal(err)
	}
	return serveRepo{dir: dir, blobHex: blobHex, blob: blob, index: idx}
}

func TestHandlerRanges(t *testing.T) {
	sr := newServeRepo(t)
	srv := httptest.NewServer(Handler(sr.dir))
	defer srv.Close()
	blobURL := srv.URL + "/blobs/sha256/" + sr.blobHex
	size := len(sr.blob)
	etag := `"sha256:` + sr.blobHex + `"`
	sum := sha256.Sum256(sr.index)
	indexETag := `"sha256:` + hex.EncodeToString(sum[:]) + `"`

	cases := []struct {
		name     string
		method   string
		url      string
		header   map[string]string
		status   int
		body     []byte // nil: not checked
		wantHdrs map[string]string
	}{
		{"whole blob", "GET", blobURL, nil, 200, sr.blob, map[string]string{
			"Content-Type": "application/octet-stream", "ETag": etag, "Accept-Ranges": "bytes",
			"Content-Length": fmt.Sprint(size), "Cache-Control": "public, max-age=31536000, immutable"}},
		{"single range", "GET", blobURL, map[string]string{"Range": "bytes=100-199"}, 206, sr.blob[100:200], map[string]string{
			"Content-Range": fmt.Sprintf("bytes 100-199/%d", size), "Content-Length": "100"}},
		{"open range", "GET", blobURL, map[string]string{"Range": fmt.Sprintf("bytes=%d-", size-10)}, 206, sr.blob[size-10:], map[string]string{
			"Content-Range": fmt.Sprintf("bytes %d-%d/%d", size-10, size-1, size)}},
		{"suffix range", "GET", blobURL, map[string]string{"Range": "bytes=-100"}, 206, sr.blob[size-100:], map[string]string{
			"Content-Range": fmt.Sprintf("bytes %d-%d/%d", size-100, size-1, size)}},
		{"unsatisfiable", "GET", blobURL, map[string]string{"Range": fmt.Sprintf("bytes=%d-", size)}, 416, nil, map[string]string{
			"Content-Range": fmt.Sprintf("bytes */%d", size)}},
		{"If-None-Match", "GET", blobURL, map[string]string{"If-None-Match": etag}, 304, []byte{}, nil},
		{"If-Range stale", "GET", blobURL, map[string]string{"Range": "bytes=0-9", "If-Range": `"sha256:other"`}, 200, sr.blob, nil},
		{"If-Range current", "GET", blobURL, map[string]string{"Range": "bytes=0-9", "If-Range": etag}, 206, sr.blob[:10], nil},
		{"HEAD", "HEAD", blobURL, nil, 200, []byte{}, map[string]string{"Content-Length": fmt.Sprint(size), "ETag": etag}},
		{"index", "GET", srv.URL + "/index.yaml", nil, 200, sr.index, map[string]string{
			"Content-Type": "application/yaml", "ETag": indexETag, "Cache-Control": "no-cache"}},
		{"index not modified", "GET", srv.URL + "/index.yaml", map[string]string{"If-None-Match": indexETag}, 304, []byte{}, nil},
		{"signature", "GET", srv.URL + "/index.yaml.sig", nil, 200, []byte("-----BEGIN SSH SIGNATURE-----\n"), nil},
		{"POST", "POST", blobURL, nil, 405, nil, map[string]string{"Allow": "GET, HEAD"}},
		{"PUT", "PUT", srv.URL + "/index.yaml", nil, 405, nil, nil},
		{"DELETE", "DELETE", blobURL, nil, 405, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.body != nil && string(body) != string(tc.body) {
				t.Fatalf("body of %d bytes differs from the expected %d", len(body), len(tc.body))
			}
			for k, v := range tc.wantHdrs {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tc.status < 300 && resp.Header.Get("Last-Modified") == "" {
				t.Error("no Last-Modified")
			}
		})
	}

	// A new index (replaced by rename, as cas does) has a new ETag.
	tmp := filepath.Join(sr.dir, "index.new")
	writeFile(t, tmp, append(sr.index, "# more\n"...))
	if err := os.Rename(tmp, filepath.Join(sr.dir, IndexFile)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL + "/index.yaml")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("ETag"); got == indexETag || got == "" {
		t.Fatalf("ETag %q after the index changed", got)
	}
	// If-Modified-Since alone (what a client that only kept the
	// Last-Modified sends): 304 for the version it has.
	req, err := http.NewRequest("GET", srv.URL+"/index.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("If-Modified-Since", resp.Header.Get("Last-Modified"))
	ims, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ims.Body.Close()
	if ims.StatusCode != http.StatusNotModified {
		t.Fatalf("If-Modified-Since of the current version: %d", ims.StatusCode)
	}
}

// rawGet sends a request line as given, over TCP, so that no client
// cleans the path first, and returns the status code.
func rawGet(t *testing.T, addr, target string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(body), "root:") || strings.Contains(string(body), "secret") {
		t.Fatalf("%s: leaked %q", target, body)
	}
	return resp.StatusCode
}

func TestHandlerRefuses(t *testing.T) {
	sr := newServeRepo(t)
	srv := httptest.NewServer(Handler(sr.dir))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	blob := "/blobs/sha256/" + sr.blobHex
	targets := []string{
		"/",
		"/blobs",
		"/blobs/",
		"/blobs/sha256",
		"/blobs/sha256/",
		"/.tmp/",
		"/.tmp/partial-" + sr.blobHex,
		"/.lock",
		"/blobs/sha256/../../../../../../etc/passwd",
		"/blobs/sha256/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
		"/blobs/sha256/..%2f..%2f..%2fetc%2fpasswd",
		"/../../../etc/passwd",
		"/%2e%2e/%2e%2e/etc/passwd",
		"//etc/passwd",
		"/blobs//sha256/" + sr.blobHex,
		"//blobs/sha256/" + sr.blobHex,
		"/blobs/sha256/./" + sr.blobHex,
		"/blobs/sha256/" + sr.blobHex + "/",
		"/blobs/sha256/" + sr.blobHex + "/..",
		`/blobs\sha256\` + sr.blobHex,
		"/blobs/sha256/" + strings.ToUpper(sr.blobHex),
		"/blobs/sha256/" + sr.blobHex[:63],
		"/blobs/sha256/" + sr.blobHex + "0",
		"/blobs/sha256/" + strings.Repeat("a", 64), // symlink to /etc/passwd
		"/blobs/sha256/" + strings.Repeat("b", 64), // symlink to a blob
		"/blobs/sha256/" + strings.Repeat("c", 64), // FIFO: must not hang
		"/blobs/sha256/" + strings.Repeat("d", 64), // directory: no listing
		"/blobs/sha256/" + strings.Repeat("e", 64), // missing
		"/blobs/sha512/" + sr.blobHex,
		"/index.yaml/",
		"/index.yaml.sig.bak",
		"/INDEX.YAML",
		"/index.yaml%00",
		"/etc/passwd",
	}
	for _, target := range targets {
		if got := rawGet(t, addr, target); got != http.StatusNotFound && got != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 404", target, got)
		} else if got == http.StatusBadRequest && !strings.Contains(target, `\`) && !strings.Contains(target, "%00") {
			t.Errorf("GET %s: 400, want 404", target)
		}
	}
	// The checks above would pass on a server that serves nothing.
	if got := rawGet(t, addr, blob); got != http.StatusOK {
		t.Fatalf("GET %s: %d", blob, got)
	}
	// A blob directory that is a symbolic link is not followed either.
	outside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(outside, "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(outside, "sha256", sr.blobHex), []byte("outside"))
	if err := os.RemoveAll(filepath.Join(sr.dir, "blobs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(sr.dir, "blobs")); err != nil {
		t.Fatal(err)
	}
	if got := rawGet(t, addr, blob); got != http.StatusNotFound {
		t.Fatalf("GET through a symlinked blobs/: %d", got)
	}
}

func TestServeGraceful(t *testing.T) {
	sr := newServeRepo(t)
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, sr.dir, "127.0.0.1:0", func(a net.Addr) { addrc <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
	ib, err := testClient().Get(context.Background(), "http://"+addr.String(), IndexFile, 1<<20)
	if err != nil || string(ib) != string(sr.index) {
		t.Fatalf("fetch from Serve: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(ShutdownTimeout + 5*time.Second):
		t.Fatal("Serve did not stop")
	}
	if err := Serve(context.Background(), filepath.Join(sr.dir, "missing"), "127.0.0.1:0", nil); err == nil {
		t.Fatal("Serve of a missing directory")
	}
}

// panicListener panics on Accept, as a bug below Serve would.
type panicListener struct{ net.Listener }

func (l panicListener) Accept() (net.Conn, error) { panic("accept: boom") }

// A panic in the serving goroutine is an error of ServeListener that says
// what it was serving, not a crash.
func TestServePanicBecomesError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = ServeListener(t.Context(), panicListener{ln}, t.TempDir())
	if !errors.Is(err, ErrInternal) || !strings.Contains(err.Error(), "serving "+ln.Addr().String()) || !strings.Contains(err.Error(), "accept: boom") {
		t.Fatalf("ServeListener: %v", err)
	}
}
