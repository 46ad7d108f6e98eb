package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cangallo/canga/index/signing"
)

// recorder is a proxy in front of a static server that notes every
// request: path, whether it was conditional, and the status answered.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (rec *recorder) start(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		cond := ""
		if resp.Request.Header.Get("If-None-Match") != "" || resp.Request.Header.Get("If-Modified-Since") != "" {
			cond = " if"
		}
		rec.mu.Lock()
		rec.log = append(rec.log, fmt.Sprintf("%s%s %d", resp.Request.URL.Path, cond, resp.StatusCode))
		rec.mu.Unlock()
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// take returns the requests since the last take.
func (rec *recorder) take() string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	s := strings.Join(rec.log, ", ")
	rec.log = nil
	return s
}

// publish replaces a file of the served directory by rename, as canga
// does, with a modification time of at, in the past: a Last-Modified a
// second old or more is one python's server can answer 304 to.
func publish(t *testing.T, path string, data []byte, at time.Time) {
	t.Helper()
	tmp := path + ".new"
	writeFile(t, tmp, data)
	if err := os.Chtimes(tmp, at, at); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestFetchConditional: a fetch of an unchanged index is one request
// answered 304, by canga serve (ETag) and by python's http.server
// (Last-Modified); a remote that requires a signature has its signature
// asked for too, and index and signature stay a verified pair whichever of
// them changed.
func TestFetchConditional(t *testing.T) {
	src := newSrcRepo(t)
	src.add(nil, 0x11, 0)
	first := src.writeIndex()
	alice := newKeys(t, "alice@example.com")
	bob := newKeys(t, "bob@example.com")
	both := filepath.Join(t.TempDir(), "allowed_signers")
	writeFile(t, both, append(readFile(t, alice.allowed), readFile(t, bob.allowed)...))
	alice.sign(t, src.dir)
	firstSig := readFile(t, filepath.Join(src.dir, SigFile))
	src.add(nil, 0x22, 0)
	second := src.writeIndex() // in src.dir now; served copies get it below
	hourAgo := time.Now().Add(-time.Hour)

	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			for _, signed := range []bool{false, true} {
				t.Run(fmt.Sprintf("signed=%v", signed), func(t *testing.T) {
					dir := t.TempDir()
					idx, sigPath := filepath.Join(dir, IndexFile), filepath.Join(dir, SigFile)
					publish(t, idx, first, hourAgo)
					publish(t, sigPath, firstSig, hourAgo)
					rec := &recorder{}
					allowed := ""
					if signed {
						allowed = both
					}
					r := remoteRepo(t, rec.start(t, srv.start(t, dir)), allowed)
					ctx := context.Background()
					fetch := func(want string) *Fetched {
						t.Helper()
						f, err := r.Fetch(ctx)
						if err != nil {
							t.Fatalf("fetch: %v", err)
						}
						if got := rec.take(); got != want {
							t.Fatalf("requests: %s, want %s", got, want)
						}
						return f
					}
					f := fetch("/index.yaml 200, /index.yaml.sig 200")
					if !f.Changed || f.Index == nil {
						t.Fatalf("first fetch: %+v", f)
					}

					// Unchanged: 304, nothing read or written.
					want := "/index.yaml if 304"
					if signed {
						want += ", /index.yaml.sig if 304"
					}
					f = fetch(want)
					if !f.NotModified || f.Changed || f.Index != nil || f.Signed != signed {
						t.Fatalf("unchanged: %+v", f)
					}

					// A new index, signed: fetched whole and verified.
					publish(t, idx, second, hourAgo.Add(time.Minute))
					alice.sign(t, dir)
					newSig := readFile(t, sigPath)
					publish(t, sigPath, newSig, hourAgo.Add(time.Minute))
					f = fetch("/index.yaml if 200, /index.yaml.sig if 200")
					if !f.Changed || f.NotModified || len(f.Index.Images) != 2 {
						t.Fatalf("changed: %+v", f)
					}
					if !bytes.Equal(readFile(t, filepath.Join(r.Dir(), IndexFile)), second) || !bytes.Equal(readFile(t, filepath.Join(r.Dir(), SigFile)), newSig) {
						t.Fatal("the cache is not the new pair")
					}
					fetch(want)

					// Signed again, by bob: a new signature of the same index.
					bob.sign(t, dir)
					bobSig := readFile(t, sigPath)
					publish(t, sigPath, bobSig, hourAgo.Add(2*time.Minute))
					if signed {
						f = fetch("/index.yaml if 304, /index.yaml.sig if 200")
						if !f.NotModified || !f.Changed || f.Principal != "bob@example.com" {
							t.Fatalf("new signature: %+v", f)
						}
						if !bytes.Equal(readFile(t, filepath.Join(r.Dir(), SigFile)), bobSig) {
							t.Fatal("the new signature is not kept")
						}
						sshVerify(t, both, "bob@example.com", r.Dir())
					} else {
						fetch("/index.yaml if 304") // nobody checks the signature
					}

					// A new index under the cached signature: refused, the
					// previous pair kept.
					publish(t, idx, first, hourAgo.Add(3*time.Minute))
					if signed {
						_, err := r.Fetch(ctx)
						if !errors.Is(err, signing.ErrBadSignature) {
							t.Fatalf("a new index under the old signature: %v", err)
						}
						rec.take()
						if !bytes.Equal(readFile(t, filepath.Join(r.Dir(), IndexFile)), second) {
							t.Fatal("the previous index was not kept")
						}
					} else {
						// bob's signature, which the cache did not need
						// until now, comes with the index.
						fetch("/index.yaml if 200, /index.yaml.sig if 200")
					}

					// A cache changed behind canga's back (or a crash between
					// the writes): the next request is unconditional.
					writeFile(t, filepath.Join(r.Dir(), IndexFile), []byte("version: 1\nimages: {}\ntags: {}\n"))
					want = "/index.yaml 200, /index.yaml.sig if 304"
					if signed {
						alice.sign(t, dir)
						publish(t, sigPath, readFile(t, sigPath), hourAgo.Add(4*time.Minute))
						want = "/index.yaml 200, /index.yaml.sig if 200"
					}
					f = fetch(want)
					if !f.Changed || !bytes.Equal(readFile(t, filepath.Join(r.Dir(), IndexFile)), first) {
						t.Fatalf("repair: %+v", f)
					}
				})
			}
		})
	}
}
