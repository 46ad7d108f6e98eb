package signing

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// The tests use the real OpenSSH tools as the oracle: what canga signs,
// ssh-keygen must accept, and where canga and ssh-keygen judge the same
// signature and allowed_signers file, they must agree.

// keyType is a key ssh-keygen can make.
type keyType struct {
	name string
	args []string
}

var (
	ed25519Key = keyType{"ed25519", []string{"-t", "ed25519"}}
	rsaKey     = keyType{"rsa3072", []string{"-t", "rsa", "-b", "3072"}}
	ecdsaKey   = keyType{"ecdsa-p256", []string{"-t", "ecdsa", "-b", "256"}}
	keyTypes   = []keyType{ed25519Key, rsaKey, ecdsaKey}
)

// pubLine is the public key of key as it goes on an allowed_signers line.
func pubLine(t testing.TB, key string) string {
	t.Helper()
	return strings.TrimSpace(string(testkit.ReadFile(t, key+".pub")))
}

// keygenSign signs msg with "ssh-keygen -Y sign" and returns the signature.
func keygenSign(t testing.TB, key, namespace string, msg []byte, extra ...string) []byte {
	t.Helper()
	m := testkit.WriteFile(t, filepath.Join(t.TempDir(), "msg"), msg, 0o600)
	return testkit.ReadFile(t, testkit.SSHSign(t, key, namespace, m, extra...))
}

// keygenVerify asks "ssh-keygen -Y verify" about a signature at time at.
func keygenVerify(t testing.TB, allowed, principal, namespace string, sig, msg []byte, at time.Time) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	as := testkit.WriteFile(t, filepath.Join(dir, "allowed_signers"), []byte(allowed), 0o600)
	s := testkit.WriteFile(t, filepath.Join(dir, "sig"), sig, 0o600)
	m := testkit.WriteFile(t, filepath.Join(dir, "msg"), msg, 0o600)
	return testkit.SSHVerify(t, as, principal, namespace, m, s, "-Overify-time="+at.UTC().Format("20060102150405")+"Z")
}

// keygenFindPrincipals is what "ssh-keygen -Y find-principals" prints, one
// principal a line, or ok false when it finds none.
func keygenFindPrincipals(t testing.TB, allowed string, sig []byte, at time.Time) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	as := testkit.WriteFile(t, filepath.Join(dir, "allowed_signers"), []byte(allowed), 0o600)
	s := testkit.WriteFile(t, filepath.Join(dir, "sig"), sig, 0o600)
	out, code, _ := testkit.RunCode(t, "ssh-keygen", "-Y", "find-principals", "-f", as, "-s", s,
		"-Overify-time="+at.UTC().Format("20060102150405")+"Z")
	return strings.TrimSpace(out), code == 0
}

func mustParse(t testing.TB, allowed string) *AllowedSigners {
	t.Helper()
	a, err := ParseAllowedSigners(strings.NewReader(allowed))
	if err != nil {
		t.Fatalf("ParseAllowedSigners(%q): %v", allowed, err)
	}
	return a
}

func line(principals, options, pub string) string {
	if options == "" {
		return fmt.Sprintf("%s %s\n", principals, pub)
	}
	return fmt.Sprintf("%s %s %s\n", principals, options, pub)
}
