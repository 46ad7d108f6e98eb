package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
	"github.com/cangallo/canga/remote"
	"github.com/cangallo/canga/repo"
	"github.com/opencontainers/go-digest"
)

type fetchCmd struct {
	Repo string `arg:"" optional:"" name:"REPO" help:"Remote repository (default: every configured remote)."`
	repoOption
}

func (c *fetchCmd) Run(e *env) error {
	h, err := e.openHome()
	if err != nil {
		return err
	}
	names := h.Remotes()
	if c.Repo != "" {
		names = []string{c.Repo}
	} else if len(names) == 0 {
		return errors.New("no remote repository is configured (add one with a url in config.yaml)")
	}
	failed := 0
	for _, name := range names {
		r, err := h.Repo(name)
		if err == nil {
			err = e.fetch(r)
		}
		if err != nil {
			e.notice("%v", err)
			failed++
		}
	}
	if failed > 0 {
		return &exitError{code: 1}
	}
	return nil
}

func (e *env) fetch(r *repo.Repo) error {
	f, err := r.Fetch(e.ctx)
	if errors.Is(err, repo.ErrLocal) {
		return fmt.Errorf("repository %s is local: there is nothing to fetch", r.Name())
	}
	if err != nil {
		return err
	}
	signed := "not signed"
	switch {
	case f.Signed:
		signed = fmt.Sprintf("signed by %s (%s)", f.Principal, f.Fingerprint)
	case f.HasSignature && f.Fingerprint == "":
		signed = "signature not checked: no allowed_signers configured"
	case f.HasSignature:
		signed = fmt.Sprintf("signature by %s not checked: no allowed_signers configured", f.Fingerprint)
	}
	if f.NotModified {
		// The server said so (304): the cached index was not read again.
		fmt.Fprintf(e.stdout, "%s: index not modified since the last fetch, %s\n", r.Name(), signed)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s: %d images, %d tags, %s\n", r.Name(), len(f.Index.Images), len(f.Index.Tags), signed)
	return nil
}

type pullCmd struct {
	Name           string `arg:"" name:"NAME" help:"Image of a remote repository (REPO:NAME, tag, ID or prefix), or oci://HOST/NAME[:TAG|@DIGEST]."`
	Repo           string `name:"repo" placeholder:"REPO" help:"oci:// only: local repository to pull into (default: the default one)."`
	Tag            string `short:"t" help:"oci:// only: tag the image (default: NAME's last element and TAG, as Docker names it)."`
	AllowedSigners string `name:"allowed-signers" placeholder:"FILE" help:"oci:// only: require a signature by a key of this allowed_signers file."`
	registryFlags
}

func (c *pullCmd) Run(e *env) error {
	if isOCI(c.Name) {
		return c.pullRegistry(e)
	}
	if c.Repo != "" || c.Tag != "" || c.AllowedSigners != "" || c.PlainHTTP || c.CAFile != "" {
		return errors.New("--repo, --tag, --allowed-signers, --plain-http and --ca-file are for oci:// references")
	}
	r, ix, id, err := e.resolve(c.Name)
	if err != nil {
		return err
	}
	if !r.Remote() {
		e.notice("%s is in local repository %s: nothing to pull", index.ShortID(id), r.Name())
		return nil
	}
	return e.pull(r, ix, id)
}

// copyOptions shows a copy's progress.
func (e *env) copyOptions(label string, tr *transfer) repo.CopyOptions {
	return repo.CopyOptions{Progress: func(id digest.Digest, done, size int64) {
		tr.update(index.ShortID(id), done, size)
	}}
}

func (e *env) pull(r *repo.Repo, ix *index.Index, id digest.Digest) error {
	tr := e.newTransfer(index.ShortID(id))
	_, err := e.h.Pull(e.ctx, r, ix, id, e.copyOptions(index.ShortID(id), tr))
	tr.done(err == nil)
	return err
}

type importCmd struct {
	Image string `arg:"" name:"IMAGE" help:"Image to copy, with its ancestors (pulled first if needed)."`
	Repo  string `arg:"" optional:"" name:"REPO" help:"Local repository to copy into (default: the default one)."`
	Tag   string `short:"t" help:"Tag the image in REPO."`
	repoOption
}

func (c *importCmd) Run(e *env) error {
	h, err := e.openHome()
	if err != nil {
		return err
	}
	src, six, id, err := h.Resolve(c.Image)
	if err != nil {
		return err
	}
	dst, err := h.Repo(c.Repo)
	if err != nil {
		return err
	}
	if dst.Remote() {
		return fmt.Errorf("repository %s is a remote's cache: import into a local repository", dst.Name())
	}
	if c.Tag != "" {
		if err := h.CheckTag(c.Tag); err != nil {
			return err
		}
	}
	tr := e.newTransfer(index.ShortID(id))
	opt := e.copyOptions(index.ShortID(id), tr)
	opt.Tag = c.Tag
	res, err := h.Import(e.ctx, src, six, id, dst, opt)
	tr.done(err == nil)
	if err != nil {
		return err
	}
	if res.Moved != "" {
		e.notice("tag %s moved from %s to %s", c.Tag, index.ShortID(res.Moved), index.ShortID(id))
	}
	fmt.Fprintln(e.stdout, id)
	return nil
}

type serveCmd struct {
	Repo string `arg:"" optional:"" name:"REPO" help:"Repository to serve (default: the default one)."`
	Addr string `default:"127.0.0.1:8000" help:"Address to listen on."`
	repoOption
}

func (c *serveCmd) Run(e *env) error {
	r, err := e.openRepo(c.Repo)
	if err != nil {
		return err
	}
	return remote.Serve(e.ctx, r.Dir(), c.Addr, func(a net.Addr) {
		e.notice("serving repository %s read-only at http://%s/ (Ctrl-C stops)", r.Name(), a)
	})
}

type signCmd struct {
	Repo string `arg:"" optional:"" name:"REPO" help:"Repository whose index to sign (default: the default one)."`
	Key  string `placeholder:"FILE" help:"SSH private key, or a .pub whose key ssh-agent holds (default: see above)."`
	repoOption
}

func (c *signCmd) Help() string {
	return `Writes index.yaml.sig, a signature ssh-keygen -Y verify accepts (namespace canga-index).

Without --key, the key is the first of, in this order:
  1. signing_key in config.yaml (a private key, or a .pub whose key ssh-agent holds);
  2. the only key ssh-agent holds (none, or several: go on);
  3. ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa, ~/.ssh/id_rsa (the first that exists).
canga says which key signed.`
}

func (c *signCmd) Run(e *env) error {
	r, err := e.openRepo(c.Repo)
	if err != nil {
		return err
	}
	if r.Remote() {
		return fmt.Errorf("repository %s is a remote's cache: sign the index where it is published", r.Name())
	}
	s, err := r.Sign(e.ctx, c.Key)
	if errors.Is(err, signing.ErrNoDefaultKey) {
		return fmt.Errorf("%w: give --key FILE, or set signing_key: FILE in %s (a private key, or the .pub of a key ssh-agent holds)", err, e.h.Config.File)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "signed %s with %s (%s)\n", s.File, s.Fingerprint, keyWords(s))
	return nil
}

// keyWords says which key signed, and why that one.
func keyWords(s *repo.Signature) string {
	switch s.KeySource {
	case repo.KeyConfigured:
		return "key " + s.Key + ", signing_key of config.yaml"
	case repo.KeyAgent:
		if s.Key == "" {
			return "the only key ssh-agent holds"
		}
		return fmt.Sprintf("ssh-agent's only key, %q", s.Key)
	case repo.KeyDefaultFile:
		return "key " + s.Key + ", the default: no --key, no signing_key in config.yaml, no single ssh-agent key"
	}
	return "key " + s.Key
}

type verifyCmd struct {
	Repo           string `arg:"" optional:"" name:"REPO" help:"Repository whose index to verify (default: the default one)."`
	AllowedSigners string `name:"allowed-signers" placeholder:"FILE" help:"OpenSSH allowed_signers file (default: see above)."`
	JSON           bool   `name:"json" help:"Print one JSON document, for a bad signature too."`
	repoOption
}

func (c *verifyCmd) Help() string {
	return `Checks index.yaml.sig against an OpenSSH allowed_signers file, as ssh-keygen -Y verify does.

Without --allowed-signers, the file is the first of, in this order:
  1. allowed_signers of the repository's entry in config.yaml;
  2. allowed_signers at the top level of config.yaml.
canga says which file allowed the signer.`
}

func (c *verifyCmd) Run(e *env) error {
	r, err := e.openRepo(c.Repo)
	if err != nil {
		return err
	}
	s, err := r.Verify(c.AllowedSigners)
	if errors.Is(err, repo.ErrNoSigners) {
		return fmt.Errorf("no allowed_signers for repository %s: give --allowed-signers FILE, or set allowed_signers: FILE in %s (for the repository, or at the top level for all)", r.Name(), e.h.Config.File)
	}
	if c.JSON {
		return writeVerifyDoc(e, r, s, err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Good signature of %s's index by %s (%s), allowed by %s\n", r.Name(), s.Principal, s.Fingerprint, s.AllowedSigners)
	return nil
}
