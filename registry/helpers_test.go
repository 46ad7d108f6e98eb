package registry

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cangallo/canga/internal/testregistry"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	testArtifactType = "application/vnd.cangallo.image.v1"
	testConfigType   = "application/vnd.cangallo.image.config.v1+json"
	testLayerType    = "application/vnd.cangallo.qcow2.v1"
	testSigType      = "application/vnd.cangallo.signature.v1"
	testSigLayerType = "application/vnd.cangallo.sshsig.v1"
)

// isolate points DOCKER_CONFIG at an empty directory, so that no test
// reads or writes the real ~/.docker/config.json. It returns the
// directory.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	return dir
}

// counter counts the requests that go on the wire, by kind.
type counter struct {
	mu       sync.Mutex
	uploads  map[digest.Digest]int // PUT .../blobs/uploads/...?digest=D with a body
	mounts   int                   // POST .../blobs/uploads/?mount=...
	requests int
}

func newCounter() *counter { return &counter{uploads: map[digest.Digest]int{}} }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (c *counter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		c.mu.Lock()
		c.requests++
		if strings.Contains(req.URL.Path, "/blobs/uploads/") {
			q := req.URL.Query()
			switch {
			case req.Method == http.MethodPut && q.Get("digest") != "":
				c.uploads[digest.Digest(q.Get("digest"))]++
			case req.Method == http.MethodPost && q.Get("mount") != "":
				c.mounts++
			}
		}
		c.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

func (c *counter) uploadCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.uploads {
		n += v
	}
	return n
}

func (c *counter) uploaded(d digest.Digest) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.uploads[d]
}

// layerFile is a blob on disk.
type layerFile struct {
	path string
	desc ocispec.Descriptor
}

// makeLayer writes size pseudo-random bytes (seeded by seed) to a file.
func makeLayer(t testing.TB, size int, seed uint64) layerFile {
	t.Helper()
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	d := digest.FromBytes(b)
	path := filepath.Join(t.TempDir(), d.Encoded())
	if err := os.WriteFile(path, b, 0o444); err != nil {
		t.Fatal(err)
	}
	return layerFile{path: path, desc: ocispec.Descriptor{
		MediaType:   testLayerType,
		Digest:      d,
		Size:        int64(size),
		Annotations: map[string]string{ocispec.AnnotationTitle: d.Encoded()},
	}}
}

// makeImage builds an image of the layers the way canga will: a config
// naming them, a manifest without timestamps. It counts the opens.
func makeImage(t testing.TB, name string, layers ...layerFile) (Image, *int) {
	t.Helper()
	cfg, err := json.Marshal(map[string]any{"id": name, "chain": len(layers)})
	if err != nil {
		t.Fatal(err)
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: testArtifactType,
		Config:       ocispec.Descriptor{MediaType: testConfigType, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
		Annotations:  map[string]string{"io.cangallo.image.id": name},
	}
	paths := map[digest.Digest]string{}
	for _, l := range layers {
		m.Layers = append(m.Layers, l.desc)
		paths[l.desc.Digest] = l.path
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	opens := new(int)
	return Image{
		Manifest: mb,
		Config:   cfg,
		OpenLayer: func(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
			mu.Lock()
			*opens++
			mu.Unlock()
			return os.Open(paths[d.Digest])
		},
	}, opens
}

// startPlain runs a plain-HTTP registry and returns a client for it that
// counts requests. The client reaches it through the loopback fallback.
func startPlain(t *testing.T, ropts testregistry.Options) (*testregistry.Registry, *Client, *counter) {
	t.Helper()
	isolate(t)
	reg := testregistry.Start(t, ropts)
	cnt := newCounter()
	c, err := NewClient(reg.Host, Options{WrapTransport: cnt.wrap, UserAgent: "canga-test"})
	if err != nil {
		t.Fatal(err)
	}
	return reg, c, cnt
}

func repository(t *testing.T, c *Client, name string) *Repository {
	t.Helper()
	r, err := c.Repository(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func digests(ds []ocispec.Descriptor) []digest.Digest {
	out := make([]digest.Digest, len(ds))
	for i, d := range ds {
		out[i] = d.Digest
	}
	return out
}

func has(ds []ocispec.Descriptor, d digest.Digest) bool {
	for _, x := range ds {
		if x.Digest == d {
			return true
		}
	}
	return false
}
