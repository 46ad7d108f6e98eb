package testkit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The OpenSSH tools are the oracle of signing: what canga signs,
// ssh-keygen must accept, and the reverse.

// Keygen makes an SSH key pair DIR/NAME and DIR/NAME.pub with ssh-keygen,
// commented NAME and protected by passphrase ("" for none); args choose the
// key ("-t", "ed25519"). It returns the private key's path.
func Keygen(t testing.TB, dir, name, passphrase string, args ...string) string {
	t.Helper()
	key := filepath.Join(dir, name)
	Run(t, "ssh-keygen", append([]string{"-q", "-N", passphrase, "-C", name, "-f", key}, args...)...)
	return key
}

// Fingerprint is ssh-keygen -l's SHA256 fingerprint ("SHA256:...") of a
// public key file.
func Fingerprint(t testing.TB, pub string) string {
	t.Helper()
	f := strings.Fields(Run(t, "ssh-keygen", "-l", "-E", "sha256", "-f", pub))
	if len(f) < 2 || !strings.HasPrefix(f[1], "SHA256:") {
		t.Fatalf("ssh-keygen -l -f %s: %q", pub, f)
	}
	return f[1]
}

// SSHSign signs file with the private key file key by ssh-keygen -Y sign
// under namespace, into FILE.sig (replacing it), and returns FILE.sig.
// args (-O hashalg=sha256) go before the file. The agent is kept out:
// the key file signs.
func SSHSign(t testing.TB, key, namespace, file string, args ...string) string {
	t.Helper()
	sig := file + ".sig"
	if err := os.Remove(sig); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	argv := append(append([]string{"-q", "-Y", "sign", "-f", key, "-n", namespace}, args...), file)
	if out, code, stderr := runInput(t, nil, []string{"SSH_AUTH_SOCK="}, "ssh-keygen", argv...); code != 0 {
		t.Fatalf("%s: exit %d\n%s%s", cmdline("ssh-keygen", argv), code, out, stderr)
	}
	return sig
}

// SSHVerify asks ssh-keygen -Y verify whether sig signs file for principal
// under namespace, by the allowed_signers file allowed. args follow
// (-Overify-time=...). It returns what ssh-keygen said and its verdict.
func SSHVerify(t testing.TB, allowed, principal, namespace, file, sig string, args ...string) (string, bool) {
	t.Helper()
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	argv := append([]string{"-Y", "verify", "-f", allowed, "-I", principal, "-n", namespace, "-s", sig}, args...)
	out, code, stderr := runInput(t, in, nil, "ssh-keygen", argv...)
	return out + stderr, code == 0
}
