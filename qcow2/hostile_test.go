package qcow2

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// TestHostileImages opens and digests every hostile image: each must fail
// with a clear error, quickly, without a panic and without allocating in
// proportion to a number found in the file.
func TestHostileImages(t *testing.T) {
	cases, err := testkit.Hostile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			err := openAndDigest(t.Context(), c.Path)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("no error")
			}
			if !strings.Contains(strings.ToLower(err.Error()), c.Want) {
				t.Errorf("error %q does not mention %q", err, c.Want)
			}
			if elapsed > 5*time.Second {
				t.Errorf("took %v", elapsed)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("allocated %d MiB", alloc>>20)
			}
			t.Logf("%v (%v)", err, elapsed)
		})
	}
}

func openAndDigest(ctx context.Context, name string) error {
	d, err := OpenFile(name)
	if err != nil {
		return err
	}
	defer d.Close()
	_, err = Digest(ctx, d, ScanOptions{})
	return err
}
