package signing

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tests use the real OpenSSH tools as the oracle: what canga signs,
// ssh-keygen must accept, and where canga and ssh-keygen judge the same
// signature and allowed_signers file, they must agree.

func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH: install openssh-client (apt-get install openssh-client); it is the reference these tests check against", name)
	}
	return p
}

// run runs a command and returns its combined output and whether it exited 0.
func run(t testing.TB, stdin []byte, env []string, name string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command(requireTool(t, name), args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
		}
		return string(out), false
	}
	return string(out), true
}

func mustRun(t testing.TB, stdin []byte, env []string, name string, args ...string) string {
	t.Helper()
	out, ok := run(t, stdin, env, name, args...)
	if !ok {
		t.Fatalf("%s %s failed:\n%s", name, strings.Join(args, " "), out)
	}
	return out
}

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

// genKey makes a key pair in dir and returns the private key's path (the
// public key is path + ".pub").
func genKey(t testing.TB, dir, name string, kt keyType, passphrase string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	args := append([]string{"-q", "-N", passphrase, "-C", name + "@test", "-f", path}, kt.args...)
	mustRun(t, nil, nil, "ssh-keygen", args...)
	return path
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pubLine is the public key of key as it goes on an allowed_signers line.
func pubLine(t testing.TB, key string) string {
	t.Helper()
	return strings.TrimSpace(string(readFile(t, key+".pub")))
}

// keygenSign signs msg with "ssh-keygen -Y sign" and returns the signature.
func keygenSign(t testing.TB, key, namespace string, msg []byte, extra ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	m := writeFile(t, filepath.Join(dir, "msg"), msg)
	args := append([]string{"-Y", "sign", "-f", key, "-n", namespace}, extra...)
	mustRun(t, nil, []string{"SSH_AUTH_SOCK="}, "ssh-keygen", append(args, m)...)
	return readFile(t, m+".sig")
}

// keygenVerify asks "ssh-keygen -Y verify" about a signature at time at.
func keygenVerify(t testing.TB, allowed, principal, namespace string, sig, msg []byte, at time.Time) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	as := writeFile(t, filepath.Join(dir, "allowed_signers"), []byte(allowed))
	s := writeFile(t, filepath.Join(dir, "sig"), sig)
	return run(t, msg, nil, "ssh-keygen", "-Y", "verify", "-f", as, "-I", principal, "-n", namespace, "-s", s,
		"-Overify-time="+at.UTC().Format("20060102150405")+"Z")
}

// keygenFindPrincipals is what "ssh-keygen -Y find-principals" prints, one
// principal a line, or ok false when it finds none.
func keygenFindPrincipals(t testing.TB, allowed string, sig []byte, at time.Time) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	as := writeFile(t, filepath.Join(dir, "allowed_signers"), []byte(allowed))
	s := writeFile(t, filepath.Join(dir, "sig"), sig)
	cmd := exec.Command(requireTool(t, "ssh-keygen"), "-Y", "find-principals", "-f", as, "-s", s,
		"-Overify-time="+at.UTC().Format("20060102150405")+"Z")
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err == nil
}

// fingerprintOf is "ssh-keygen -l" of a public key file.
func fingerprintOf(t testing.TB, pubPath string) string {
	t.Helper()
	f := strings.Fields(mustRun(t, nil, nil, "ssh-keygen", "-l", "-E", "sha256", "-f", pubPath))
	if len(f) < 2 {
		t.Fatalf("ssh-keygen -l: unexpected output %q", f)
	}
	return f[1]
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
