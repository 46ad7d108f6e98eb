package signing

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Namespace is the SSHSIG namespace of an index signature. It keeps a
// signature made for another purpose (git commits, "file") from passing as
// one over an index, and the reverse.
const Namespace = "canga-index"

// OCINamespace is the namespace of the signature of an image pushed to an
// OCI registry, over its manifest digest (SPEC §8).
const OCINamespace = "canga-oci"

// MaxSignatureSize bounds an armored signature. An RSA-16384 certificate
// signature is under 8 KiB; anything much larger is not a signature.
const MaxSignatureSize = 64 << 10

var (
	// ErrNoSignature: the signature is missing or empty.
	ErrNoSignature = errors.New("signing: no signature")
	// ErrBadSignature: the signature is malformed, or does not match the
	// message (the message or the signature was altered).
	ErrBadSignature = errors.New("signing: bad signature")
	// ErrUnknownKey: the signature is valid, but its key is not listed in
	// the allowed signers (for the principal asked for, if any).
	ErrUnknownKey = errors.New("signing: signer not in allowed signers")
	// ErrNamespace: the signature was made for another namespace, or the
	// allowed signers line restricts its key to other namespaces.
	ErrNamespace = errors.New("signing: namespace not allowed")
	// ErrExpired: the key (or its certificate) is listed, but not for this
	// time: its validity has ended or has not begun yet.
	ErrExpired = errors.New("signing: key not valid at this time")
	// ErrCertificate: a certificate signed by a listed authority that is
	// unusable for signing (a host certificate, no principals, a bad CA
	// signature).
	ErrCertificate = errors.New("signing: certificate not accepted")
	// ErrAllowedSigners: the allowed_signers file is malformed.
	ErrAllowedSigners = errors.New("signing: bad allowed_signers")

	// ErrBadKey: the key file is neither an OpenSSH public key nor a
	// private key this package can read.
	ErrBadKey = errors.New("signing: unreadable key")
	// ErrEncryptedKey: the private key is passphrase-protected and no
	// ssh-agent holds it.
	ErrEncryptedKey = errors.New("signing: private key is passphrase-protected")
	// ErrNoAgent: a public key was given, so the private half must come
	// from ssh-agent, but no agent is reachable.
	ErrNoAgent = errors.New("signing: no ssh-agent")
	// ErrNotInAgent: the agent is reachable but does not hold the key.
	ErrNotInAgent = errors.New("signing: key not held by ssh-agent")
)

// Sign signs message for [Namespace] with SHA-512, as "ssh-keygen -Y sign -n
// canga-index" does, and returns the armored signature. RSA keys sign with
// rsa-sha2-512, as ssh-keygen refuses SHA-1 ("ssh-rsa") signatures. The new
// signature is verified before it is returned.
func Sign(message []byte, signer ssh.Signer) ([]byte, error) {
	return SignIn(Namespace, message, signer)
}

// SignIn is [Sign] for namespace ns.
func SignIn(ns string, message []byte, signer ssh.Signer) ([]byte, error) {
	if signer == nil || signer.PublicKey() == nil {
		return nil, fmt.Errorf("%w: no signer", ErrBadKey)
	}
	s := signer
	if plainType(signer.PublicKey()) == ssh.KeyAlgoRSA {
		as, ok := signer.(ssh.AlgorithmSigner)
		if !ok {
			return nil, fmt.Errorf("%w: RSA signer cannot sign with rsa-sha2-512", ErrBadKey)
		}
		// sshsig picks rsa-sha2-512 for a plain RSA key but calls the
		// default Sign, which is SHA-1, for an RSA certificate.
		s = rsaSHA512Signer{as}
	}
	sig, err := sshsig.Sign(bytes.NewReader(message), s, sshsig.HashSHA512, ns)
	if err != nil {
		return nil, fmt.Errorf("signing: sign: %w", err)
	}
	armored := sshsig.Armor(sig)
	if _, _, err := check(ns, message, armored); err != nil {
		return nil, fmt.Errorf("signing: new signature does not verify: %w", err)
	}
	return armored, nil
}

// rsaSHA512Signer makes the default algorithm of an RSA signer rsa-sha2-512.
type rsaSHA512Signer struct{ ssh.AlgorithmSigner }

func (s rsaSHA512Signer) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return s.SignWithAlgorithm(rand, data, ssh.KeyAlgoRSASHA512)
}

