package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cangallo/canga/internal/panics"
)

// The files of a static repository (SPEC §2), as served and fetched.
const (
	IndexFile = "index.yaml"
	SigFile   = "index.yaml.sig"
)

// BlobPath is where a blob is, relative to a repository's base URL.
func BlobPath(hex string) string { return "blobs/sha256/" + hex }

// Handler serves the repository directory dir read-only over HTTP, as a
// remote that canga (or anything else) pulls from (SPEC §2, §5 "serve").
//
// It serves exactly /index.yaml, /index.yaml.sig and
// /blobs/sha256/<64 lowercase hex>, when they are regular files, for GET
// and HEAD; every other path is 404 (no listings, nothing of .tmp/ or
// .lock) and every other method 405. Files are opened component by
// component with O_NOFOLLOW, so a symbolic link anywhere inside the
// repository is never followed: a repository cannot be made to serve a
// file of the host. The request path is matched as sent, never cleaned,
// so "..", "//" and their encodings match nothing.
//
// Responses carry Accept-Ranges, Last-Modified and a strong ETag: a blob's
// digest, or the SHA-256 of an index file's content, both as
// "sha256:HEX". [http.ServeContent] does the rest: single and multiple
// ranges, suffix ranges, 416, If-None-Match (304), If-Range, HEAD.
func Handler(dir string) http.Handler {
	return &handler{dir: dir, etags: make(map[fileKey]string)}
}

type handler struct {
	dir   string
	mu    sync.Mutex
	etags map[fileKey]string // of index files, by identity and version
}

// fileKey identifies one version of a file: an index is replaced by
// rename, so a new version has a new inode.
type fileKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

type route int

const (
	routeNone route = iota
	routeIndex
	routeSig
	routeBlob
)

func match(path string) (route, []string) {
	switch path {
	case "/" + IndexFile:
		return routeIndex, []string{IndexFile}
	case "/" + SigFile:
		return routeSig, []string{SigFile}
	}
	name, ok := strings.CutPrefix(path, "/blobs/sha256/")
	if !ok || len(name) != 64 {
		return routeNone, nil
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return routeNone, nil
		}
	}
	return routeBlob, []string{"blobs", "sha256", name}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rt, parts := match(r.URL.Path)
	if rt == routeNone {
		http.NotFound(w, r)
		return
	}
	f, fi, err := openBeneath(h.dir, parts)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, errNotRegular) {
			http.NotFound(w, r)
			return
		}
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	switch rt {
	case routeBlob:
		hd.Set("Content-Type", "application/octet-stream")
		// A blob never changes: its name is its content.
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
		hd.Set("ETag", `"sha256:`+parts[2]+`"`)
	default:
		etag, err := h.etag(f, fi)
		if err != nil {
			http.Error(w, "internal server error", http.StatusInternalServerError)
			return
		}
		if rt == routeIndex {
			hd.Set("Content-Type", "application/yaml")
		} else {
			hd.Set("Content-Type", "text/plain; charset=utf-8")
		}
		// Caches must ask every time (cheaply, by ETag): a stale index
		// hides new images, and an index and signature of two versions
		// do not verify.
		hd.Set("Cache-Control", "no-cache")
		hd.Set("ETag", etag)
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

var errNotRegular = errors.New("not a regular file")

// etag is the SHA-256 of an index file's content, computed once per
// version of the file.
func (h *handler) etag(f *os.File, fi fs.FileInfo) (string, error) {
	key, err := keyOf(fi)
	if err != nil {
		return "", err
	}
	h.mu.Lock()
	tag, ok := h.etags[key]
	h.mu.Unlock()
	if ok {
		return tag, nil
	}
	hs := sha256.New()
	// pread: the file offset stays at 0 for ServeContent.
	if _, err := io.Copy(hs, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return "", err
	}
	tag = `"sha256:` + hex.EncodeToString(hs.Sum(nil)) + `"`
	h.mu.Lock()
	if len(h.etags) >= 16 {
		clear(h.etags) // old versions of the two files
	}
	h.etags[key] = tag
	h.mu.Unlock()
	return tag, nil
}

// Serve serves the repository dir (see [Handler]) on addr until ctx ends,
// then shuts down gracefully: it stops accepting, and waits up to
// ShutdownTimeout for the transfers in flight before it cuts them. ready,
// if not nil, is called with the address listened on (useful with port 0)
// before the first request is accepted.
func Serve(ctx context.Context, dir, addr string, ready func(net.Addr)) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("remote: serve: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("remote: serve: %s is not a directory", dir)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("remote: serve: %w", err)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	return ServeListener(ctx, ln, dir)
}

// ShutdownTimeout is how long [Serve] waits for transfers in flight when
// its context ends.
const ShutdownTimeout = 10 * time.Second

// ServeListener is [Serve] on a listener the caller made. It closes ln.
func ServeListener(ctx context.Context, ln net.Listener, dir string) error {
	srv := &http.Server{
		Handler:           Handler(dir),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		// No WriteTimeout: a blob may take hours to a slow client.
		ErrorLog: log.New(io.Discard, "", 0), // a library does not print
	}
	errc := make(chan error, 1)
	go func() {
		var err error
		defer func() { errc <- err }()
		// A panic of the listener (or of net/http outside a handler,
		// whose panics it recovers itself) ends Serve with an error.
		defer panics.Recover(&err, ErrInternal, func() string { return "serving " + ln.Addr().String() })
		err = srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("remote: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("remote: serve: %w", err)
	}
	return nil
}
