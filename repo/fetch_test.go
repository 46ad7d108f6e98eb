package repo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/config"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
	"github.com/cangallo/canga/remote"
)

// remoteRepo is the cache of the remote at url, never fetched, requiring
// signatures by the keys of allowed when it is not empty.
func remoteRepo(t testing.TB, url, allowed string) *Repo {
	t.Helper()
	r, err := Open(config.Repo{Name: "remote", Path: filepath.Join(t.TempDir(), "cache"), URL: url, AllowedSigners: allowed})
	if err != nil {
		t.Fatal(err)
	}
	r.h = &Home{HTTP: testClient()}
	return r
}

func TestFetchByteExact(t *testing.T) {
	src := newSrcRepo(t)
	base := src.add(nil, 0x11, 0)
	src.add(base, 0x22, 1<<20)
	want := src.writeIndex()
	k := newKeys(t, "alice@example.com")
	k.sign(t, src.dir)
	wantSig := readFile(t, filepath.Join(src.dir, SigFile))

	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			r := remoteRepo(t, srv.start(t, src.dir), k.allowed)
			f, err := r.Fetch(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !f.Changed || !f.Signed || f.Principal != "alice@example.com" || !strings.HasPrefix(f.Fingerprint, "SHA256:") {
				t.Fatalf("fetch result: %+v", f)
			}
			if len(f.Index.Images) != 2 {
				t.Fatalf("index has %d images", len(f.Index.Images))
			}
			if got := readFile(t, filepath.Join(r.Dir(), IndexFile)); !bytes.Equal(got, want) {
				t.Fatalf("cached index.yaml differs from the served one:\n%s", got)
			}
			if got := readFile(t, filepath.Join(r.Dir(), SigFile)); !bytes.Equal(got, wantSig) {
				t.Fatalf("cached index.yaml.sig differs from the served one")
			}
			// The cache verifies with ssh-keygen, as SPEC §6 promises.
			sshVerify(t, k.allowed, "alice@example.com", r.Dir())
			// A second fetch of the same index changes nothing.
			if f, err := r.Fetch(context.Background()); err != nil || f.Changed {
				t.Fatalf("refetch: %+v %v", f, err)
			}
			// Reading the cache verifies it again.
			if ix, err := r.Index(); err != nil || len(ix.Images) != 2 {
				t.Fatalf("Index: %v", err)
			}
		})
	}
}

func sshVerify(t testing.TB, allowed, principal, dir string) {
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
	src := newSrcRepo(t)
	base := src.add(nil, 0x11, 0)
	good := src.writeIndex()
	alice := newKeys(t, "alice@example.com")
	mallory := newKeys(t, "mallory@example.com")
	alice.sign(t, src.dir)
	goodSig := readFile(t, filepath.Join(src.dir, SigFile))

	cases := []struct {
		name   string
		signed bool // the cache requires alice's signature
		// serve prepares the served directory from a copy of the good one.
		serve func(t *testing.T, dir string)
		want  error
	}{
		{"tampered after signing", true, func(t *testing.T, dir string) {
			b := bytes.Replace(good, []byte("test image"), []byte("evil image"), 1)
			writeFile(t, filepath.Join(dir, IndexFile), b)
		}, signing.ErrBadSignature},
		{"signer not allowed", true, func(t *testing.T, dir string) {
			mallory.sign(t, dir)
		}, signing.ErrUnknownKey},
		{"signature missing", true, func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, SigFile))
		}, signing.ErrNoSignature},
		{"signature empty", true, func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, SigFile), nil)
		}, signing.ErrNoSignature},
		{"signature garbage", true, func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, SigFile), []byte("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"))
		}, signing.ErrBadSignature},
		{"signature too big", true, func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, SigFile), bytes.Repeat([]byte("A"), signing.MaxSignatureSize+1))
		}, remote.ErrTooLarge},
		{"index too big", false, func(t *testing.T, dir string) {
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
		}, remote.ErrTooLarge},
		{"index missing", false, func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, IndexFile))
		}, remote.ErrNotFound},
		{"malformed digest", false, func(t *testing.T, dir string) {
			b := bytes.Replace(good, []byte(base.blob), []byte("sha256:../../../etc/passwd"), 1)
			writeFile(t, filepath.Join(dir, IndexFile), b)
		}, index.ErrInvalidID},
		{"path-like image key, signed", true, func(t *testing.T, dir string) {
			b := bytes.Replace(good, []byte(base.id), []byte("sha256:/etc/shadow"), 1)
			writeFile(t, filepath.Join(dir, IndexFile), b)
			alice.sign(t, dir)
		}, index.ErrInvalid},
		{"not yaml", false, func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, IndexFile), []byte("<html>not found</html>\n"))
		}, index.ErrInvalid},
		{"unsupported version", false, func(t *testing.T, dir string) {
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
					allowed := ""
					if tc.signed {
						allowed = alice.allowed
					}
					r := remoteRepo(t, url, allowed)
					if _, err := r.Fetch(context.Background()); err != nil {
						t.Fatalf("first, good fetch: %v", err)
					}
					tc.serve(t, dir)
					_, err := r.Fetch(context.Background())
					if !errors.Is(err, tc.want) {
						t.Fatalf("fetch: got %v, want %v", err, tc.want)
					}
					if got := readFile(t, filepath.Join(r.Dir(), IndexFile)); !bytes.Equal(got, good) {
						t.Fatal("the previous index was not kept")
					}
					if got := readFile(t, filepath.Join(r.Dir(), SigFile)); !bytes.Equal(got, goodSig) {
						t.Fatal("the previous signature was not kept")
					}
				})
			}
		})
	}
}

