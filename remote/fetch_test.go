package remote

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
)

func loadSigners(t testing.TB, path string) *signing.AllowedSigners {
	t.Helper()
	a, err := signing.LoadAllowedSigners(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestFetchByteExact(t *testing.T) {
	r := newRepo(t)
	base := r.add(nil, 0x11, 0)
	r.add(base, 0x22, 1<<20)
	want := r.writeIndex()
	k := newKeys(t, "alice@example.com")
	k.sign(t, r.dir)
	wantSig := readFile(t, filepath.Join(r.dir, SigFile))
	signers := loadSigners(t, k.allowed)

	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			url := srv.start(t, r.dir)
			c := testClient()
			ib, sig, err := c.FetchIndex(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ib, want) || !bytes.Equal(sig, wantSig) {
				t.Fatalf("fetched bytes differ from the served files")
			}
			store := newStore(t)
			f, changed, err := c.Fetch(context.Background(), store, url, signers)
			if err != nil {
				t.Fatal(err)
			}
			if !changed || !f.Signed || f.Principal != "alice@example.com" || !strings.HasPrefix(f.Fingerprint, "SHA256:") {
				t.Fatalf("fetch result: changed=%v signed=%v principal=%q fp=%q", changed, f.Signed, f.Principal, f.Fingerprint)
			}
			if len(f.Index.Images) != 2 {
				t.Fatalf("index has %d images", len(f.Index.Images))
			}
			if got := readFile(t, filepath.Join(store.Dir(), IndexFile)); !bytes.Equal(got, want) {
				t.Fatalf("cached index.yaml differs from the served one:\n%s", got)
			}
			if got := readFile(t, filepath.Join(store.Dir(), SigFile)); !bytes.Equal(got, wantSig) {
				t.Fatalf("cached index.yaml.sig differs from the served one")
			}
			// The cache verifies with ssh-keygen, as SPEC §6 promises.
			cmdVerify(t, k.allowed, "alice@example.com", store.Dir())

			// A second fetch of the same index changes nothing.
			if _, changed, err := c.Fetch(context.Background(), store, url, signers); err != nil || changed {
				t.Fatalf("refetch: changed=%v err=%v", changed, err)
			}
			// ReadIndex verifies the cache again.
			if rf, err := ReadIndex(store.Dir(), signers, time.Now()); err != nil || rf.Principal != "alice@example.com" {
				t.Fatalf("ReadIndex: %v", err)
			}
		})
	}
}

func cmdVerify(t testing.TB, allowed, principal, dir string) {
	t.Helper()
	ib, err := os.Open(filepath.Join(dir, IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	defer ib.Close()
	cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", principal, "-n", "canga-index", "-s", filepath.Join(dir, SigFile))
	cmd.Stdin = ib
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y verify of the cache: %v: %s", err, out)
	}
}

// TestFetchRefused: every way a fetch must fail, each leaving the cache
// as the previous good fetch left it.
func TestFetchRefused(t *testing.T) {
	r := newRepo(t)
	base := r.add(nil, 0x11, 0)
	good := r.writeIndex()
	alice := newKeys(t, "alice@example.com")
	mallory := newKeys(t, "mallory@example.com")
	alice.sign(t, r.dir)
	goodSig := readFile(t, filepath.Join(r.dir, SigFile))
	signers := loadSigners(t, alice.allowed)

	cases := []struct {
		name    string
		signers *signing.AllowedSigners
		// serve prepares the served directory from a copy of the good one.
		serve func(t *testing.T, dir string)
		want  error
	}{
		{"tampered after signing", signers, func(t *testing.T, dir string) {
			b := bytes.Replace(good, []byte("test image"), []byte("evil image"), 1)
			writeFile(t, filepath.Join(dir, IndexFile), b)
		}, signing.ErrBadSignature},
		{"signer not allowed", signers, func(t *testing.T, dir string) {
			mallory.sign(t, dir)
		}, signing.ErrUnknownKey},
		{"signature missing", signers, func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, SigFile))
		}, signing.ErrNoSignature},
		{"signature empty", signers, func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, SigFile), nil)
		}, signing.ErrNoSignature},
		{"signature garbage", signers, func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, SigFile), []byte("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"))
		}, signing.ErrBadSignature},
		{"signature too big", signers, func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, SigFile), bytes.Repeat([]byte("A"), signing.MaxSignatureSize+1))
		}, ErrTooLarge},
		{"index too big", nil, func(t *testing.T, dir string) {
			// Sparse: the server still sends 64 MiB + 1 of zeros, or
			// says so in Content-Length.
			f, err := os.Create(filepath.Join(dir, IndexFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(index.MaxIndexSize + 1); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}, ErrTooLarge},
		{"index missing", nil, func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, IndexFile))
		}, ErrNotFound},
		{"malformed digest", nil, func(t *testing.T, dir string) {
			b := bytes.Replace(good, []byte(base.blob), []byte("sha256:../../../etc/passwd"), 1)
			writeFile(t, filepath.Join(dir, IndexFile), b)
		}, index.ErrInvalidID},
		{"path-like image key, signed", signers, func(t *testing.T, dir string) {
			b := bytes.Replace(good, []byte(base.id), []byte("sha256:/etc/shadow"), 1)
			writeFile(t, filepath.Join(dir, IndexFile), b)
			alice.sign(t, dir)
		}, index.ErrInvalid},
		{"not yaml", nil, func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, IndexFile), []byte("<html>not found</html>\n"))
		}, index.ErrInvalid},
		{"unsupported version", nil, func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, IndexFile), []byte("version: 7\nimages: {}\n"))
		}, index.ErrUnsupportedVersion},
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					dir := t.TempDir()
					writeFile(t, filepath.Join(dir, IndexFile), good)
					writeFile(t, filepath.Join(dir, SigFile), goodSig)
					url := srv.start(t, dir)
					store := newStore(t)
					c := testClient()
					if _, _, err := c.Fetch(context.Background(), store, url, signers); err != nil {
						t.Fatalf("first, good fetch: %v", err)
					}
					tc.serve(t, dir)
					_, _, err := c.Fetch(context.Background(), store, url, tc.signers)
					if !errors.Is(err, tc.want) {
						t.Fatalf("fetch: got %v, want %v", err, tc.want)
					}
					if got := readFile(t, filepath.Join(store.Dir(), IndexFile)); !bytes.Equal(got, good) {
						t.Fatal("the previous index was not kept")
					}
					if got := readFile(t, filepath.Join(store.Dir(), SigFile)); !bytes.Equal(got, goodSig) {
						t.Fatal("the previous signature was not kept")
					}
				})
			}
		})
	}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	os.Remove(path)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFetchUnsigned: without allowed signers an unsigned index is fine, and
