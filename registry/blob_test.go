package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cangallo/canga/internal/testregistry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readFrom opens the blob at off and reads it to the end.
func readFrom(ctx context.Context, repo *Repository, desc ocispec.Descriptor, off int64) ([]byte, error) {
	rc, err := repo.OpenBlob(ctx, desc, off)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// pushLayer pushes an image of one layer and returns the layer's bytes.
func pushLayer(t *testing.T, repo *Repository, l layerFile) []byte {
	t.Helper()
	img, _ := makeImage(t, "blob", l)
	if _, err := repo.Push(context.Background(), img, "blob", PushOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenBlob reads a blob from several offsets with Range requests
// and compares byte for byte.
func TestOpenBlob(t *testing.T) {
	ctx := context.Background()
	_, c, _ := startPlain(t, testregistry.Options{})
	repo := repository(t, c, "blobs")
	l := makeLayer(t, 3<<20+1234, 31)
	want := pushLayer(t, repo, l)
	size := l.desc.Size
	for _, off := range []int64{0, 1, 4095, size / 2, size - 1, size} {
		got, err := readFrom(ctx, repo, l.desc, off)
		if err != nil {
			t.Fatalf("offset %d: %v", off, err)
		}
		if !bytes.Equal(got, want[off:]) {
			t.Errorf("offset %d: %d bytes differ from the file's %d", off, len(got), len(want[off:]))
		}
	}
	for _, off := range []int64{-1, size + 1} {
		if _, err := repo.OpenBlob(ctx, l.desc, off); err == nil {
			t.Errorf("offset %d accepted", off)
		}
	}

	// A descriptor longer than the blob: the registry cannot satisfy the
	// range, or the body ends early.
	long := l.desc
	long.Size += 10
	if _, err := readFrom(ctx, repo, long, size+5); !errors.Is(err, ErrCorrupt) {
		t.Errorf("range past the registry's blob: %v, want ErrCorrupt", err)
	}
	if _, err := readFrom(ctx, repo, long, 0); err == nil {
		t.Error("a descriptor longer than the blob read without error")
	}
	// Shorter: the body goes on past the descriptor.
	short := l.desc
	short.Size -= 10
	if _, err := readFrom(ctx, repo, short, 100); !errors.Is(err, ErrCorrupt) {
		t.Errorf("descriptor shorter than the blob: %v, want ErrCorrupt", err)
	}
	missing := l.desc
	missing.Digest = digest.FromString("missing")
	if _, err := repo.OpenBlob(ctx, missing, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing blob: %v, want ErrNotFound", err)
	}
}

// storage serves a registry's filesystem storage the way an object store
// behind a redirect does, in one of three manners.
type storage struct {
	root  string
	mode  atomic.Value // "range", "norange" or "short"
	hits  atomic.Int32
	authz atomic.Int32 // requests that carried an Authorization header
}

func (s *storage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	if r.Header.Get("Authorization") != "" {
		s.authz.Add(1)
	}
	switch s.mode.Load().(string) {
	case "norange":
		// A server that ignores Range: 200 and the whole file.
		r.Header.Del("Range")
	case "short":
		// Half the file, then the end of a chunked body.
		b, err := os.ReadFile(filepath.Join(s.root, filepath.FromSlash(r.URL.Path)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b[:len(b)/2])
		return
	}
	http.FileServer(http.Dir(s.root)).ServeHTTP(w, r)
}

// TestOpenBlobRedirect: the registry (with authentication and TLS)
// redirects blob GETs to a storage server, which gets the Range header
// but not the credentials; a storage that ignores Range (200) and one
// that cuts the body short are handled.
func TestOpenBlobRedirect(t *testing.T) {
	ctx := context.Background()
	cfgDir := isolate(t)
	st := &storage{root: t.TempDir()}
	st.mode.Store("range")
	srv := httptest.NewServer(st)
	t.Cleanup(srv.Close)
	reg := testregistry.Start(t, testregistry.Options{Secure: true, RootDir: st.root, RedirectURL: srv.URL})
	opts := Options{CAFile: reg.CAFile}
	if err := Login(ctx, reg.Host, reg.User, reg.Password, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfgDir, "config.json")); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(reg.Host, opts)
	if err != nil {
		t.Fatal(err)
	}
	repo := repository(t, c, "redirected")
	l := makeLayer(t, 2<<20+77, 41)
	want := pushLayer(t, repo, l)
	size := l.desc.Size

	for _, mode := range []string{"range", "norange"} {
		st.mode.Store(mode)
		for _, off := range []int64{0, 1, size / 3, size - 1} {
			hits := st.hits.Load()
			got, err := readFrom(ctx, repo, l.desc, off)
			if err != nil {
				t.Fatalf("%s, offset %d: %v", mode, off, err)
			}
			if !bytes.Equal(got, want[off:]) {
				t.Errorf("%s, offset %d: %d bytes differ", mode, off, len(got))
			}
			if st.hits.Load() == hits {
				t.Errorf("%s, offset %d: the storage server was not asked", mode, off)
			}
		}
	}
	if n := st.authz.Load(); n != 0 {
		t.Errorf("credentials went to the storage server %d times", n)
	}

	st.mode.Store("short")
	if _, err := readFrom(ctx, repo, l.desc, 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short body: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := readFrom(ctx, repo, l.desc, size-10); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short body at an offset past it: %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestManifestCap: a manifest over 4 MiB is refused before it is read.
// Distribution 2.8 refuses to store one through the API (its PUT limit is
// 4 MiB too) and, planted in its storage, to serve one (500 "storage:
// read exceeds limit"). So the registry that serves one is a hostile
// proxy in front of the real registry: it answers for the manifests of
// repository "big" and passes everything else through.
func TestManifestCap(t *testing.T) {
	ctx := context.Background()
	isolate(t)
	reg := testregistry.Start(t, testregistry.Options{})

	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     ocispec.MediaTypeImageManifest,
		"config":        ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: ocispec.DescriptorEmptyJSON.Digest, Size: 2},
		"layers":        []ocispec.Descriptor{},
		"annotations":   map[string]string{"pad": strings.Repeat("x", MaxManifestSize)},
	}
	big, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(big)

	// The premise: the real registry refuses it.
	req, _ := http.NewRequest(http.MethodPut, reg.URL+"/v2/big/manifests/big", bytes.NewReader(big))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("distribution answered a %d-byte manifest PUT with %s, not 400", len(big), resp.Status)
	}

	target, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var gets atomic.Int32
	var chunked atomic.Bool
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v2/big/manifests/") {
			proxy.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		w.Header().Set("Docker-Content-Digest", d.String())
		if r.Method == http.MethodGet {
			gets.Add(1)
			if chunked.Load() {
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				_, _ = w.Write(big)
				return
			}
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(big)
		}
	}))
	t.Cleanup(hostile.Close)

	c, err := NewClient(strings.TrimPrefix(hostile.URL, "http://"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo := repository(t, c, "big")
	desc, err := repo.Resolve(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != d || desc.Size != int64(len(big)) {
		t.Fatalf("resolve: %+v, want %s and %d bytes", desc, d, len(big))
	}
	if _, err := repo.FetchManifest(ctx, desc); !errors.Is(err, ErrTooLarge) {
		t.Errorf("fetch of a %d-byte manifest: %v, want ErrTooLarge", len(big), err)
	}
	if n := gets.Load(); n != 0 {
		t.Errorf("the too-large manifest was requested %d times", n)
	}
	// A descriptor that understates the size: the answer is refused on
	// its Content-Length, or, chunked, read no further than the claimed
	// size and one byte.
	lie := desc
	lie.Size = 1000
	for _, ch := range []bool{false, true} {
		chunked.Store(ch)
		_, err := repo.FetchManifest(ctx, lie)
		if ch && !errors.Is(err, ErrCorrupt) || !ch && (err == nil || !strings.Contains(err.Error(), "Content-Length")) {
			t.Errorf("chunked %t: a manifest bigger than its descriptor: %v", ch, err)
		}
	}
	if n := gets.Load(); n != 2 {
		t.Errorf("%d GETs, want 2", n)
	}
}
