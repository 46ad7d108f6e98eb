package repo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
	"golang.org/x/crypto/ssh"
)

// ErrNoSigners: a signature check was asked for with no allowed_signers
// file given or configured.
var ErrNoSigners = errors.New("repo: no allowed_signers")

// Signers loads the allowed_signers of a remote, or returns nil when none
// is configured (then no signature is required). A file that is
// configured but cannot be loaded is an error: it must never turn the
// requirement off.
func (r *Repo) Signers() (*signing.AllowedSigners, error) {
	if r.conf.AllowedSigners == "" {
		return nil, nil
	}
	s, err := signing.LoadAllowedSigners(r.conf.AllowedSigners)
	if err != nil {
		return nil, fmt.Errorf("repository %s: allowed_signers: %w", r.Name(), err)
	}
	return s, nil
}

// Signature is a signed index: who signed it, and where.
type Signature struct {
	// File is the signed index.yaml.
	File string
	// Principal is the signer as the allowed signers name it (empty
	// after Sign).
	Principal string
	// Fingerprint is the SHA256 fingerprint of the signing key.
	Fingerprint string
	// Key names the key that signed (after Sign): its file, or, for a
	// key only ssh-agent has, the agent's comment on it.
	Key string
	// KeySource says why that key signed (after Sign).
	KeySource KeySource
	// AllowedSigners is the allowed_signers file the signature was
	// checked against (after Verify).
	AllowedSigners string
}

// KeySource is where [Repo.Sign] found its key, in the order it looks.
type KeySource int

const (
	// KeyGiven: the caller named the key file.
	KeyGiven KeySource = iota
	// KeyConfigured: signing_key in config.yaml.
	KeyConfigured
	// KeyAgent: the only key ssh-agent holds.
	KeyAgent
	// KeyDefaultFile: the first of ~/.ssh/id_ed25519, id_ecdsa and id_rsa.
	KeyDefaultFile
)

// Sign signs the repository's index (SPEC §6): a signature over the exact
// bytes of index.yaml, in index.yaml.sig. The key is keyFile (a private
// key, or a .pub whose key ssh-agent holds; see [signing.LoadSigner]), or
// when keyFile is empty, the signing_key of config.yaml, else the one
// [signing.DefaultKey] finds (ssh-agent's only key, else
// ~/.ssh/id_ed25519, id_ecdsa or id_rsa); the result says which. It holds
// the repository lock, so that no writer changes the index between the
// reading of its bytes and the writing of their signature.
func (r *Repo) Sign(ctx context.Context, keyFile string) (*Signature, error) {
	if r.Remote() {
		return nil, fmt.Errorf("%w: %s: sign the index where it is published", ErrRemote, r.Name())
	}
	signer, keyName, source, err := r.signingKey(keyFile)
	if err != nil {
		return nil, err
	}
	lk, err := r.store.Lock(ctx)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	defer lk.Unlock()
	file := filepath.Join(r.Dir(), IndexFile)
	data, err := readCapped(file, index.MaxIndexSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repository %s has no index to sign yet", r.Name())
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	sig, err := signing.Sign(data, signer)
	if err != nil {
		return nil, err
	}
	fp, err := signing.CheckSignature(data, sig)
	if err != nil {
		return nil, err
	}
	if err := r.store.WriteFileAtomic(SigFile, sig, indexPerm); err != nil {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	return &Signature{File: file, Fingerprint: fp, Key: keyName, KeySource: source}, lk.Unlock()
}

// signingKey chooses the key of Sign.
func (r *Repo) signingKey(keyFile string) (signer ssh.Signer, name string, source KeySource, err error) {
	if keyFile == "" && r.h != nil && r.h.Config.SigningKey != "" {
		keyFile, source = r.h.Config.SigningKey, KeyConfigured
	}
	if keyFile != "" {
		signer, err = signing.LoadSigner(keyFile)
		if err != nil && source == KeyConfigured {
			err = fmt.Errorf("signing_key of %s: %w", r.h.Config.File, err)
		}
		return signer, keyFile, source, err
	}
	k, err := signing.DefaultKey()
	if err != nil {
		return nil, "", 0, err
	}
	if k.File == "" {
		return k.Signer, k.Comment, KeyAgent, nil
	}
	return k.Signer, k.File, KeyDefaultFile, nil
}

// Verify checks the signature of the repository's index against the
// allowed signers in file, or, when file is empty, those of the
// repository's entry in config.yaml, else the top-level allowed_signers
// of config.yaml; the result says which file. Readers take no lock: index
// and signature are each replaced by rename, and a pair caught between
// two writes fails, as it must.
func (r *Repo) Verify(file string) (*Signature, error) {
	if file == "" {
		file = r.conf.AllowedSigners
	}
	if file == "" && r.h != nil {
		file = r.h.Config.AllowedSigners
	}
	if file == "" {
		return nil, fmt.Errorf("%w for repository %s", ErrNoSigners, r.Name())
	}
	signers, err := signing.LoadAllowedSigners(file)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(r.Dir(), IndexFile)
	data, err := readCapped(path, index.MaxIndexSize)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	sig, err := readCapped(filepath.Join(r.Dir(), SigFile), signing.MaxSignatureSize)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	principal, fp, err := signing.Verify(data, sig, signers, time.Now())
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	return &Signature{File: path, Principal: principal, Fingerprint: fp, AllowedSigners: file}, nil
}

// StaleSignature reports whether a local repository's index.yaml.sig no
// longer signs its index.yaml: a command changed the index after it was
// signed, and remotes that require a signature will refuse it.
func (r *Repo) StaleSignature() bool {
	if r.Remote() {
		return false
	}
	sig, err := os.ReadFile(filepath.Join(r.Dir(), SigFile))
	if err != nil {
		return false
	}
	data, err := os.ReadFile(filepath.Join(r.Dir(), IndexFile))
	if err != nil {
		return false
	}
	_, err = signing.CheckSignature(data, sig)
	return err != nil
}
