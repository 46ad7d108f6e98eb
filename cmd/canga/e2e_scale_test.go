package main_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/scalerepo"
	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/remote"
)

// TestScale: a repository of 100,000 images (bench/scale.sh's: chains of 1
// to 20, every fifth image tagged, real qcow2 blobs) and, once each, every
// command of the table of issue 11, checked for what it does and for its
// memory; their times are measured by make bench (bench/scale.sh), not
// here.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 100,000 blobs")
	}
	t.Parallel()
	const images = 100_000
	dir := t.TempDir()
	pub := filepath.Join(dir, "pub")
	gen, err := scalerepo.Generate(pub, scalerepo.Options{Images: images})
	if err != nil {
		t.Fatal(err)
	}
	if gen.Images != images || gen.Tags != images/5 || len(gen.DeepestChain) != 20 {
		t.Fatalf("generated %+v", gen)
	}

	// The same directory served as a remote, by canga serve's handler,
	// every request noted.
	var mu sync.Mutex
	var requests []string
	handler := remote.Handler(pub)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &statusWriter{ResponseWriter: w, status: 200}
		handler.ServeHTTP(rw, r)
		cond := ""
		if r.Header.Get("If-None-Match") != "" {
			cond = " if"
		}
		mu.Lock()
		requests = append(requests, fmt.Sprintf("%s%s %d", r.URL.Path, cond, rw.status))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	took := func() []string {
		mu.Lock()
		defer mu.Unlock()
		r := requests
		requests = nil
		return r
	}
	home := t.TempDir()
	cache := filepath.Join(dir, "cache")
	remWriteConfig(t, home, pub, "  far:", "    url: "+srv.URL+"/", "    path: "+cache)

	// run is ok() under /usr/bin/time: every command stays within the
	// 128 MiB of the issue.
	run := func(args ...string) string {
		t.Helper()
		r := cangaMeasured(t, home, dir, 2*time.Minute, args...)
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		t.Logf("canga %s: %v, max RSS %d MiB", strings.Join(args, " "), r.elapsed.Round(time.Millisecond), r.maxRSS>>10)
		if r.maxRSS >= 128<<10 {
			t.Errorf("canga %v: max RSS %d KiB, want < 128 MiB", args, r.maxRSS)
		}
		return r.stdout
	}

	// fetch, then fetch of the unchanged index: one request, 304.
	if out := run("fetch", "far"); out != fmt.Sprintf("far: %d images, %d tags, not signed\n", images, images/5) {
		t.Errorf("fetch printed %q", out)
	}
	if got := strings.Join(took(), ", "); got != "/index.yaml 200, /index.yaml.sig 404" {
		t.Errorf("first fetch: %s", got)
	}
	if out := run("fetch", "far"); !strings.Contains(out, "not modified") {
		t.Errorf("second fetch printed %q", out)
	}
	if got := strings.Join(took(), ", "); got != "/index.yaml if 304" {
		t.Errorf("fetch of an unchanged index: %s", got)
	}

	// pull of the deepest chain from the remote: its 20 blobs, no index.
	run("pull", "far:"+string(gen.Deepest))
	got := took()
	if len(got) != 20 || strings.Contains(strings.Join(got, ","), "index") {
		t.Errorf("pull of a chain of 20 asked for %v", got)
	}
	if n := len(dirNames(t, filepath.Join(cache, "blobs", "sha256"))); n != 20 {
		t.Errorf("the cache holds %d blobs after the pull", n)
	}

	// list and list --json.
	lines := strings.Split(strings.TrimSuffix(run("list", "default"), "\n"), "\n")
	if len(lines) != images+1 || !strings.HasPrefix(lines[0], "  NAME") {
		t.Errorf("list: %d lines, starting %q", len(lines), lines[0])
	}
	if want := "default:" + gen.Tag; !strings.Contains(strings.Join(lines, "\n"), want) {
		t.Errorf("list does not show %s", want)
	}
	var doc struct {
		Images []struct {
			ID      string   `json:"id"`
			Tags    []string `json:"tags"`
			Present bool     `json:"present"`
			Parent  string   `json:"parent"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(run("list", "--json", "default")), &doc); err != nil {
		t.Fatal(err)
	}
	items := doc.Images
	tagged, present, derived := 0, 0, 0
	for _, it := range items {
		tagged += len(it.Tags)
		if it.Present {
			present++
		}
		if it.Parent != "" {
			derived++
		}
	}
	if len(items) != images || tagged != images/5 || present != images || derived == 0 {
		t.Errorf("list --json: %d items, %d tags, %d present, %d derived", len(items), tagged, present, derived)
	}

	// show, and names resolved by tag and by prefix.
	var shown struct {
		ID    string   `json:"id"`
		Chain []string `json:"chain"`
	}
	if err := json.Unmarshal([]byte(run("show", "--json", string(gen.Deepest)[7:19])), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.ID != string(gen.Deepest) || len(shown.Chain) != 20 {
		t.Errorf("show by prefix: %s, chain of %d", shown.ID, len(shown.Chain))
	}
	if out := run("show", gen.Tag); !strings.Contains(out, string(gen.TagTarget)) {
		t.Errorf("show by tag:\n%s", out)
	}

	// add of a 1 MiB image, tag, deltag, del.
	raw := filepath.Join(dir, "one.raw")
	data := make([]byte, 1<<20)
	copy(data[4096:], "one mebibyte of a new image")
	testkit.WriteFile(t, raw, data, 0o644)
	sum := sha256.Sum256(data)
	id := "sha256:" + hex.EncodeToString(sum[:])
	if out := run("add", raw, "--tag", "new:1"); out != id+"\n" {
		t.Errorf("add printed %q, want %s", out, id)
	}
	run("tag", "moved", gen.Tag)
	if out := run("show", "moved"); !strings.Contains(out, string(gen.TagTarget)) {
		t.Errorf("show of a new tag:\n%s", out)
	}
	run("deltag", "moved")
	fails(t, home, "show", "moved")
	run("del", string(gen.Leaf))
	fails(t, home, "show", "default:"+string(gen.Leaf)) // the remote's cache still has it

	// gc, with a blob no image uses and a temp file of a dead process.
	orphan := []byte("a blob no image uses")
	osum := sha256.Sum256(orphan)
	testkit.WriteFile(t, filepath.Join(pub, "blobs", "sha256", hex.EncodeToString(osum[:])), orphan, 0o444)
	testkit.WriteFile(t, filepath.Join(pub, ".tmp", "add-dead.qcow2"), []byte("x"), 0o644)
	if out := run("gc"); !strings.HasPrefix(out, "removed 1 blobs and 1 temporary files") {
		t.Errorf("gc printed %q", out)
	}
	// fsck without the blob hashing: every image, every blob, no fault.
	// One blob more than images: the chunk list of the image added above
	// (the generated ones have none).
	if out := run("fsck", "--quick"); out != fmt.Sprintf("%d images, %d blobs (quick: blob digests, image IDs and qcow2 metadata not checked), 0 faults\n", images, images+1) {
		t.Errorf("fsck --quick printed %q", out)
	}
	// And faults it finds without reading blobs: a blob gone, one made
	// writable.
	if err := os.Remove(filepath.Join(pub, "blobs", "sha256", gen.TagTarget.Encoded())); err == nil {
		t.Fatal("the tag's image has its blob under its ID: the fixture is wrong")
	}
	chain := gen.DeepestChain
	blobOf := func(id string) string {
		var e struct {
			Blob string `json:"blob"`
		}
		if err := json.Unmarshal([]byte(run("show", "--json", id)), &e); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(pub, "blobs", "sha256", strings.TrimPrefix(e.Blob, "sha256:"))
	}
	gone, writable := blobOf(string(chain[0])), blobOf(string(chain[1]))
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(writable, 0o644); err != nil {
		t.Fatal(err)
	}
	r := fails(t, home, "fsck", "--quick")
	if !strings.Contains(r.stdout, "is missing") || !strings.Contains(r.stdout, "is writable") || !strings.Contains(r.stdout, ", 2 faults") {
		t.Errorf("fsck --quick of a damaged repository:\n%s", r.stdout)
	}
}

// statusWriter notes the status a handler answers.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