// CheckSignature checks that armoredSig is a well-formed signature over
// message for [Namespace], made by the key it carries, and returns that
// key's SHA256 fingerprint. Like "ssh-keygen -Y check-novalidate" it says
// nothing about who the key belongs to: anyone can make such a signature.
// Use [Verify] to decide whether to trust it.
func CheckSignature(message, armoredSig []byte) (fingerprint string, err error) {
	return CheckSignatureReader(bytes.NewReader(message), armoredSig)
}

// CheckSignatureReader is [CheckSignature] of a message read from r.
func CheckSignatureReader(r io.Reader, armoredSig []byte) (fingerprint string, err error) {
	_, fp, err := checkReader(Namespace, r, armoredSig)
	if err != nil {
		return "", err
	}
	return fp, nil
}

// Verify checks armoredSig over message the way "ssh-keygen -Y verify -n
// canga-index" does, for any principal: the signature must be valid, and
// its key listed in signers on a line whose namespaces option (if any)
// admits [Namespace] and whose validity window holds now. A certificate is
// accepted when a cert-authority line lists its CA, it is a user
// certificate valid at now, and one of its principals matches the line.
//
// The first matching line, in file order, decides. principal is what
// "ssh-keygen -Y find-principals" prints for it: the line's principals
// field as written for a key (it may be a pattern such as "*@example.com"),
// or the certificate's principals that the line admits, comma-separated.
// Two differences from find-principals keep Verify from accepting what no
// "ssh-keygen -Y verify -I" call would: a key line whose principals are
// all negations ("!mallory") is skipped, and negations on a cert-authority
// line are honoured.
//
// fingerprint is the SHA256 fingerprint of the signing key (for a
// certificate, of its key, as ssh-keygen prints it).
//
// The error matches one of [ErrNoSignature], [ErrBadSignature],
// [ErrNamespace], [ErrUnknownKey], [ErrExpired] or [ErrCertificate].
func Verify(message, armoredSig []byte, signers *AllowedSigners, now time.Time) (principal, fingerprint string, err error) {
	return VerifyIn(Namespace, message, armoredSig, signers, now)
}

// VerifyIn is [Verify] for namespace ns: "ssh-keygen -Y verify -n NS".
func VerifyIn(ns string, message, armoredSig []byte, signers *AllowedSigners, now time.Time) (principal, fingerprint string, err error) {
	return verifyIn(ns, bytes.NewReader(message), armoredSig, signers, now)
}

// VerifyReader is [Verify] of a message read from r, which is hashed as it
// is read: an index of 100,000 images need not be in memory to be checked.
func VerifyReader(r io.Reader, armoredSig []byte, signers *AllowedSigners, now time.Time) (principal, fingerprint string, err error) {
	return verifyIn(Namespace, r, armoredSig, signers, now)
}

func verifyIn(ns string, message io.Reader, armoredSig []byte, signers *AllowedSigners, now time.Time) (principal, fingerprint string, err error) {
	sig, fp, err := checkReader(ns, message, armoredSig)
	if err != nil {
		return "", "", err
	}
	principal, err = signers.authorize(ns, sig.PublicKey, "", now)
	if err != nil {
		return "", "", fmt.Errorf("%w (%s key %s)", err, keyName(sig.PublicKey), fp)
	}
	return principal, fp, nil
}

// VerifyPrincipal is [Verify] for one named signer, exactly "ssh-keygen -Y
// verify -I principal -n canga-index": only lines whose principals
// pattern-list matches principal count, and a certificate must list
// principal itself.
func VerifyPrincipal(message, armoredSig []byte, signers *AllowedSigners, principal string, now time.Time) (fingerprint string, err error) {
	if principal == "" {
		return "", fmt.Errorf("%w: no principal given", ErrUnknownKey)
	}
	sig, fp, err := check(Namespace, message, armoredSig)
	if err != nil {
		return "", err
	}
	if _, err := signers.authorize(Namespace, sig.PublicKey, principal, now); err != nil {
		return "", fmt.Errorf("%w (%s key %s)", err, keyName(sig.PublicKey), fp)
	}
	return fp, nil
}

// check parses the signature and verifies it, for namespace ns, with the
// key it carries.
func check(ns string, message, armoredSig []byte) (*sshsig.Signature, string, error) {
	return checkReader(ns, bytes.NewReader(message), armoredSig)
}

