package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

type plan = map[int]testkit.Fault

func faults(dir string, p plan) *testkit.FaultServer {
	return &testkit.FaultServer{Dir: dir, Next: Handler(dir), Plan: p}
}

// readAll opens the blob from off and reads it to the end.
func readAll(t *testing.T, c *Client, url, blobHex string, off, size int64) ([]byte, error) {
	t.Helper()
	s, err := c.Open(context.Background(), url, BlobPath(blobHex), off, size)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return io.ReadAll(s)
}

func TestOpen(t *testing.T) {
	dir, blobHex, blob, _ := staticRepo(t, 3<<20+5)
	size := int64(len(blob))
	blobPath := "/" + BlobPath(blobHex)
	from := func(off int64) string { return fmt.Sprintf("bytes=%d-", off) }

	for _, srv := range servers {
		t.Run("whole and from an offset/"+srv.name, func(t *testing.T) {
			url := srv.start(t, dir)
			for _, off := range []int64{0, 1, size / 3, size - 1, size} {
				for _, sz := range []int64{size, -1} {
					got, err := readAll(t, testClient(), url, blobHex, off, sz)
					if err != nil || !bytes.Equal(got, blob[off:]) {
						t.Fatalf("off %d size %d: %d bytes, err %v", off, sz, len(got), err)
					}
				}
			}
			s, err := testClient().Open(context.Background(), url, BlobPath(blobHex), 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			if s.Size() != size {
				t.Fatalf("Size %d, want the server's %d", s.Size(), size)
			}
			s.Close()
		})
	}

	cases := []struct {
		name string
		plan plan
		off  int64
		c    func() *Client
		want []string
	}{
		{"cut, resumed with Range", plan{1: testkit.CutAt(testkit.Half)}, 0, testClient,
			[]string{blobPath + " ", blobPath + " " + from(size/2)}},
		{"cut twice", plan{1: testkit.CutAt(testkit.Half), 2: testkit.CutAt(func(int) int { return 0 })}, 0, testClient,
			[]string{blobPath + " ", blobPath + " " + from(size/2), blobPath + " " + from(size/2)}},
		{"server ignores Range: bytes skipped", plan{1: testkit.WholeIgnoringRange}, 1000, testClient,
			[]string{blobPath + " " + from(1000)}},
		{"cut, then Range ignored", plan{1: testkit.CutAt(testkit.Half), 2: testkit.WholeIgnoringRange}, 0, testClient,
			[]string{blobPath + " ", blobPath + " " + from(size/2)}},
		{"stalled transfer", plan{1: testkit.StallAt}, 0, func() *Client {
			c := testClient()
			c.StallTimeout = 300 * time.Millisecond
			return c
		}, []string{blobPath + " ", blobPath + " " + from(size/2)}},
		{"503 then fine", plan{1: func(w http.ResponseWriter, r *http.Request, _ []byte) {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		}}, 0, testClient, []string{blobPath + " ", blobPath + " "}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := faults(dir, tc.plan)
			url := srv.Start(t)
			got, err := readAll(t, tc.c(), url, blobHex, tc.off, size)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, blob[tc.off:]) {
				t.Fatalf("read %d bytes that differ from the file's", len(got))
			}
			if fmt.Sprint(srv.Requests()) != fmt.Sprint(tc.want) {
				t.Fatalf("requests:\n got %v\nwant %v", srv.Requests(), tc.want)
			}
		})
	}

	bad := []struct {
		name string
		act  func(w http.ResponseWriter, r *http.Request, data []byte)
		want error
	}{
		{"wrong Content-Range", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(data)-1, len(data)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data)
		}, ErrProtocol},
		{"416 with another size", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)/4))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		}, ErrProtocol},
		{"200 with a longer Content-Length", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)+10))
			w.WriteHeader(http.StatusOK)
			w.Write(append(data, make([]byte, 10)...))
		}, ErrProtocol},
		{"200 with a shorter Content-Length", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)-10))
			w.WriteHeader(http.StatusOK)
			w.Write(data[:len(data)-10])
		}, ErrProtocol},
		{"more bytes than the file's, chunked", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.WriteHeader(http.StatusOK)
			w.Write(data)
			w.Write([]byte("trailing junk"))
		}, ErrProtocol},
		{"404", func(w http.ResponseWriter, r *http.Request, data []byte) { http.NotFound(w, r) }, ErrNotFound},
		{"403", func(w http.ResponseWriter, r *http.Request, data []byte) { w.WriteHeader(http.StatusForbidden) }, ErrHTTP},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			// Request 1 is cut, so that request 2 asks for a range.
			srv := faults(dir, plan{1: testkit.CutAt(testkit.Half), 2: tc.act})
			url := srv.Start(t)
			_, err := readAll(t, testClient(), url, blobHex, 0, size)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if n := len(srv.Requests()); n != 2 {
				t.Fatalf("%d requests, want 2 (no retry of a permanent failure)", n)
			}
		})
	}

	t.Run("gives up after MaxAttempts without progress", func(t *testing.T) {
		down := func(w http.ResponseWriter, r *http.Request, _ []byte) { w.WriteHeader(http.StatusBadGateway) }
		srv := faults(dir, plan{1: down, 2: down, 3: down, 4: down})
		url := srv.Start(t)
		_, err := readAll(t, testClient(), url, blobHex, 0, size)
		if !errors.Is(err, ErrHTTP) || !strings.Contains(err.Error(), "gave up after 3 attempts") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("cancel stops a stalled read", func(t *testing.T) {
		srv := faults(dir, plan{1: testkit.StallAt})
		url := srv.Start(t)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		s, err := testClient().Open(ctx, url, BlobPath(blobHex), 0, size)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = io.Copy(io.Discard, s)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the context's error", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("cancel took %v", d)
		}
	})

	t.Run("close stops a stalled read", func(t *testing.T) {
		srv := faults(dir, plan{1: testkit.StallAt})
		url := srv.Start(t)
		s, err := testClient().Open(context.Background(), url, BlobPath(blobHex), 0, size)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(io.Discard, s)
		}()
		time.Sleep(100 * time.Millisecond)
		s.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end the read")
		}
	})

	t.Run("bad paths", func(t *testing.T) {
		for _, rel := range []string{"../etc/passwd", "blobs/../x", "/abs", "a//b", "blobs/sha256/%2e%2e"} {
			if _, err := testClient().Open(context.Background(), "http://127.0.0.1:1/", rel, 0, -1); !errors.Is(err, ErrBadURL) {
				t.Errorf("%q: %v", rel, err)
			}
		}
		for _, base := range []string{"ftp://x/", "file:///etc/", "http:///x"} {
			if _, err := testClient().Open(context.Background(), base, "index.yaml", 0, -1); !errors.Is(err, ErrBadURL) {
				t.Errorf("%q: %v", base, err)
			}
		}
	})
}

