package signing

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// DefaultKeyFiles are the private keys [DefaultKey] looks for in ~/.ssh,
// in order: the names ssh-keygen gives them.
var DefaultKeyFiles = []string{"id_ed25519", "id_ecdsa", "id_rsa"}

// ErrNoDefaultKey: no key was named, and [DefaultKey] found none it could
// choose without guessing.
var ErrNoDefaultKey = errors.New("signing: no default SSH key")

// Key is a signer and where it was found, for the user to be told.
type Key struct {
	Signer ssh.Signer
	// File is the key file; empty for ssh-agent's only key.
	File string
	// Comment is the agent's comment on its only key (when File is
	// empty): usually user@host, or the file ssh-add loaded.
	Comment string
}

// Fingerprint is the SHA256 fingerprint of the key, as ssh-keygen -l
// prints it.
func (k *Key) Fingerprint() string { return fingerprint(k.Signer.PublicKey()) }

// DefaultKey finds the key to sign with when the user named none, the way
// users of ssh and git expect one to be found:
//
//   - the only key ssh-agent ($SSH_AUTH_SOCK) holds: with one key there is
//     no doubt which is meant;
//   - else the first of ~/.ssh/id_ed25519, id_ecdsa and id_rsa that
//     exists, loaded as [LoadSigner] loads it (a passphrase-protected one
//     signs through the agent, which must hold it).
//
// An agent that holds several keys is not guessed from: the files decide,
// and when there are none the error, matching [ErrNoDefaultKey], says so
// and names the agent's keys. An agent that cannot be reached counts as
// one that holds no key.
func DefaultKey() (*Key, error) {
	sock, keys, agentErr := agentKeys()
	if agentErr == nil && len(keys) == 1 {
		pub, err := ssh.ParsePublicKey(keys[0].Blob)
		if err != nil {
			return nil, fmt.Errorf("%w: ssh-agent %s: its key: %v", ErrBadKey, sock, err)
		}
		return &Key{Signer: &agentKeySigner{sock: sock, pub: pub}, Comment: keys[0].Comment}, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return nil, fmt.Errorf("%w: no home directory to find ~/.ssh in: %v", ErrNoDefaultKey, err)
	}
	dir := filepath.Join(home, ".ssh")
	for _, name := range DefaultKeyFiles {
		file := filepath.Join(dir, name)
		if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		s, err := LoadSigner(file)
		if err != nil {
			// The first key that exists is the choice: skipping a broken
			// one would sign with a key the user did not expect.
			return nil, err
		}
		return &Key{Signer: s, File: file}, nil
	}
	var agentSaid string
	switch {
	case agentErr != nil:
		agentSaid = strings.TrimPrefix(agentErr.Error(), "signing: ")
	case len(keys) == 0:
		agentSaid = "ssh-agent holds no key"
	default:
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = agentKeyName(k)
		}
		agentSaid = fmt.Sprintf("ssh-agent holds %d keys, too many to guess which (%s)", len(keys), strings.Join(names, ", "))
	}
	last := len(DefaultKeyFiles) - 1
	return nil, fmt.Errorf("%w: %s, and there is no %s or %s", ErrNoDefaultKey, agentSaid,
		strings.Join(append([]string{filepath.Join(dir, DefaultKeyFiles[0])}, DefaultKeyFiles[1:last]...), ", "), DefaultKeyFiles[last])
}

// agentKeys lists the keys the agent at $SSH_AUTH_SOCK holds.
func agentKeys() (sock string, keys []*agent.Key, err error) {
	sock = os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return "", nil, fmt.Errorf("%w: SSH_AUTH_SOCK is not set", ErrNoAgent)
	}
	conn, err := dialAgent(sock, agentListTimeout)
	if err != nil {
		return sock, nil, err
	}
	defer conn.Close()
	keys, err = agent.NewClient(conn).List()
	if err != nil {
		return sock, nil, fmt.Errorf("%w: %s: %v", ErrNoAgent, sock, err)
	}
	return sock, keys, nil
}

// agentKeyName names an agent's key for a person: its comment and
// fingerprint.
func agentKeyName(k *agent.Key) string {
	fp := "unreadable key"
	if pub, err := ssh.ParsePublicKey(k.Blob); err == nil {
		fp = fingerprint(pub)
	}
	if k.Comment == "" {
		return fp
	}
	return clip(k.Comment) + " " + fp
}