func checkReader(ns string, message io.Reader, armoredSig []byte) (*sshsig.Signature, string, error) {
	if len(armoredSig) > MaxSignatureSize {
		return nil, "", fmt.Errorf("%w: %d bytes, more than %d", ErrBadSignature, len(armoredSig), MaxSignatureSize)
	}
	if len(bytes.TrimSpace(armoredSig)) == 0 {
		return nil, "", ErrNoSignature
	}
	raw, err := dearmor(armoredSig)
	if err != nil {
		return nil, "", err
	}
	sig, err := sshsig.ParseSignature(raw)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	fp := fingerprint(sig.PublicKey)
	if sig.Namespace != ns {
		return nil, "", fmt.Errorf("%w: signature is for namespace %q, not %q", ErrNamespace, clip(sig.Namespace), ns)
	}
	// sshsig refuses SHA-1 only for a plain RSA key; an RSA certificate
	// must not get around it.
	if plainType(sig.PublicKey) == ssh.KeyAlgoRSA && sig.Signature.Format != ssh.KeyAlgoRSASHA256 && sig.Signature.Format != ssh.KeyAlgoRSASHA512 {
		return nil, "", fmt.Errorf("%w: RSA signature algorithm %q (want rsa-sha2-256 or rsa-sha2-512)", ErrBadSignature, clip(sig.Signature.Format))
	}
	if err := sshsig.Verify(message, sig, sig.PublicKey, sig.HashAlgorithm, ns); err != nil {
		return nil, "", fmt.Errorf("%w: does not match the message (%s key %s)", ErrBadSignature, keyName(sig.PublicKey), fp)
	}
	return sig, fp, nil
}

const (
	armorBegin = "-----BEGIN SSH SIGNATURE-----"
	armorEnd   = "-----END SSH SIGNATURE-----"
)

// dearmor is stricter than PEM decoding, like ssh-keygen's sshsig_dearmor:
// the data must start with the BEGIN line, so what canga accepts
// ssh-keygen accepts too. It is stricter than ssh-keygen in one way:
// nothing but whitespace may follow the END line.
func dearmor(b []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(b, []byte(armorBegin))
	if !ok {
		return nil, fmt.Errorf("%w: does not start with %q", ErrBadSignature, armorBegin)
	}
	// ssh-keygen wants exactly "\n" here, so a CRLF signature (say, from a
	// Windows editor) fails there and must fail here too.
	if rest, ok = bytes.CutPrefix(rest, []byte("\n")); !ok {
		return nil, fmt.Errorf("%w: no newline after %q", ErrBadSignature, armorBegin)
	}
	body, tail, ok := bytes.Cut(rest, []byte(armorEnd))
	if !ok {
		return nil, fmt.Errorf("%w: truncated: no %q line", ErrBadSignature, armorEnd)
	}
	if len(bytes.TrimSpace(tail)) != 0 {
		return nil, fmt.Errorf("%w: data after %q", ErrBadSignature, armorEnd)
	}
	b64 := strings.Map(func(r rune) rune {
		if strings.ContainsRune(whitespace, r) {
			return -1
		}
		return r
	}, string(body))
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: bad base64: %v", ErrBadSignature, err)
	}
	return raw, nil
}

// authorize finds the first line that lets key sign in namespace ns for
// principal ("" for any) at now, and returns the principals to report for it. When no line
// does, the error is about the first line that listed the key but refused
// it (namespace, time, certificate), or ErrUnknownKey.
func (a *AllowedSigners) authorize(ns string, key ssh.PublicKey, principal string, now time.Time) (string, error) {
	var refused error
	refuse := func(err error) {
		if refused == nil {
			refused = err
		}
	}
	for _, e := range a.Entries() {
		if principal != "" && matchPatternList(principal, e.Principals) != 1 {
			continue
		}
		var names string
		if !e.CertAuthority {
			if !sameKey(e.Key, key) {
				continue
			}
			if principal == "" && !hasPositivePattern(e.Principals) {
				continue
			}
			names = e.Principals
			if principal != "" {
				names = principal
			}
		} else {
			cert, ok := key.(*ssh.Certificate)
			if !ok || !sameKey(cert.SignatureKey, e.Key) {
				continue
			}
			var err error
			if names, err = checkCert(cert, e, principal, now); err != nil {
				refuse(err)
				continue
			}
		}
		if e.HasNamespaces && matchPatternList(ns, e.Namespaces) != 1 {
			refuse(fmt.Errorf("%w: allowed_signers line %d admits the key only for namespaces %q", ErrNamespace, e.Line, clip(e.Namespaces)))
			continue
		}
		t := now.Unix()
		if !e.ValidAfter.IsZero() && t < e.ValidAfter.Unix() {
			refuse(fmt.Errorf("%w: not yet valid: allowed_signers line %d has valid-after %s", ErrExpired, e.Line, e.ValidAfter.UTC().Format(time.RFC3339)))
			continue
		}
		if !e.ValidBefore.IsZero() && t > e.ValidBefore.Unix() {
			refuse(fmt.Errorf("%w: expired: allowed_signers line %d has valid-before %s", ErrExpired, e.Line, e.ValidBefore.UTC().Format(time.RFC3339)))
			continue
		}
		return names, nil
	}
	if refused != nil {
		return "", refused
	}
	if principal != "" {
		return "", fmt.Errorf("%w for principal %q", ErrUnknownKey, clip(principal))
	}
	return "", ErrUnknownKey
}

