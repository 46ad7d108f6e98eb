package signing

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// maxKeyFileSize bounds a key file: an RSA-16384 private key is about 13 KB.
const maxKeyFileSize = 1 << 20

const (
	// agentListTimeout bounds asking the agent which keys it holds.
	agentListTimeout = 10 * time.Second
	// agentSignTimeout is longer: an agent may ask its user to confirm
	// (ssh-add -c) or to touch a security key.
	agentSignTimeout = 2 * time.Minute
)

// LoadSigner returns the signer for keyPath, chosen the way "ssh-keygen -Y
// sign -f keyPath" chooses:
//
//   - an unencrypted private key (OpenSSH format, or PEM PKCS#1, PKCS#8,
//     SEC 1): Ed25519, RSA or ECDSA;
//   - a passphrase-protected private key whose public half ssh-agent holds
//     (from $SSH_AUTH_SOCK): the agent signs; if the agent does not hold it,
//     the error matches [ErrEncryptedKey] and says to use the agent;
//   - a public key ("KEY.pub"): the agent signs, and must hold it;
//   - a certificate ("KEY-cert.pub"): the agent signs, or else the private
//     key KEY beside it, and the signature carries the certificate.
//
// The returned signer of an agent key dials the agent for each signature,
// so it holds no connection open and needs no closing.
func LoadSigner(keyPath string) (ssh.Signer, error) {
	data, err := readKeyFile(keyPath)
	if errors.Is(err, ErrBadKey) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	if !bytes.Contains(data, []byte("-----BEGIN ")) {
		pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: neither a private key nor a public key", ErrBadKey, keyPath)
		}
		if cert, ok := pub.(*ssh.Certificate); ok {
			return certSigner(keyPath, cert)
		}
		s, err := agentSigner(pub)
		if err != nil {
			return nil, fmt.Errorf("%w (the private half of %s must be in ssh-agent)", err, keyPath)
		}
		return s, nil
	}
	return privateSigner(keyPath, data)
}

// readKeyFile returns I/O errors unprefixed, for callers to word, and
// ErrBadKey for an oversized file.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrBadKey, path, maxKeyFileSize)
	}
	return data, nil
}

func privateSigner(keyPath string, data []byte) (ssh.Signer, error) {
	s, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		pub := missing.PublicKey
		if pub == nil {
			// Old PEM keys do not carry their public half in clear;
			// ssh-keygen then looks beside them.
			if d, err := readKeyFile(keyPath + ".pub"); err == nil {
				pub, _, _, _, _ = ssh.ParseAuthorizedKey(d)
			}
		}
		if pub != nil {
			if s, agentErr := agentSigner(pub); agentErr == nil {
				return s, nil
			}
		}
		return nil, fmt.Errorf("%w: %s: canga does not ask for passphrases; load the key into ssh-agent (ssh-add %s) and sign again, or give an unencrypted key", ErrEncryptedKey, keyPath, keyPath)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKey, keyPath, err)
	}
	return s, nil
}

// certSigner pairs a certificate with the signer of its key: from the agent
// if it holds the key, else from the private key file beside the
// certificate, named as ssh-keygen names them (KEY and KEY-cert.pub).
func certSigner(certPath string, cert *ssh.Certificate) (ssh.Signer, error) {
	s, agentErr := agentSigner(cert.Key)
	if agentErr != nil {
		keyPath, ok := strings.CutSuffix(certPath, "-cert.pub")
		if !ok {
			return nil, fmt.Errorf("%w (the private key of certificate %s must be in ssh-agent)", agentErr, certPath)
		}
		data, err := readKeyFile(keyPath)
		if err != nil {
			return nil, fmt.Errorf("%w, and the private key of certificate %s is unreadable: %w", agentErr, certPath, err)
		}
		if s, err = privateSigner(keyPath, data); err != nil {
			return nil, err
		}
	}
	cs, err := ssh.NewCertSigner(cert, s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKey, certPath, err)
	}
	return cs, nil
}

// agentSigner checks that the agent at $SSH_AUTH_SOCK holds pub.
func agentSigner(pub ssh.PublicKey) (ssh.Signer, error) {
	sock, keys, err := agentKeys()
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if bytes.Equal(k.Marshal(), pub.Marshal()) {
			return &agentKeySigner{sock: sock, pub: pub}, nil
		}
	}
	return nil, fmt.Errorf("%w: %s key %s (ssh-add it)", ErrNotInAgent, keyName(pub), fingerprint(pub))
}

func dialAgent(sock string, timeout time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout("unix", sock, timeout)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoAgent, err)
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %v", ErrNoAgent, err)
	}
	return conn, nil
}

// agentKeySigner signs with a key held by ssh-agent, one connection per
// signature.
type agentKeySigner struct {
	sock string
	pub  ssh.PublicKey
}

var _ ssh.AlgorithmSigner = (*agentKeySigner)(nil)

func (s *agentKeySigner) PublicKey() ssh.PublicKey { return s.pub }

func (s *agentKeySigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return s.SignWithAlgorithm(rand, data, "")
}

func (s *agentKeySigner) SignWithAlgorithm(_ io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	var flags agent.SignatureFlags
	switch algorithm {
	case "", s.pub.Type():
	case ssh.KeyAlgoRSASHA256:
		flags = agent.SignatureFlagRsaSha256
	case ssh.KeyAlgoRSASHA512:
		flags = agent.SignatureFlagRsaSha512
	default:
		return nil, fmt.Errorf("signing: ssh-agent cannot sign with %q", algorithm)
	}
	conn, err := dialAgent(s.sock, agentSignTimeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	sig, err := agent.NewClient(conn).SignWithFlags(s.pub, data, flags)
	if err != nil {
		return nil, fmt.Errorf("signing: ssh-agent: %w", err)
	}
	return sig, nil
}
