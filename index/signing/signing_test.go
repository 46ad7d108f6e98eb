package signing

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

var testMsg = []byte("version: 1\nimages:\n  sha256:0123: {size: 42}\n")

// allKeyTypes adds a legacy PEM key to the OpenSSH-format ones.
var allKeyTypes = append(keyTypes[:len(keyTypes):len(keyTypes)],
	keyType{"ecdsa-p384-pem", []string{"-t", "ecdsa", "-b", "384", "-m", "PEM"}})

func TestSignVerifiedBySSHKeygen(t *testing.T) {
	for _, kt := range allKeyTypes {
		t.Run(kt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			key := testkit.Keygen(t, dir, "signer", "", kt.args...)
			signer, err := LoadSigner(key)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := Sign(testMsg, signer)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(sig, []byte("-----BEGIN SSH SIGNATURE-----\n")) {
				t.Fatalf("signature is not armored:\n%s", sig)
			}
			parsed, err := sshsig.Unarmor(sig)
			if err != nil {
				t.Fatal(err)
			}
			if parsed.HashAlgorithm != sshsig.HashSHA512 || parsed.Namespace != Namespace {
				t.Errorf("hash %s namespace %q, want sha512 %q", parsed.HashAlgorithm, parsed.Namespace, Namespace)
			}
			if strings.HasPrefix(kt.name, "rsa") && parsed.Signature.Format != ssh.KeyAlgoRSASHA512 {
				t.Errorf("RSA signature algorithm %s, want %s", parsed.Signature.Format, ssh.KeyAlgoRSASHA512)
			}

			allowed := line("signer@example.com", "", pubLine(t, key))
			if out, ok := keygenVerify(t, allowed, "signer@example.com", Namespace, sig, testMsg, time.Now()); !ok {
				t.Fatalf("ssh-keygen -Y verify refused canga's signature:\n%s\n%s", out, sig)
			}
			principal, fp, err := Verify(testMsg, sig, mustParse(t, allowed), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if want := testkit.Fingerprint(t, key+".pub"); principal != "signer@example.com" || fp != want {
				t.Errorf("Verify = %q, %q; want signer@example.com, %q", principal, fp, want)
			}
		})
	}
}

func TestVerifySSHKeygenSignature(t *testing.T) {
	type tc struct {
		name  string
		kt    keyType
		extra []string
	}
	var cases []tc
	for _, kt := range allKeyTypes {
		cases = append(cases, tc{kt.name, kt, nil})
	}
	cases = append(cases, tc{"ed25519-hashalg-sha256", ed25519Key, []string{"-Ohashalg=sha256"}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			key := testkit.Keygen(t, dir, "signer", "", c.kt.args...)
			sig := keygenSign(t, key, Namespace, testMsg, c.extra...)
			allowed := "# the team\n\n" + line("alice@example.com,bob@example.com", "", pubLine(t, key))
			principal, fp, err := Verify(testMsg, sig, mustParse(t, allowed), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if principal != "alice@example.com,bob@example.com" {
				t.Errorf("principal %q", principal)
			}
			if want := testkit.Fingerprint(t, key+".pub"); fp != want {
				t.Errorf("fingerprint %q, want %q", fp, want)
			}
			if found, ok := keygenFindPrincipals(t, allowed, sig, time.Now()); !ok || found != strings.ReplaceAll(principal, ",", "\n") {
				t.Errorf("ssh-keygen -Y find-principals says %q, canga %q", found, principal)
			}
			if _, err := VerifyPrincipal(testMsg, sig, mustParse(t, allowed), "bob@example.com", time.Now()); err != nil {
				t.Error(err)
			}
			if cfp, err := CheckSignature(testMsg, sig); err != nil || cfp != fp {
				t.Errorf("CheckSignature = %q, %v", cfp, err)
			}
		})
	}
}

// sha1Signer signs RSA with ssh-rsa (SHA-1) whatever it is asked for.
type sha1Signer struct{ ssh.AlgorithmSigner }

func (s sha1Signer) SignWithAlgorithm(r io.Reader, data []byte, _ string) (*ssh.Signature, error) {
	return s.AlgorithmSigner.SignWithAlgorithm(r, data, ssh.KeyAlgoRSA)
}