// checkCert is sshkey_cert_check_authority for a user certificate whose CA
// is on line e. With no principal it returns the certificate's principals
// that the line admits, as find-principals does.
func checkCert(cert *ssh.Certificate, e Entry, principal string, now time.Time) (string, error) {
	if cert.CertType != ssh.UserCert {
		return "", fmt.Errorf("%w: not a user certificate (allowed_signers line %d)", ErrCertificate, e.Line)
	}
	if len(cert.ValidPrincipals) == 0 {
		return "", fmt.Errorf("%w: certificate lists no principals (allowed_signers line %d)", ErrCertificate, e.Line)
	}
	t := uint64(max(now.Unix(), 0))
	if t < cert.ValidAfter {
		return "", fmt.Errorf("%w: certificate not yet valid (allowed_signers line %d)", ErrExpired, e.Line)
	}
	if cert.ValidBefore != ssh.CertTimeInfinity && t >= cert.ValidBefore {
		return "", fmt.Errorf("%w: certificate expired (allowed_signers line %d)", ErrExpired, e.Line)
	}
	var names []string
	if principal != "" {
		if !slices.Contains(cert.ValidPrincipals, principal) {
			return "", fmt.Errorf("%w: certificate is not for principal %q (allowed_signers line %d)", ErrUnknownKey, clip(principal), e.Line)
		}
		names = []string{principal}
	} else {
		for _, p := range cert.ValidPrincipals {
			if p != "" && matchPatternList(p, e.Principals) == 1 {
				names = append(names, p)
			}
		}
		if len(names) == 0 {
			return "", fmt.Errorf("%w: no certificate principal matches allowed_signers line %d", ErrUnknownKey, e.Line)
		}
	}
	// CertChecker checks the CA's signature; the checks above already
	// covered what it would refuse for other reasons. OpenSSH ignores
	// critical options when verifying file signatures, and so do we.
	checker := ssh.CertChecker{
		Clock:                    func() time.Time { return now },
		SupportedCriticalOptions: criticalOptionNames(cert),
	}
	if err := checker.CheckCert(names[0], cert); err != nil {
		return "", fmt.Errorf("%w: %v (allowed_signers line %d)", ErrCertificate, err, e.Line)
	}
	return strings.Join(names, ","), nil
}

func criticalOptionNames(cert *ssh.Certificate) []string {
	names := make([]string, 0, len(cert.CriticalOptions))
	for k := range cert.CriticalOptions {
		names = append(names, k)
	}
	return names
}

func sameKey(a, b ssh.PublicKey) bool {
	return a != nil && b != nil && bytes.Equal(a.Marshal(), b.Marshal())
}

// plainType is the type of the key itself, a certificate's included.
func plainType(k ssh.PublicKey) string {
	if c, ok := k.(*ssh.Certificate); ok {
		return c.Key.Type()
	}
	return k.Type()
}

// fingerprint is what ssh-keygen prints: a certificate is fingerprinted by
// its key, so a certificate and its key show the same fingerprint.
func fingerprint(k ssh.PublicKey) string {
	if c, ok := k.(*ssh.Certificate); ok {
		return ssh.FingerprintSHA256(c.Key)
	}
	return ssh.FingerprintSHA256(k)
}

// keyName is a short, human name for the key type, like ssh-keygen's
// "ED25519" or "RSA-CERT".
func keyName(k ssh.PublicKey) string {
	var name string
	switch t := plainType(k); {
	case t == ssh.KeyAlgoED25519:
		name = "ED25519"
	case t == ssh.KeyAlgoRSA:
		name = "RSA"
	case strings.HasPrefix(t, "ecdsa-"):
		name = "ECDSA"
	case t == ssh.KeyAlgoSKED25519:
		name = "ED25519-SK"
	case t == ssh.KeyAlgoSKECDSA256:
		name = "ECDSA-SK"
	default:
		name = clip(t)
	}
	if _, ok := k.(*ssh.Certificate); ok {
		name += "-CERT"
	}
	return name
}
