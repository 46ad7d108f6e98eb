package signing

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// fuzzNow is a fixed time so that runs are reproducible.
var fuzzNow = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

// fuzzSigners makes deterministic keys: a signer, a CA and a user
// certificate the CA signed, all from fixed seeds.
func fuzzSigners(tb testing.TB) (key, cert ssh.Signer, ca ssh.PublicKey) {
	tb.Helper()
	mk := func(seed byte) ssh.Signer {
		s, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)))
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	key, caSigner, user := mk(1), mk(2), mk(3)
	c := &ssh.Certificate{
		Key:             user.PublicKey(),
		CertType:        ssh.UserCert,
		KeyId:           "fuzz",
		ValidPrincipals: []string{"alice@example.com", "bob@example.com"},
		ValidAfter:      0,
		ValidBefore:     ssh.CertTimeInfinity,
	}
	if err := c.SignCert(bytes.NewReader(bytes.Repeat([]byte{4}, 64)), caSigner); err != nil {
		tb.Fatal(err)
	}
	cert, err := ssh.NewCertSigner(c, user)
	if err != nil {
		tb.Fatal(err)
	}
	return key, cert, caSigner.PublicKey()
}

func authorized(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func FuzzParseAllowedSigners(f *testing.F) {
	key, _, ca := fuzzSigners(f)
	k, c := authorized(key.PublicKey()), authorized(ca)
	for _, seed := range []string{
		"",
		"# comment\n\n",
		"alice " + k + "\n",
		"alice,bob@example.com " + k + " comment\r\n",
		`"alice smith" namespaces="canga-index,file" ` + k,
		`*@example.com cert-authority,valid-after="20240101Z",valid-before="202601011230" ` + c,
		`alice namespaces="a\"b" ` + k,
		`alice valid-after="20240101UTC" ` + k,
		"alice ssh-ed25519 AAAA!!\n",
		`alice namespaces="x ` + k,
		"\"alice " + k,
		"alice\n",
		"*,!mallory " + k + "\nbob " + c + "\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAllowedSigners(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrAllowedSigners) {
				t.Fatalf("error %v does not match ErrAllowedSigners", err)
			}
			return
		}
		last := 0
		for _, e := range a.Entries() {
			if e.Key == nil || e.Line <= last {
				t.Fatalf("bad entry %+v after line %d", e, last)
			}
			last = e.Line
			if !e.ValidAfter.IsZero() && !e.ValidBefore.IsZero() && !e.ValidBefore.After(e.ValidAfter) {
				t.Fatalf("empty window %+v", e)
			}
			// Matching must not panic, whatever the file says.
			_ = matchPatternList("alice@example.com", e.Principals)
			_ = matchPatternList(Namespace, e.Namespaces)
		}
	})
}

var verifyErrors = []error{ErrNoSignature, ErrBadSignature, ErrUnknownKey, ErrNamespace, ErrExpired, ErrCertificate}

func FuzzVerify(f *testing.F) {
	key, cert, ca := fuzzSigners(f)
	msg := []byte("version: 1\nimages: {}\n")
	keySig, err := Sign(msg, key)
	if err != nil {
		f.Fatal(err)
	}
	certSig, err := Sign(msg, cert)
	if err != nil {
		f.Fatal(err)
	}
	k, c := authorized(key.PublicKey()), authorized(ca)
	seeds := []struct {
		msg, sig  []byte
		allowed   string
		principal string
	}{
		{msg, keySig, "alice@example.com " + k, "alice@example.com"},
		{msg, keySig, "*@example.com,!bob@example.com " + k, "bob@example.com"},
		{msg, keySig, `alice namespaces="file" ` + k + "\nalice " + k, "alice"},
		{msg, keySig, `alice valid-before="20240101Z" ` + k, "alice"},
		{msg, certSig, "*@example.com cert-authority " + c, "alice@example.com"},
		{msg, certSig, `*,!alice@example.com cert-authority,valid-after="20300101Z" ` + c, "bob@example.com"},
		{append(bytes.Clone(msg), 'x'), keySig, "alice " + k, "alice"},
		{msg, keySig[:len(keySig)/2], "alice " + k, "alice"},
		{msg, nil, "alice " + k, "alice"},
		{msg, []byte(armorBegin + "\nU1NIU0lH\n" + armorEnd + "\n"), "alice " + k, "alice"},
	}
	for _, s := range seeds {
		f.Add(s.msg, s.sig, s.allowed, s.principal)
	}
	f.Fuzz(func(t *testing.T, msg, sig []byte, allowed, principal string) {
		signers, err := ParseAllowedSigners(strings.NewReader(allowed))
		if err != nil {
			return
		}
		_, fp, err := Verify(msg, sig, signers, fuzzNow)
		if err != nil {
			if !isOneOf(err, verifyErrors) {
				t.Fatalf("Verify error %v matches no sentinel", err)
			}
		} else if cfp, err := CheckSignature(msg, sig); err != nil || cfp != fp {
			t.Fatalf("Verify accepted, CheckSignature = %q, %v", cfp, err)
		}
		pfp, perr := VerifyPrincipal(msg, sig, signers, principal, fuzzNow)
		if perr != nil {
			if !isOneOf(perr, verifyErrors) {
				t.Fatalf("VerifyPrincipal error %v matches no sentinel", perr)
			}
			return
		}
		// A signer "ssh-keygen -Y verify -I" accepts, find-principals finds.
		if err != nil || pfp != fp {
			t.Fatalf("VerifyPrincipal(%q) accepted (%s) but Verify: %v", principal, pfp, err)
		}
	})
}

func isOneOf(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