func TestVerifyRejects(t *testing.T) {
	dir := t.TempDir()
	alice := testkit.Keygen(t, dir, "alice", "", ed25519Key.args...)
	mallory := testkit.Keygen(t, dir, "mallory", "", ed25519Key.args...)
	good := keygenSign(t, alice, Namespace, testMsg)
	pub := pubLine(t, alice)
	base := line("alice@example.com", "", pub)

	tampered := bytes.Clone(testMsg)
	tampered[len(tampered)/2] ^= 1

	// A signature damaged in its last bytes, the raw signature: still
	// armored and parseable, but the cryptography fails.
	raw, err := dearmor(good)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-5] ^= 1
	damaged := pem.EncodeToMemory(&pem.Block{Type: "SSH SIGNATURE", Bytes: raw})

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaSigner, err := ssh.NewSignerFromKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sshsig.Sign(bytes.NewReader(testMsg), sha1Signer{rsaSigner.(ssh.AlgorithmSigner)}, sshsig.HashSHA512, Namespace)
	if err != nil {
		t.Fatal(err)
	}
	sha1Sig := sshsig.Armor(s)
	sha1Allowed := line("alice@example.com", "", strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rsaSigner.PublicKey()))))

	// A signature carrying a 20000-bit RSA key: refused before any
	// arithmetic (x/crypto/ssh caps RSA at 16384 bits, as OpenSSH does),
	// so a hostile server cannot make verification slow.
	nb := bytes.Repeat([]byte{0xff}, 2500) // odd, 20000 bits; need not be a product of primes
	n := new(big.Int).SetBytes(nb)
	hugePub, err := ssh.NewPublicKey(&rsa.PublicKey{N: n, E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	hugeSig := sshsig.Armor(&sshsig.Signature{
		Version: 1, PublicKey: hugePub, Namespace: Namespace, HashAlgorithm: sshsig.HashSHA512,
		Signature: &ssh.Signature{Format: ssh.KeyAlgoRSASHA512, Blob: make([]byte, 2500)},
	})

	cases := []struct {
		name    string
		msg     []byte
		sig     []byte
		allowed string
		want    error // nil: accepted
		// keygen: ssh-keygen must reach the same verdict. False where
		// canga is deliberately stricter or ssh-keygen cannot be asked.
		keygen bool
	}{
		{"good", testMsg, good, base, nil, true},
		{"tampered message", tampered, good, base, ErrBadSignature, true},
		{"empty message", []byte{}, good, base, ErrBadSignature, true},
		{"key not listed", testMsg, keygenSign(t, mallory, Namespace, testMsg), base, ErrUnknownKey, true},
		{"no allowed signers", testMsg, good, "", ErrUnknownKey, true},
		{"only comments", testMsg, good, "# nobody\n\n   \n", ErrUnknownKey, true},
		{"wrong namespace", testMsg, keygenSign(t, alice, "file", testMsg), base, ErrNamespace, true},
		{"nil signature", testMsg, nil, base, ErrNoSignature, false},
		{"empty signature", testMsg, []byte{}, base, ErrNoSignature, true},
		{"blank signature", testMsg, []byte("\n \t\n"), base, ErrNoSignature, true},
		{"garbage", testMsg, []byte("this is not a signature\n"), base, ErrBadSignature, true},
		{"truncated armor", testMsg, good[:len(good)/2], base, ErrBadSignature, true},
		{"no end line", testMsg, bytes.TrimSuffix(bytes.TrimSpace(good), []byte(armorEnd)), base, ErrBadSignature, true},
		{"only armor lines", testMsg, []byte(armorBegin + "\n" + armorEnd + "\n"), base, ErrBadSignature, true},
		{"bad base64", testMsg, []byte(armorBegin + "\n!!!!\n" + armorEnd + "\n"), base, ErrBadSignature, true},
		{"damaged signature blob", testMsg, damaged, base, ErrBadSignature, true},
		{"PGP armor", testMsg, []byte("-----BEGIN PGP SIGNATURE-----\nAAAA\n-----END PGP SIGNATURE-----\n"), base, ErrBadSignature, true},
		{"leading space", testMsg, append([]byte(" "), good...), base, ErrBadSignature, true},
		{"data after armor", testMsg, append(bytes.Clone(good), "junk\n"...), base, ErrBadSignature, false},
		{"CRLF armor", testMsg, bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")), base, ErrBadSignature, true},
		{"CR in body", testMsg, append([]byte(armorBegin+"\n"), bytes.ReplaceAll(good[len(armorBegin)+1:], []byte("\n"), []byte("\r\n"))...), base, nil, true},
		{"oversized", testMsg, append(append([]byte(armorBegin+"\n"), bytes.Repeat([]byte("QUFB\n"), MaxSignatureSize/5)...), armorEnd+"\n"...), base, ErrBadSignature, false},
		{"RSA SHA-1", testMsg, sha1Sig, sha1Allowed, ErrBadSignature, true},
		{"RSA key too large", testMsg, hugeSig, base, ErrBadSignature, true},
		{"expired", testMsg, good, line("alice@example.com", `valid-before="20200101Z"`, pub), ErrExpired, true},
		{"not yet valid", testMsg, good, line("alice@example.com", `valid-after="29990101Z"`, pub), ErrExpired, true},
		{"inside window", testMsg, good, line("alice@example.com", `valid-after="20200101Z",valid-before="29990101120000Z"`, pub), nil, true},
		{"namespaces excludes", testMsg, good, line("alice@example.com", `namespaces="file,git"`, pub), ErrNamespace, true},
		{"namespaces negates", testMsg, good, line("alice@example.com", `namespaces="*,!canga-index"`, pub), ErrNamespace, true},
		{"namespaces empty", testMsg, good, line("alice@example.com", `namespaces=""`, pub), ErrNamespace, true},
		{"namespaces pattern", testMsg, good, line("alice@example.com", `namespaces="file,canga-*"`, pub), nil, true},
		{"NAMESPACES upper case", testMsg, good, line("alice@example.com", `NAMESPACES="canga-index"`, pub), nil, true},
		{"expired line then good line", testMsg, good,
			line("alice@example.com", `valid-before="20200101Z"`, pub) + line("alice@example.com", "", pub), nil, true},
		{"plain key on cert-authority line", testMsg, good, line("alice@example.com", "cert-authority", pub), ErrUnknownKey, true},
		{"principal only negated", testMsg, good, line("!alice@example.com", "", pub), ErrUnknownKey, true},
		{"other key listed", testMsg, good, line("alice@example.com", "", pubLine(t, mallory)), ErrUnknownKey, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			signers := mustParse(t, c.allowed)
			_, _, err := Verify(c.msg, c.sig, signers, time.Now())
			t.Logf("Verify: %v", err)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Verify: %v, want %v", err, c.want)
			}
			_, _, rerr := VerifyReader(bytes.NewReader(c.msg), c.sig, signers, time.Now())
			if !errors.Is(rerr, c.want) || (c.want == nil) != (rerr == nil) {
				t.Fatalf("VerifyReader: %v, want %v", rerr, c.want)
			}
			_, perr := VerifyPrincipal(c.msg, c.sig, signers, "alice@example.com", time.Now())
			if !errors.Is(perr, c.want) || (c.want == nil) != (perr == nil) {
				t.Fatalf("VerifyPrincipal: %v, want %v", perr, c.want)
			}
			if c.keygen {
				out, ok := keygenVerify(t, c.allowed, "alice@example.com", Namespace, c.sig, c.msg, time.Now())
				if ok != (c.want == nil) {
					t.Errorf("ssh-keygen disagrees (accepted=%v):\n%s", ok, out)
				}
			}
		})
	}
	if _, _, err := Verify(testMsg, good, nil, time.Now()); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("nil allowed signers: %v, want ErrUnknownKey", err)
	}
}

