package repo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cangallo/canga/config"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
	"github.com/cangallo/canga/internal/testkit"
	"github.com/opencontainers/go-digest"
)

// signHome is a canga home with config text, its repository name holding
// an index of one image, a $HOME whose ~/.ssh/id_ed25519 exists, and no
// ssh-agent. It returns the repository and that id_ed25519.
func signHome(t *testing.T, text, name string) (*Repo, string) {
	t.Helper()
	user := t.TempDir()
	t.Setenv("HOME", user)
	t.Setenv("SSH_AUTH_SOCK", "")
	ssh := filepath.Join(user, ".ssh")
	if err := os.Mkdir(ssh, 0o700); err != nil {
		t.Fatal(err)
	}
	idKey := testkit.Keygen(t, ssh, "id_ed25519", "", "-t", "ed25519")
	home := t.TempDir()
	writeFile(t, filepath.Join(home, config.FileName), []byte(text))
	h, err := OpenHome(home)
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.Repo(name)
	if err != nil {
		t.Fatal(err)
	}
	err = r.Update(context.Background(), func(ix *index.Index) error {
		return ix.Put(digest.FromString("image"), &index.Entry{Blob: digest.FromString("blob"), BlobSize: 1, VirtualSize: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, idKey
}

// requireSignedBy checks Sign's result, and that ssh-keygen accepts the
// signature as made by key.
func requireSignedBy(t *testing.T, r *Repo, s *Signature, key, name string, source KeySource) {
	t.Helper()
	if s.Key != name || s.KeySource != source {
		t.Errorf("signed with %q (source %d), want %q (source %d)", s.Key, s.KeySource, name, source)
	}
	if fp := testkit.Fingerprint(t, key+".pub"); s.Fingerprint != fp {
		t.Errorf("fingerprint %s, want %s of %s", s.Fingerprint, fp, key)
	}
	allowed := filepath.Join(t.TempDir(), "allowed")
	writeFile(t, allowed, []byte("me "+string(readFile(t, key+".pub"))))
	if out, ok := testkit.SSHVerify(t, allowed, "me", signing.Namespace, filepath.Join(r.Dir(), IndexFile), filepath.Join(r.Dir(), SigFile)); !ok {
		t.Errorf("ssh-keygen refuses the signature as %s's:\n%s", key, out)
	}
}

// Sign's key: the one given, else signing_key of config.yaml, else
// signing.DefaultKey's (here ~/.ssh/id_ed25519).
func TestSignKeyChoice(t *testing.T) {
	ctx := context.Background()
	keys := t.TempDir()
	given := testkit.Keygen(t, keys, "given", "", "-t", "ed25519")
	configured := testkit.Keygen(t, keys, "configured", "", "-t", "ecdsa", "-b", "256")

	r, _ := signHome(t, "signing_key: "+configured+"\nrepos: {default: {}}\n", "default")
	s, err := r.Sign(ctx, given)
	if err != nil {
		t.Fatal(err)
	}
	requireSignedBy(t, r, s, given, given, KeyGiven)
	s, err = r.Sign(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	requireSignedBy(t, r, s, configured, configured, KeyConfigured)

	r, idKey := signHome(t, "repos: {default: {}}\n", "default")
	s, err = r.Sign(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	requireSignedBy(t, r, s, idKey, idKey, KeyDefaultFile)

	// A configured key that cannot sign is an error that names the
	// setting, never a quiet fall back to another key.
	r, _ = signHome(t, "signing_key: nope\nrepos: {default: {}}\n", "default")
	before := readFile(t, filepath.Join(r.Dir(), IndexFile))
	_, err = r.Sign(ctx, "")
	testkit.WantErr(t, err, []error{os.ErrNotExist}, "signing_key of "+filepath.Join(r.h.Config.Home, config.FileName))
	if _, serr := os.Stat(filepath.Join(r.Dir(), SigFile)); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a failed sign wrote %s (%v)", SigFile, serr)
	}
	if after := readFile(t, filepath.Join(r.Dir(), IndexFile)); string(after) != string(before) {
		t.Error("a failed sign changed the index")
	}
}

// Verify's allowed_signers: the file given, else the repository's entry's,
// else the top-level one of config.yaml.
func TestVerifySignersChoice(t *testing.T) {
	dir := t.TempDir()
	key := testkit.Keygen(t, dir, "key", "", "-t", "ed25519")
	pub := string(readFile(t, key+".pub"))
	signers := func(principal string) string {
		f := filepath.Join(dir, principal+".allowed")
		writeFile(t, f, []byte(principal+" "+pub))
		return f
	}
	given, own, top := signers("given"), signers("own"), signers("top")
	text := "allowed_signers: " + top + "\nrepos:\n  default: {}\n  own: {allowed_signers: " + own + "}\n"

	for _, tc := range []struct {
		repo, file, want, wantFile string
	}{
		{"default", given, "given", given},
		{"default", "", "top", top},
		{"own", "", "own", own},
		{"own", given, "given", given},
	} {
		r, _ := signHome(t, text, tc.repo)
		if _, err := r.Sign(context.Background(), key); err != nil {
			t.Fatal(err)
		}
		s, err := r.Verify(tc.file)
		if err != nil {
			t.Fatalf("%s: Verify(%q): %v", tc.repo, tc.file, err)
		}
		if s.Principal != tc.want || s.AllowedSigners != tc.wantFile {
			t.Errorf("%s: Verify(%q): principal %q from %s, want %q from %s", tc.repo, tc.file, s.Principal, s.AllowedSigners, tc.want, tc.wantFile)
		}
	}

	r, _ := signHome(t, "repos: {default: {}}\n", "default")
	if _, err := r.Sign(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	_, err := r.Verify("")
	testkit.WantErr(t, err, []error{ErrNoSigners}, "repository default")
}
