package signing

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// startAgent runs a real ssh-agent on a socket in a temporary directory
// and stops it when the test ends.
func startAgent(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	var out bytes.Buffer
	testkit.Need(t, "ssh-agent")
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh-agent did not create %s:\n%s", sock, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sshAdd loads key into the agent at sock, answering a passphrase prompt
// through SSH_ASKPASS.
func sshAdd(t *testing.T, sock, key, passphrase string) {
	t.Helper()
	askpass := testkit.WriteFile(t, filepath.Join(t.TempDir(), "askpass"), []byte("#!/bin/sh\necho '"+passphrase+"'\n"), 0o700)
	testkit.Need(t, "ssh-add")
	cmd := exec.Command("ssh-add", key)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock, "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add %s: %v\n%s", key, err, out)
	}
}

func TestAgent(t *testing.T) {
	sock := startAgent(t)
	t.Setenv("SSH_AUTH_SOCK", sock)
	dir := t.TempDir()

	signAndCheck := func(t *testing.T, keyPath, pub string) {
		t.Helper()
		signer, err := LoadSigner(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := Sign(testMsg, signer)
		if err != nil {
			t.Fatal(err)
		}
		allowed := line("agent@example.com", "", pub)
		if out, ok := keygenVerify(t, allowed, "agent@example.com", Namespace, sig, testMsg, time.Now()); !ok {
			t.Fatalf("ssh-keygen refuses the agent's signature:\n%s", out)
		}
		parsed, err := sshsig.Unarmor(sig)
		if err != nil {
			t.Fatal(err)
		}
		if plainType(parsed.PublicKey) == ssh.KeyAlgoRSA && parsed.Signature.Format != ssh.KeyAlgoRSASHA512 {
			t.Errorf("agent RSA signature is %s, want %s", parsed.Signature.Format, ssh.KeyAlgoRSASHA512)
		}
	}

	for _, kt := range keyTypes {
		t.Run(kt.name+" via .pub", func(t *testing.T) {
			key := testkit.Keygen(t, dir, kt.name, "", kt.args...)
			sshAdd(t, sock, key, "")
			// Only the agent can sign now.
			if err := os.Remove(key); err != nil {
				t.Fatal(err)
			}
			signAndCheck(t, key+".pub", pubLine(t, key))
		})
	}

	t.Run("encrypted key held by agent", func(t *testing.T) {
		key := testkit.Keygen(t, dir, "locked", "s3cret pass", ed25519Key.args...)
		sshAdd(t, sock, key, "s3cret pass")
		signAndCheck(t, key, pubLine(t, key))
	})

	t.Run("certificate held by agent", func(t *testing.T) {
		ca := testkit.Keygen(t, dir, "agentca", "", ed25519Key.args...)
		key := testkit.Keygen(t, dir, "certified", "", ecdsaKey.args...)
		testkit.Run(t, "ssh-keygen", "-q", "-s", ca, "-I", "certified", "-n", "agent@example.com", key+".pub")
		sshAdd(t, sock, key, "") // adds key-cert.pub too
		if err := os.Remove(key); err != nil {
			t.Fatal(err)
		}
		signer, err := LoadSigner(key + "-cert.pub")
		if err != nil {
			t.Fatal(err)
		}
		sig, err := Sign(testMsg, signer)
		if err != nil {
			t.Fatal(err)
		}
		allowed := line("*@example.com", "cert-authority", pubLine(t, ca))
		if out, ok := keygenVerify(t, allowed, "agent@example.com", Namespace, sig, testMsg, time.Now()); !ok {
			t.Fatalf("ssh-keygen refuses the agent's certificate signature:\n%s", out)
		}
	})

	t.Run("key not in agent", func(t *testing.T) {
		key := testkit.Keygen(t, dir, "absent", "", ed25519Key.args...)
		if _, err := LoadSigner(key + ".pub"); !errors.Is(err, ErrNotInAgent) {
			t.Fatalf("LoadSigner: %v, want ErrNotInAgent", err)
		}
	})

	t.Run("agent stopped after loading", func(t *testing.T) {
		sock2 := startAgent(t)
		t.Setenv("SSH_AUTH_SOCK", sock2)
		key := testkit.Keygen(t, dir, "gone", "", ed25519Key.args...)
		sshAdd(t, sock2, key, "")
		signer, err := LoadSigner(key + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(sock2); err != nil {
			t.Fatal(err)
		}
		if _, err := Sign(testMsg, signer); !errors.Is(err, ErrNoAgent) {
			t.Fatalf("Sign: %v, want ErrNoAgent", err)
		}
	})
}

func TestLoadSignerErrors(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	dir := t.TempDir()
	encrypted := testkit.Keygen(t, dir, "encrypted", "pass", ed25519Key.args...)
	encryptedPEM := testkit.Keygen(t, dir, "encrypted-pem", "passphrase", "-t", "ecdsa", "-m", "PEM")
	plain := testkit.Keygen(t, dir, "plain", "", ed25519Key.args...)
	broken := testkit.ReadFile(t, plain)
	broken = append(broken[:len(broken)/2:len(broken)/2], "\n-----END OPENSSH PRIVATE KEY-----\n"...)
	orphanCert := filepath.Join(dir, "orphan-cert.pub")
	ca := testkit.Keygen(t, dir, "ca", "", ed25519Key.args...)
	testkit.Run(t, "ssh-keygen", "-q", "-s", ca, "-I", "x", "-n", "x", plain+".pub")
	testkit.WriteFile(t, orphanCert, testkit.ReadFile(t, plain+"-cert.pub"), 0o600)

	cases := []struct {
		name string
		path string
		want error
		text string // the error must say this
	}{
		{"encrypted OpenSSH key", encrypted, ErrEncryptedKey, "ssh-add " + encrypted},
		{"encrypted PEM key", encryptedPEM, ErrEncryptedKey, "ssh-agent"},
		{"public key without agent", plain + ".pub", ErrNoAgent, "SSH_AUTH_SOCK"},
		{"certificate without key or agent", orphanCert, ErrNoAgent, "orphan"},
		{"missing file", filepath.Join(dir, "nope"), fs.ErrNotExist, "nope"},
		{"empty file", testkit.WriteFile(t, filepath.Join(dir, "empty"), nil, 0o600), ErrBadKey, "empty"},
		{"garbage", testkit.WriteFile(t, filepath.Join(dir, "garbage"), []byte("hello world\n"), 0o600), ErrBadKey, "garbage"},
		{"broken private key", testkit.WriteFile(t, filepath.Join(dir, "broken"), broken, 0o600), ErrBadKey, "broken"},
		{"huge file", testkit.WriteFile(t, filepath.Join(dir, "huge"), bytes.Repeat([]byte("A"), maxKeyFileSize+1), 0o600), ErrBadKey, "larger"},
		{"directory", dir, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := LoadSigner(c.path)
			t.Logf("LoadSigner: %v", err)
			if err == nil || s != nil {
				t.Fatalf("LoadSigner = %v, %v; want an error", s, err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("error %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Errorf("error %q does not say %q", err, c.text)
			}
		})
	}

	t.Run("agent socket missing", func(t *testing.T) {
		t.Setenv("SSH_AUTH_SOCK", filepath.Join(dir, "no-agent.sock"))
		if _, err := LoadSigner(plain + ".pub"); !errors.Is(err, ErrNoAgent) {
			t.Fatalf("LoadSigner: %v, want ErrNoAgent", err)
		}
		if _, err := LoadSigner(encrypted); !errors.Is(err, ErrEncryptedKey) {
			t.Fatalf("LoadSigner: %v, want ErrEncryptedKey", err)
		}
	})
}