// a signature the remote dropped is dropped from the cache too, so that a
// stale one never sits beside a new index.
func TestFetchUnsigned(t *testing.T) {
	r := newRepo(t)
	r.add(nil, 0x11, 0)
	r.writeIndex()
	k := newKeys(t, "alice@example.com")
	k.sign(t, r.dir)
	url := ourServer(t, r.dir)
	store := newStore(t)
	c := testClient()
	f, _, err := c.Fetch(context.Background(), store, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Signed || !f.HasSignature || f.Fingerprint == "" {
		t.Fatalf("signed=%v has=%v fp=%q: a signature without allowed signers is kept but not trusted", f.Signed, f.HasSignature, f.Fingerprint)
	}
	if _, err := os.Stat(filepath.Join(store.Dir(), SigFile)); err != nil {
		t.Fatalf("signature not kept: %v", err)
	}
	// The remote publishes a new index without signature.
	r.add(nil, 0x33, 0)
	newIndex := r.writeIndex()
	os.Remove(filepath.Join(r.dir, SigFile))
	f, changed, err := c.Fetch(context.Background(), store, url, nil)
	if err != nil || !changed || f.HasSignature {
		t.Fatalf("changed=%v has=%v err=%v", changed, f.HasSignature, err)
	}
	if _, err := os.Stat(filepath.Join(store.Dir(), SigFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale signature left in the cache: %v", err)
	}
	if got := readFile(t, filepath.Join(store.Dir(), IndexFile)); !bytes.Equal(got, newIndex) {
		t.Fatal("new index not stored")
	}
	// With allowed signers configured later, the unsigned cache is refused
	// on read.
	if _, err := ReadIndex(store.Dir(), loadSigners(t, k.allowed), time.Now()); !errors.Is(err, signing.ErrNoSignature) {
		t.Fatalf("ReadIndex of an unsigned cache with signers: %v", err)
	}
}

// TestReadIndexMismatchedPair: a crash between the two writes of SaveIndex
// leaves the old index with the new signature; ReadIndex refuses it.
func TestReadIndexMismatchedPair(t *testing.T) {
	r := newRepo(t)
	r.add(nil, 0x11, 0)
	old := r.writeIndex()
	k := newKeys(t, "alice@example.com")
	r.add(nil, 0x44, 0)
	r.writeIndex()
	k.sign(t, r.dir)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, IndexFile), old)
	writeFile(t, filepath.Join(dir, SigFile), readFile(t, filepath.Join(r.dir, SigFile)))
	if _, err := ReadIndex(dir, loadSigners(t, k.allowed), time.Now()); !errors.Is(err, signing.ErrBadSignature) {
		t.Fatalf("got %v, want ErrBadSignature", err)
	}
	if _, err := ReadIndex(dir, nil, time.Now()); err != nil {
		t.Fatalf("without signers: %v", err)
	}
	if _, err := ReadIndex(t.TempDir(), nil, time.Now()); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("empty cache: %v", err)
	}
}

// TestFetchRetries: transient statuses are retried (honouring Retry-After),
// permanent ones are not.
func TestFetchRetries(t *testing.T) {
	body := []byte("version: 1\nimages: {}\n")
	cases := []struct {
		name     string
		statuses []int // answered in turn; then 200
		attempts int   // requests for index.yaml expected
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
				if r.URL.Path == "/"+SigFile {
					http.NotFound(w, r)
					return
				}
				if ua := r.Header.Get("User-Agent"); ua != "canga/test" {
					t.Errorf("User-Agent %q", ua)
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
			ib, sig, err := testClient().FetchIndex(context.Background(), srv.URL)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if n != tc.attempts {
				t.Fatalf("%d requests, want %d", n, tc.attempts)
			}
			if err == nil && (!bytes.Equal(ib, body) || sig != nil) {
				t.Fatalf("index %q sig %q", ib, sig)
			}
		})
	}
}

func TestFetchBadURL(t *testing.T) {
	for _, u := range []string{"file:///etc/", "ftp://host/", "http://", "://x", "/just/a/path"} {
		if _, _, err := testClient().FetchIndex(context.Background(), u); !errors.Is(err, ErrBadURL) {
			t.Errorf("%q: got %v, want ErrBadURL", u, err)
		}
	}
}

// TestFetchContentEncoding: a server that compresses what it sends would
// change the bytes that were signed; say so instead of failing obscurely.
func TestFetchContentEncoding(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Write([]byte("not really gzip"))
	}))
	defer srv.Close()
	if _, _, err := testClient().FetchIndex(context.Background(), srv.URL+"/"); !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", err)
	}
}