func TestVerifyTimeWindow(t *testing.T) {
	dir := t.TempDir()
	key := testkit.Keygen(t, dir, "alice", "", ed25519Key.args...)
	sig := keygenSign(t, key, Namespace, testMsg)
	allowed := line("alice@example.com", `valid-after="202401011200Z",valid-before="20240201000000Z"`, pubLine(t, key))
	signers := mustParse(t, allowed)
	cases := []struct {
		at   time.Time
		want error
	}{
		{time.Date(2024, 1, 1, 11, 59, 59, 0, time.UTC), ErrExpired},
		{time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC), nil},
		{time.Date(2024, 1, 15, 0, 0, 0, 0, time.UTC), nil},
		{time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC), nil},
		{time.Date(2024, 2, 1, 0, 0, 1, 0, time.UTC), ErrExpired},
	}
	for _, c := range cases {
		t.Run(c.at.Format(time.RFC3339), func(t *testing.T) {
			_, _, err := Verify(testMsg, sig, signers, c.at)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Verify at %s: %v, want %v", c.at, err, c.want)
			}
			if out, ok := keygenVerify(t, allowed, "alice@example.com", Namespace, sig, testMsg, c.at); ok != (c.want == nil) {
				t.Errorf("ssh-keygen disagrees (accepted=%v):\n%s", ok, out)
			}
		})
	}
}

