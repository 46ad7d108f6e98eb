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
}

// Sign signs the repository's index with the SSH key in keyFile (a
// private key, or a .pub whose key ssh-agent holds; see
// [signing.LoadSigner]) (SPEC §6): a signature over the exact bytes of
// index.yaml, in index.yaml.sig. It
// holds the repository lock, so that no writer changes the index between
// the reading of its bytes and the writing of their signature.
func (r *Repo) Sign(ctx context.Context, keyFile string) (*Signature, error) {
	if r.Remote() {
		return nil, fmt.Errorf("%w: %s: sign the index where it is published", ErrRemote, r.Name())
	}
	signer, err := signing.LoadSigner(keyFile)
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
	return &Signature{File: file, Fingerprint: fp}, lk.Unlock()
}

// Verify checks the signature of the repository's index against the
// allowed signers in file, or, when file is empty, those configured for
// the repository. Readers take no lock: index and signature are each
// replaced by rename, and a pair caught between two writes fails, as it
// must.
func (r *Repo) Verify(file string) (*Signature, error) {
	if file == "" {
		file = r.conf.AllowedSigners
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
	return &Signature{File: path, Principal: principal, Fingerprint: fp}, nil
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
