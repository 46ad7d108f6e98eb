package remote

import (
	"context"
	"crypto/sha256"
	"io"
	"os/exec"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// BenchmarkOpen reads a 256 MiB blob over loopback through a Stream and
// hashes it, from Handler and from python's http.server; curl to
// /dev/null on the same URL is the yardstick. (The whole pull, which also
// stores the bytes, is measured by package repo and bench/run.sh.)
func BenchmarkOpen(b *testing.B) {
	testkit.Need(b, "curl", "python3")
	dir, blobHex, blob, _ := staticRepo(b, 256<<20)
	for _, srv := range servers {
		url := srv.start(b, dir)
		b.Run("curl/"+srv.name, func(b *testing.B) {
			b.SetBytes(int64(len(blob)))
			for b.Loop() {
				if out, err := exec.Command("curl", "-sSf", "-o", "/dev/null", url+BlobPath(blobHex)).CombinedOutput(); err != nil {
					b.Fatalf("curl: %v: %s", err, out)
				}
			}
		})
		b.Run("stream/"+srv.name, func(b *testing.B) {
			c := NewClient("bench")
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(blob)))
			b.ReportAllocs()
			for b.Loop() {
				s, err := c.Open(context.Background(), url, BlobPath(blobHex), 0, int64(len(blob)))
				if err != nil {
					b.Fatal(err)
				}
				h := sha256.New()
				_, err = io.CopyBuffer(h, s, buf)
				s.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
