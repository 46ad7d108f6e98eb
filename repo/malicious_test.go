package repo

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/remote"
)

// TestCopyFromMaliciousServers: a pull (a copy into a remote's cache)
// from servers that drip, redirect badly, answer the wrong range, lie in
// Content-Length or ignore Range either stores the verified blob or fails
// with a clear error and stores nothing; either way no goroutine nor file
// descriptor is left. Not parallel: the counts are the whole process's.
func TestCopyFromMaliciousServers(t *testing.T) {
	src := newSrcRepo(t)
	base, six := grownBase(t, src, "1M")
	cut := testkit.CutAt(testkit.Half)
	type plan = map[int]testkit.Fault
	cases := []struct {
		name string
		plan plan
		want error // nil: stored
	}{
		{"drips a byte a second", testkit.Always(10, testkit.Drip(time.Second)), remote.ErrProtocol},
		{"redirect loop", testkit.Always(20, testkit.RedirectTo("")), remote.ErrProtocol},
		{"redirect to file://", plan{1: testkit.RedirectTo("file://" + src.blobPath(base))}, remote.ErrProtocol},
		// The resumed download is refused, and the copy starts over.
		{"Range answered from byte 0", plan{1: cut, 2: testkit.WrongRange}, nil},
		{"Content-Length longer", plan{1: testkit.LengthLie(100)}, remote.ErrProtocol},
		{"Content-Length shorter", plan{1: testkit.LengthLie(-100)}, remote.ErrProtocol},
		{"200 and the whole file to a Range", plan{1: cut, 2: testkit.WholeIgnoringRange}, nil},
		{"cut, then the length right and the body short", plan{1: cut, 2: cut, 3: cut}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leaks := testkit.CountLeaks(t)
			hs := httptest.NewServer(faults(src.dir, tc.plan))
			c := testClient()
			c.HTTP = remote.NewHTTPClient()
			c.StallTimeout = 1500 * time.Millisecond
			dst := cacheRepo(t, hs.URL+"/", src.dir)
			_, err := dst.Copy(context.Background(), httpSource{c: c, url: hs.URL + "/", signers: noSigners}, six, base.id, CopyOptions{})
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("%v", err)
			case tc.want == nil:
				assertStored(t, dst, base)
			case err == nil:
				t.Errorf("the copy succeeded")
			default:
				if tc.name == "drips a byte a second" {
					testkit.WantErr(t, err, nil, "stalled")
				} else if !errors.Is(err, tc.want) {
					t.Errorf("got %v, want %v", err, tc.want)
				}
				if _, perr := os.Stat(filepath.Join(dst.Dir(), "blobs", "sha256", base.hex())); perr == nil {
					t.Errorf("a failed copy stored the blob")
				}
			}
			t.Logf("%v", err)
			c.HTTP.CloseIdleConnections()
			hs.Close()
			leaks.Check(t, tc.name)
		})
	}
}