func TestPrincipalPatterns(t *testing.T) {
	dir := t.TempDir()
	key := testkit.Keygen(t, dir, "signer", "", ed25519Key.args...)
	sig := keygenSign(t, key, Namespace, testMsg)
	pub := pubLine(t, key)
	cases := []struct {
		principals string // the field as written
		accept     []string
		refuse     []string
	}{
		{"alice@example.com", []string{"alice@example.com"}, []string{"bob@example.com", "alice@example.co", "Alice@example.com"}},
		{"*@example.com", []string{"alice@example.com", "@example.com"}, []string{"alice@example.org"}},
		{"*@example.com,!mallory@example.com", []string{"alice@example.com"}, []string{"mallory@example.com"}},
		{"!mallory@example.com,*@example.com", []string{"alice@example.com"}, []string{"mallory@example.com"}},
		{"?ob@example.com", []string{"bob@example.com", "rob@example.com"}, []string{"ob@example.com", "bbob@example.com"}},
		{"alice@*,bob@example.com", []string{"alice@anywhere", "bob@example.com"}, []string{"carol@example.com"}},
		{"*", []string{"anyone", "x@y"}, nil},
		{`"alice smith@example.com"`, []string{"alice smith@example.com"}, []string{"alice"}},
		{`"*@example.com,!*evil*"`, []string{"good@example.com"}, []string{"evil@example.com"}},
	}
	for _, c := range cases {
		t.Run(c.principals, func(t *testing.T) {
			allowed := line(c.principals, "", pub)
			signers := mustParse(t, allowed)
			for _, id := range c.accept {
				if _, err := VerifyPrincipal(testMsg, sig, signers, id, time.Now()); err != nil {
					t.Errorf("%q refused: %v", id, err)
				}
				if out, ok := keygenVerify(t, allowed, id, Namespace, sig, testMsg, time.Now()); !ok {
					t.Errorf("ssh-keygen refuses %q:\n%s", id, out)
				}
			}
			for _, id := range c.refuse {
				if _, err := VerifyPrincipal(testMsg, sig, signers, id, time.Now()); !errors.Is(err, ErrUnknownKey) {
					t.Errorf("%q: %v, want ErrUnknownKey", id, err)
				}
				if out, ok := keygenVerify(t, allowed, id, Namespace, sig, testMsg, time.Now()); ok {
					t.Errorf("ssh-keygen accepts %q:\n%s", id, out)
				}
			}
			principal, _, err := Verify(testMsg, sig, signers, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Trim(c.principals, `"`); principal != want {
				t.Errorf("Verify principal %q, want %q", principal, want)
			}
		})
	}
	if _, err := VerifyPrincipal(testMsg, sig, mustParse(t, line("*", "", pub)), "", time.Now()); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("empty principal: %v, want ErrUnknownKey", err)
	}
}

func TestCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testkit.Keygen(t, dir, "ca", "", ed25519Key.args...)
	otherCA := testkit.Keygen(t, dir, "otherca", "", ed25519Key.args...)
	user := testkit.Keygen(t, dir, "user", "", ed25519Key.args...)
	certify := func(name, key string, args ...string) string {
		t.Helper()
		// ssh-keygen writes KEY-cert.pub; copy the key so each
		// certificate has its own KEY beside it.
		k := filepath.Join(dir, name)
		testkit.WriteFile(t, k, testkit.ReadFile(t, key), 0o600)
		testkit.WriteFile(t, k+".pub", testkit.ReadFile(t, key+".pub"), 0o600)
		a := append([]string{"-q", "-s", ca, "-I", name}, args...)
		testkit.Run(t, "ssh-keygen", append(a, k+".pub")...)
		return k + "-cert.pub"
	}
	good := certify("good", user, "-n", "alice@example.com,bob@example.com,carol@other.org")
	expired := certify("expired", user, "-n", "alice@example.com", "-V", "20200101:20210101")
	future := certify("future", user, "-n", "alice@example.com", "-V", "29000101:29010101")
	host := certify("host", user, "-h", "-n", "alice@example.com")

	sig := func(cert string) []byte { return keygenSign(t, cert, Namespace, testMsg) }
	goodSig := sig(good)
	caLine := line("*@example.com", "cert-authority", pubLine(t, ca))
	cases := []struct {
		name      string
		sig       []byte
		allowed   string
		principal string // for VerifyPrincipal and ssh-keygen
		want      error
		found     string // Verify's principal when accepted
		// findDiffers: ssh-keygen -Y find-principals ignores negations
		// on a cert-authority line; canga honours them.
		findDiffers bool
	}{
		{"good", goodSig, caLine, "alice@example.com", nil, "alice@example.com,bob@example.com", false},
		{"good other principal", goodSig, caLine, "bob@example.com", nil, "alice@example.com,bob@example.com", false},
		{"principal not in cert", goodSig, caLine, "dave@example.com", ErrUnknownKey, "alice@example.com,bob@example.com", false},
		{"principal not on line", goodSig, caLine, "carol@other.org", ErrUnknownKey, "alice@example.com,bob@example.com", false},
		{"negated on line", goodSig, line("*,!bob@example.com", "cert-authority", pubLine(t, ca)), "bob@example.com", ErrUnknownKey, "alice@example.com,carol@other.org", true},
		{"other CA", goodSig, line("*@example.com", "cert-authority", pubLine(t, otherCA)), "alice@example.com", ErrUnknownKey, "", false},
		{"CA without cert-authority", goodSig, line("*@example.com", "", pubLine(t, ca)), "alice@example.com", ErrUnknownKey, "", false},
		{"user key listed, not CA", goodSig, line("*@example.com", "", pubLine(t, user)), "alice@example.com", ErrUnknownKey, "", false},
		{"expired cert", sig(expired), caLine, "alice@example.com", ErrExpired, "", false},
		{"future cert", sig(future), caLine, "alice@example.com", ErrExpired, "", false},
		{"host cert", sig(host), caLine, "alice@example.com", ErrCertificate, "", false},
		{"CA line namespace", goodSig, line("*@example.com", `cert-authority,namespaces="file"`, pubLine(t, ca)), "alice@example.com", ErrNamespace, "", false},
		{"CA line expired", goodSig, line("*@example.com", `cert-authority,valid-before="20200101Z"`, pubLine(t, ca)), "alice@example.com", ErrExpired, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			signers := mustParse(t, c.allowed)
			_, err := VerifyPrincipal(testMsg, c.sig, signers, c.principal, time.Now())
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Errorf("VerifyPrincipal(%q): %v, want %v", c.principal, err, c.want)
			}
			if out, ok := keygenVerify(t, c.allowed, c.principal, Namespace, c.sig, testMsg, time.Now()); ok != (c.want == nil) {
				t.Errorf("ssh-keygen disagrees (accepted=%v):\n%s", ok, out)
			}
			principal, fp, err := Verify(testMsg, c.sig, signers, time.Now())
			if c.found == "" {
				if err == nil {
					t.Errorf("Verify accepted for %q", principal)
				}
				return
			}
			if err != nil || principal != c.found {
				t.Errorf("Verify = %q, %v; want %q", principal, err, c.found)
			}
			if want := testkit.Fingerprint(t, filepath.Join(dir, "user.pub")); fp != want {
				t.Errorf("fingerprint %q, want the user key's %q", fp, want)
			}
			if out, _ := keygenFindPrincipals(t, c.allowed, c.sig, time.Now()); !c.findDiffers && out != strings.ReplaceAll(principal, ",", "\n") {
				t.Errorf("ssh-keygen -Y find-principals says %q, canga %q", out, principal)
			}
		})
	}

	// canga signs with certificates too, the key found beside them.
	t.Setenv("SSH_AUTH_SOCK", "")
	rsaUser := testkit.Keygen(t, dir, "rsauser", "", rsaKey.args...)
	for _, key := range []string{user, rsaUser} {
		cert := certify(filepath.Base(key)+"-signs", key, "-n", "alice@example.com")
		signer, err := LoadSigner(cert)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := signer.PublicKey().(*ssh.Certificate); !ok {
			t.Fatalf("%s: signer key is %T, want a certificate", cert, signer.PublicKey())
		}
		s, err := Sign(testMsg, signer)
		if err != nil {
			t.Fatal(err)
		}
		if out, ok := keygenVerify(t, caLine, "alice@example.com", Namespace, s, testMsg, time.Now()); !ok {
			t.Errorf("%s: ssh-keygen refuses canga's certificate signature:\n%s", cert, out)
		}
		if p, _, err := Verify(testMsg, s, mustParse(t, caLine), time.Now()); err != nil || p != "alice@example.com" {
			t.Errorf("%s: Verify = %q, %v", cert, p, err)
		}
	}
}

func TestSignErrors(t *testing.T) {
	if _, err := Sign(testMsg, nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("nil signer: %v, want ErrBadKey", err)
	}
}
