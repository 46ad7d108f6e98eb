package remote

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// testClient retries fast, so that tests of failures do not wait.
func testClient() *Client {
	c := NewClient("test")
	c.BaseDelay = 5 * time.Millisecond
	c.MaxDelay = 50 * time.Millisecond
	c.MaxAttempts = 3
	return c
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
	{"python", testkit.PythonHTTPServer},
	{"handler", ourServer},
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, path, data, 0o644)
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