func TestGet(t *testing.T) {
	dir, _, _, idx := staticRepo(t, 1000)
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			url := srv.start(t, dir)
			got, err := testClient().Get(context.Background(), url, IndexFile, 1<<20)
			if err != nil || !bytes.Equal(got, idx) {
				t.Fatalf("got %q, %v", got, err)
			}
			if _, err := testClient().Get(context.Background(), url, SigFile, 1<<20); !errors.Is(err, ErrNotFound) {
				t.Fatalf("missing file: %v", err)
			}
			if _, err := testClient().Get(context.Background(), url, IndexFile, int64(len(idx)-1)); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("file over the limit: %v", err)
			}
		})
	}
	t.Run("content encoding", func(t *testing.T) {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(idx)
		}))
		defer hs.Close()
		if _, err := testClient().Get(context.Background(), hs.URL, IndexFile, 1<<20); !errors.Is(err, ErrProtocol) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestGetRetries: transient statuses are retried (honouring Retry-After),
// permanent ones are not.
func TestGetRetries(t *testing.T) {
	body := []byte("version: 1\nimages: {}\n")
	cases := []struct {
		name     string
		statuses []int // answered in turn; then 200
		attempts int   // requests expected
		wantErr  error
	}{
		{"503 then ok", []int{503, 503}, 3, nil},
		{"429 then ok", []int{429}, 2, nil},
		{"408 then ok", []int{408}, 2, nil},
		{"500 forever", []int{500, 500, 500, 500}, 3, ErrHTTP},
		{"404 is final", []int{404}, 1, ErrNotFound},
		{"403 is final", []int{403}, 1, ErrHTTP},
		{"501 is final", []int{501}, 1, ErrHTTP},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if ua := r.Header.Get("User-Agent"); ua != "canga/test" {
					t.Errorf("User-Agent %q", ua)
				}
				if cc := r.Header.Get("Cache-Control"); cc != "no-cache" {
					t.Errorf("Cache-Control %q: a proxy could answer with a stale index", cc)
				}
				n++
				if n <= len(tc.statuses) {
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(tc.statuses[n-1])
					return
				}
				w.Write(body)
			}))
			defer srv.Close()
			got, err := testClient().Get(context.Background(), srv.URL, IndexFile, 1<<20)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if n != tc.attempts {
				t.Fatalf("%d requests, want %d", n, tc.attempts)
			}
			if err == nil && !bytes.Equal(got, body) {
				t.Fatalf("got %q", got)
			}
		})
	}
	for _, u := range []string{"file:///etc/", "ftp://host/", "http://", "://x", "/just/a/path"} {
		if _, err := testClient().Get(context.Background(), u, IndexFile, 100); !errors.Is(err, ErrBadURL) {
			t.Errorf("%q: got %v, want ErrBadURL", u, err)
		}
	}
}

func TestReadRange(t *testing.T) {
	dir, blobHex, blob, _ := staticRepo(t, 2<<20+3)
	size := int64(len(blob))
	ranges := [][2]int64{{0, 1}, {0, 4096}, {1 << 20, 1 << 20}, {size - 3, 3}, {12345, 99999}}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			url := srv.start(t, dir)
			for _, rg := range ranges {
				p := make([]byte, rg[1])
				if err := testClient().ReadRange(context.Background(), url, BlobPath(blobHex), rg[0], p, size); err != nil {
					t.Fatalf("%v: %v", rg, err)
				}
				if !bytes.Equal(p, blob[rg[0]:rg[0]+rg[1]]) {
					t.Fatalf("%v: other bytes", rg)
				}
			}
			if err := testClient().ReadRange(context.Background(), url, BlobPath(blobHex), size-1, make([]byte, 2), size); err == nil {
				t.Fatal("a range past the end was read")
			}
		})
	}
	t.Run("cut, then resumed", func(t *testing.T) {
		srv := faults(dir, plan{1: testkit.CutAt(testkit.Half)})
		p := make([]byte, size)
		if err := testClient().ReadRange(context.Background(), srv.Start(t), BlobPath(blobHex), 0, p, size); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, blob) {
			t.Fatal("other bytes")
		}
	})
	t.Run("wrong Content-Range", func(t *testing.T) {
		srv := faults(dir, plan{1: func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-9/%d", len(data)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:10])
		}})
		if err := testClient().ReadRange(context.Background(), srv.Start(t), BlobPath(blobHex), 100, make([]byte, 10), size); !errors.Is(err, ErrProtocol) {
			t.Fatalf("got %v", err)
		}
	})
}
