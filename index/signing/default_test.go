package signing

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// defaultKeyHome is a new $HOME with an empty ~/.ssh, and no agent.
func defaultKeyHome(t *testing.T) (home, sshDir string) {
	t.Helper()
	home = t.TempDir()
	sshDir = filepath.Join(home, ".ssh")
	if err := os.Mkdir(sshDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	return home, sshDir
}

// requireDefaultKey checks that DefaultKey chose the key whose public half
// is in pub, and that ssh-keygen accepts what it signs.
func requireDefaultKey(t *testing.T, pub string) *Key {
	t.Helper()
	k, err := DefaultKey()
	if err != nil {
		t.Fatalf("DefaultKey: %v", err)
	}
	if want := testkit.Fingerprint(t, pub); k.Fingerprint() != want {
		t.Fatalf("DefaultKey chose %s (file %q, comment %q), want %s of %s", k.Fingerprint(), k.File, k.Comment, want, pub)
	}
	sig, err := Sign(testMsg, k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	allowed := line("me@example.com", "", strings.TrimSpace(string(testkit.ReadFile(t, pub))))
	if out, ok := keygenVerify(t, allowed, "me@example.com", Namespace, sig, testMsg, time.Now()); !ok {
		t.Fatalf("ssh-keygen refuses the default key's signature:\n%s", out)
	}
	return k
}

func TestDefaultKeyFiles(t *testing.T) {
	_, sshDir := defaultKeyHome(t)

	_, err := DefaultKey()
	testkit.WantErr(t, err, []error{ErrNoDefaultKey}, "SSH_AUTH_SOCK is not set",
		filepath.Join(sshDir, "id_ed25519")+", id_ecdsa or id_rsa")

	// id_ecdsa before id_rsa, id_ed25519 before both.
	testkit.Keygen(t, sshDir, "id_rsa", "", rsaKey.args...)
	if k := requireDefaultKey(t, filepath.Join(sshDir, "id_rsa.pub")); k.File != filepath.Join(sshDir, "id_rsa") {
		t.Errorf("File = %q", k.File)
	}
	testkit.Keygen(t, sshDir, "id_ecdsa", "", ecdsaKey.args...)
	requireDefaultKey(t, filepath.Join(sshDir, "id_ecdsa.pub"))
	testkit.Keygen(t, sshDir, "id_ed25519", "", ed25519Key.args...)
	if k := requireDefaultKey(t, filepath.Join(sshDir, "id_ed25519.pub")); k.File != filepath.Join(sshDir, "id_ed25519") || k.Comment != "" {
		t.Errorf("key %+v, want the file id_ed25519", k)
	}

	// An agent that is not there counts as one without keys.
	t.Setenv("SSH_AUTH_SOCK", filepath.Join(t.TempDir(), "gone.sock"))
	requireDefaultKey(t, filepath.Join(sshDir, "id_ed25519.pub"))
}

// The first key file that exists is the choice: when it cannot sign, that
// is the error, not a silent fall back to the next one.
func TestDefaultKeyFirstFileUnusable(t *testing.T) {
	_, sshDir := defaultKeyHome(t)
	locked := testkit.Keygen(t, sshDir, "id_ed25519", "s3cret", ed25519Key.args...)
	testkit.Keygen(t, sshDir, "id_rsa", "", rsaKey.args...)
	k, err := DefaultKey()
	if k != nil {
		t.Errorf("DefaultKey chose %+v", k)
	}
	testkit.WantErr(t, err, []error{ErrEncryptedKey}, "ssh-add "+locked)
}

func TestDefaultKeyAgent(t *testing.T) {
	_, sshDir := defaultKeyHome(t)
	sock := startAgent(t)
	t.Setenv("SSH_AUTH_SOCK", sock)
	keys := t.TempDir()

	// An agent without keys: the files decide.
	idKey := testkit.Keygen(t, sshDir, "id_ecdsa", "", ecdsaKey.args...)
	requireDefaultKey(t, idKey+".pub")

	// Its only key wins over ~/.ssh, even when its file is gone.
	only := testkit.Keygen(t, keys, "agent-only", "", ed25519Key.args...)
	sshAdd(t, sock, only, "")
	if err := os.Remove(only); err != nil {
		t.Fatal(err)
	}
	if k := requireDefaultKey(t, only+".pub"); k.File != "" || k.Comment != "agent-only" {
		t.Errorf("key %+v, want the agent's, commented agent-only", k)
	}

	// Two keys: no guess; ~/.ssh decides.
	second := testkit.Keygen(t, keys, "agent-second", "", rsaKey.args...)
	sshAdd(t, sock, second, "")
	requireDefaultKey(t, idKey+".pub")

	// And without ~/.ssh keys, the error names the agent's keys.
	if err := os.Remove(idKey); err != nil {
		t.Fatal(err)
	}
	_, err := DefaultKey()
	testkit.WantErr(t, err, []error{ErrNoDefaultKey}, "ssh-agent holds 2 keys",
		"agent-only "+testkit.Fingerprint(t, only+".pub"), "agent-second "+testkit.Fingerprint(t, second+".pub"),
		filepath.Join(sshDir, "id_ed25519"))
	if errors.Is(err, ErrNoAgent) {
		t.Errorf("a reachable agent reported as none: %v", err)
	}
}
