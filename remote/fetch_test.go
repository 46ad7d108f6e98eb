package remote

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestGetIf: a file fetched once is answered 304 the next time, by our
// Handler (ETag) and by python's http.server (Last-Modified); a changed
// file comes whole with new validators.
func TestGetIf(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, IndexFile)
			writeFile(t, p, []byte("version: 1\n"))
			// Old enough for its Last-Modified to tell versions apart.
			hourAgo := time.Now().Add(-time.Hour)
			if err := os.Chtimes(p, hourAgo, hourAgo); err != nil {
				t.Fatal(err)
			}
			url := srv.start(t, dir)
			ctx := context.Background()
			c := testClient()
			f, err := c.GetIf(ctx, url, IndexFile, 1<<20, Validators{})
			if err != nil || f.NotModified || string(f.Data) != "version: 1\n" || f.Validators.Zero() {
				t.Fatalf("first GET: %+v, %v", f, err)
			}
			if srv.name == "python" && f.Validators.LastModified == "" {
				t.Fatalf("no Last-Modified kept: %+v", f.Validators)
			}
			again, err := c.GetIf(ctx, url, IndexFile, 1<<20, f.Validators)
			if err != nil || !again.NotModified || again.Data != nil || again.Validators != f.Validators {
				t.Fatalf("unchanged: %+v, %v", again, err)
			}
			// A new version, a second later on the clock of the file.
			writeFile(t, p, []byte("version: 1\nimages: {}\n"))
			later := hourAgo.Add(time.Minute)
			if err := os.Chtimes(p, later, later); err != nil {
				t.Fatal(err)
			}
			changed, err := c.GetIf(ctx, url, IndexFile, 1<<20, f.Validators)
			if err != nil || changed.NotModified || string(changed.Data) != "version: 1\nimages: {}\n" || changed.Validators == f.Validators {
				t.Fatalf("changed: %+v, %v", changed, err)
			}
		})
	}
}

// TestGetIfFresh: a Last-Modified within a second of the response is not
// kept, since a version replaced within that second would have the same:
// the next request is unconditional.
func TestGetIfFresh(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, IndexFile), []byte("version: 1\n"))
	now := time.Now().UTC().Format(http.TimeFormat)
	var conditional atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-Modified-Since") != "" || r.Header.Get("If-None-Match") != "" {
			conditional.Add(1)
		}
		w.Header().Set("Last-Modified", now)
		w.Header().Set("Date", now)
		w.Write([]byte("version: 1\n"))
	}))
	defer hs.Close()
	f, err := testClient().GetIf(context.Background(), hs.URL, IndexFile, 1<<20, Validators{})
	if err != nil || !f.Validators.Zero() {
		t.Fatalf("got %+v, %v", f, err)
	}
	// A server that answers 304 to a request without conditions is wrong.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotModified)
	}))
	defer bad.Close()
	if _, err := testClient().GetIf(context.Background(), bad.URL, IndexFile, 1<<20, Validators{}); err == nil {
		t.Fatal("a 304 without conditions is accepted")
	}
	// A server that ignores the conditions sends the file again.
	g, err := testClient().GetIf(context.Background(), hs.URL, IndexFile, 1<<20, Validators{ETag: `"x"`})
	if err != nil || g.NotModified || !bytes.Equal(g.Data, []byte("version: 1\n")) || conditional.Load() != 1 {
		t.Fatalf("got %+v, %v (%d conditional requests)", g, err, conditional.Load())
	}
}

// TestGetIfTo: the file goes to the sink, whole, once, even after an
// attempt cut short; not at all when it is not modified.
func TestGetIfTo(t *testing.T) {
	dir, _, _, idx := staticRepo(t, 1000)
	url := ourServer(t, dir)
	sink, err := os.Create(filepath.Join(t.TempDir(), "sink"))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	sink.WriteString("left over from before, longer than the index")
	ctx := context.Background()
	f, err := testClient().GetIfTo(ctx, url, IndexFile, 1<<20, Validators{}, sink)
	if err != nil || f.Data != nil || f.Size != int64(len(idx)) {
		t.Fatalf("got %+v, %v", f, err)
	}
	if got, _ := os.ReadFile(sink.Name()); !bytes.Equal(got, idx) {
		t.Fatalf("sink holds %q", got)
	}
	g, err := testClient().GetIfTo(ctx, url, IndexFile, 1<<20, f.Validators, sink)
	if err != nil || !g.NotModified {
		t.Fatalf("unchanged: %+v, %v", g, err)
	}
	if got, _ := os.ReadFile(sink.Name()); !bytes.Equal(got, idx) {
		t.Fatalf("a 304 changed the sink: %q", got)
	}
	if _, err := testClient().GetIfTo(ctx, url, IndexFile, int64(len(idx)-1), Validators{}, sink); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
}