// TestFetchUnsigned: without allowed signers an unsigned index is fine,
// and a signature the remote dropped is dropped from the cache too, so
// that a stale one never sits beside a new index.
func TestFetchUnsigned(t *testing.T) {
	src := newSrcRepo(t)
	src.add(nil, 0x11, 0)
	src.writeIndex()
	k := newKeys(t, "alice@example.com")
	k.sign(t, src.dir)
	url := ourServer(t, src.dir)
	r := remoteRepo(t, url, "")
	f, err := r.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f.Signed || !f.HasSignature || f.Fingerprint == "" {
		t.Fatalf("%+v: a signature without allowed signers is kept but not trusted", f)
	}
	if _, err := os.Stat(filepath.Join(r.Dir(), SigFile)); err != nil {
		t.Fatalf("signature not kept: %v", err)
	}
	// The remote publishes a new index without signature.
	src.add(nil, 0x33, 0)
	newIndex := src.writeIndex()
	os.Remove(filepath.Join(src.dir, SigFile))
	f, err = r.Fetch(context.Background())
	if err != nil || !f.Changed || f.HasSignature {
		t.Fatalf("%+v, %v", f, err)
	}
	if _, err := os.Stat(filepath.Join(r.Dir(), SigFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale signature left in the cache: %v", err)
	}
	if got := readFile(t, filepath.Join(r.Dir(), IndexFile)); !bytes.Equal(got, newIndex) {
		t.Fatal("new index not stored")
	}
	// With allowed signers configured later, the unsigned cache is refused
	// on read.
	signed := remoteRepo(t, url, k.allowed)
	signed.conf.Path = r.Dir()
	signed.store = r.store
	if _, err := signed.Index(); !errors.Is(err, signing.ErrNoSignature) {
		t.Fatalf("Index of an unsigned cache with signers: %v", err)
	}
}

// TestCachedIndexMismatchedPair: a crash between the two writes of
// saveIndex leaves the old index with the new signature; reading the
// cache refuses it.
func TestCachedIndexMismatchedPair(t *testing.T) {
	src := newSrcRepo(t)
	src.add(nil, 0x11, 0)
	old := src.writeIndex()
	k := newKeys(t, "alice@example.com")
	src.add(nil, 0x44, 0)
	src.writeIndex()
	k.sign(t, src.dir)
	r := remoteRepo(t, "http://unused.invalid/", k.allowed)
	writeFile(t, filepath.Join(r.Dir(), IndexFile), old)
	writeFile(t, filepath.Join(r.Dir(), SigFile), readFile(t, filepath.Join(src.dir, SigFile)))
	if _, err := r.Index(); !errors.Is(err, signing.ErrBadSignature) {
		t.Fatalf("got %v, want ErrBadSignature", err)
	}
	r.conf.AllowedSigners = ""
	if _, err := r.Index(); err != nil {
		t.Fatalf("without signers: %v", err)
	}
	empty := remoteRepo(t, "http://unused.invalid/", "")
	if ix, err := empty.Index(); err != nil || len(ix.Images) != 0 {
		t.Fatalf("a cache never fetched: %v %v", ix, err)
	}
	if _, err := empty.cachedIndex(); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("a cache never fetched: %v", err)
	}
}
