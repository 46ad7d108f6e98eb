package registry

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/cangallo/canga/internal/testregistry"
)

// BenchmarkPush pushes a 64 MiB layer to a new repository each time (the
// registry has the blob, but not in that repository, so it is sent
// again), through the plain-HTTP test registry on loopback.
//
//	go test -run XXX -bench . -benchtime 5x ./registry/
func BenchmarkPush(b *testing.B) {
	ctx := context.Background()
	b.Setenv("DOCKER_CONFIG", b.TempDir())
	reg := testregistry.Start(b, testregistry.Options{})
	c, err := NewClient(reg.Host, Options{})
	if err != nil {
		b.Fatal(err)
	}
	l := makeLayer(b, 64<<20, 1)
	img, _ := makeImage(b, "bench", l)
	b.SetBytes(l.desc.Size)
	b.ResetTimer()
	for i := range b.N {
		repo, err := c.Repository(fmt.Sprintf("bench/push%d", i))
		if err != nil {
			b.Fatal(err)
		}
		res, err := repo.Push(ctx, img, "v1", PushOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if !has(res.Uploaded, l.desc.Digest) {
			b.Fatal("layer not uploaded")
		}
	}
}

// BenchmarkOpenBlob reads a 64 MiB blob from the test registry.
func BenchmarkOpenBlob(b *testing.B) {
	ctx := context.Background()
	b.Setenv("DOCKER_CONFIG", b.TempDir())
	reg := testregistry.Start(b, testregistry.Options{})
	c, err := NewClient(reg.Host, Options{})
	if err != nil {
		b.Fatal(err)
	}
	repo, err := c.Repository("bench/pull")
	if err != nil {
		b.Fatal(err)
	}
	l := makeLayer(b, 64<<20, 1)
	img, _ := makeImage(b, "bench", l)
	if _, err := repo.Push(ctx, img, "v1", PushOptions{}); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(l.desc.Size)
	b.ResetTimer()
	for range b.N {
		rc, err := repo.OpenBlob(ctx, l.desc, 0)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{rc}, buf)
		rc.Close()
		if err != nil || n != l.desc.Size {
			b.Fatalf("%d bytes, %v", n, err)
		}
	}
}
