package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/registry"
	"github.com/cangallo/canga/repo"
	"golang.org/x/term"
)

// registryFlags are how every registry command reaches its registry.
type registryFlags struct {
	PlainHTTP bool   `name:"plain-http" help:"Talk plain HTTP to the registry (loopback registries without TLS are reached so anyway)."`
	CAFile    string `name:"ca-file" placeholder:"FILE" help:"PEM file of CA certificates to trust besides the system's."`
}

func (f registryFlags) options() repo.RegistryOptions {
	return repo.RegistryOptions{PlainHTTP: f.PlainHTTP, CAFile: f.CAFile}
}

func (f registryFlags) clientOptions() registry.Options {
	return registry.Options{PlainHTTP: f.PlainHTTP, CAFile: f.CAFile, UserAgent: "canga/" + version}
}

func isOCI(s string) bool { return strings.HasPrefix(s, registry.Scheme) }

type pushCmd struct {
	Image         string   `arg:"" name:"IMAGE" help:"Image to push, with its ancestors."`
	Ref           string   `arg:"" name:"REFERENCE" help:"oci://HOST[:PORT]/NAME[:TAG] (TAG latest by default)."`
	MountFrom     []string `name:"mount-from" placeholder:"NAME" help:"Repository of the same registry to mount blobs from instead of uploading them (repeatable)."`
	Sign          string   `name:"sign" placeholder:"KEY" help:"Attach an SSH signature of the manifest made with this key (a private key, or a .pub held by ssh-agent)."`
	ContainerDisk bool     `name:"containerdisk" help:"Push the image flattened as a KubeVirt containerDisk."`
	Platform      string   `name:"platform" placeholder:"ARCH" help:"Architecture of a containerDisk (amd64, arm64, ...; default amd64)."`
	registryFlags
}

func (c *pushCmd) Run(e *env) error {
	if !isOCI(c.Ref) {
		return fmt.Errorf("push: %q is not an oci://HOST/NAME[:TAG] reference", c.Ref)
	}
	if c.Platform != "" && !c.ContainerDisk {
		return errors.New("--platform is for --containerdisk")
	}
	r, ix, id, err := e.resolve(c.Image)
	if err != nil {
		return err
	}
	tr := e.newTransfer("push " + index.ShortID(id))
	res, err := r.Push(e.ctx, ix, id, c.Ref, repo.PushOptions{
		RegistryOptions: c.options(),
		MountFrom:       c.MountFrom,
		SignKey:         c.Sign,
		ContainerDisk:   c.ContainerDisk,
		Platform:        c.Platform,
		Progress:        tr.update,
	})
	tr.done(err == nil)
	if res != nil {
		for _, w := range res.Warnings {
			e.notice("warning: %v", w)
		}
	}
	if err != nil {
		return err
	}
	what := "image"
	if c.ContainerDisk {
		what = "containerDisk"
	}
	e.notice("pushed %s %s to %s: %d uploaded (%s), %d already there, %d mounted", what, index.ShortID(id), res.Reference, res.Uploaded, humanSize(res.UploadedBytes), res.Skipped, res.Mounted)
	if res.Signature != "" {
		e.notice("signed: signature %s", res.Signature)
	}
	fmt.Fprintln(e.stdout, res.Manifest)
	return nil
}

// pullRegistry is pull of an oci:// reference.
func (c *pullCmd) pullRegistry(e *env) error {
	h, err := e.openHome()
	if err != nil {
		return err
	}
	dst, err := h.Repo(c.Repo)
	if err != nil {
		return err
	}
	tr := e.newTransfer("pull")
	res, err := h.PullRegistry(e.ctx, c.Name, dst, repo.RegistryPullOptions{
		RegistryOptions: c.options(),
		Tag:             c.Tag,
		AllowedSigners:  c.AllowedSigners,
		VerifyIDs:       c.VerifyIDs,
		Progress:        e.copyOptions("", tr).Progress,
	})
	tr.done(err == nil)
	if err != nil {
		return err
	}
	if res.Signer != "" {
		e.notice("good signature by %s (%s)", res.Signer, res.Fingerprint)
	}
	if res.Moved != "" && res.Moved != res.ID {
		e.notice("tag %s moved from %s to %s", res.Tag, index.ShortID(res.Moved), index.ShortID(res.ID))
	}
	e.notice("pulled %s into repository %s: %d blobs transferred%s", index.ShortID(res.ID), dst.Name(), len(res.Copied), tagNote(res.Tag))
	fmt.Fprintln(e.stdout, res.ID)
	return nil
}

func tagNote(tag string) string {
	if tag == "" {
		return ""
	}
	return ", tagged " + tag
}

// listRegistry is list of an oci:// repository.
func (c *listCmd) listRegistry(e *env) error {
	h, err := e.openHome()
	if err != nil {
		return err
	}
	tags, err := h.RegistryTags(e.ctx, c.Repo, c.options())
	if err != nil {
		return err
	}
	if c.JSON {
		if tags == nil {
			tags = []repo.RegistryTag{}
		}
		return writeJSON(e, registryListDoc{Version: jsonVersion, Repository: c.Repo, Tags: tags})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TAG\tIMAGE\tKIND\tDIGEST")
	for _, t := range tags {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Tag, index.ShortID(t.ID), t.Kind, t.Manifest)
	}
	return tw.Flush()
}

type loginCmd struct {
	Host          string `arg:"" name:"HOST" help:"Registry host, HOST[:PORT]."`
	Username      string `short:"u" name:"username" help:"User name (asked for on a terminal when not given)."`
	PasswordStdin bool   `name:"password-stdin" help:"Read the password from standard input."`
	registryFlags
}

func (c *loginCmd) Run(e *env) error {
	host := strings.TrimPrefix(c.Host, registry.Scheme)
	if err := registry.ValidateHost(host); err != nil {
		return err
	}
	user, pass := c.Username, ""
	in := bufio.NewReader(e.stdin)
	switch {
	case c.PasswordStdin:
		if user == "" {
			return errors.New("--password-stdin needs --username")
		}
		b, err := io.ReadAll(io.LimitReader(in, 1<<20))
		if err != nil {
			return err
		}
		pass = strings.TrimRight(string(b), "\r\n")
	case isTerminalFile(e.stdin):
		if user == "" {
			fmt.Fprint(e.stderr, "Username: ")
			line, err := in.ReadString('\n')
			if err != nil && line == "" {
				return err
			}
			user = strings.TrimSpace(line)
		}
		p, err := readPassword(e.stdin.(*os.File), e.stderr)
		if err != nil {
			return err
		}
		pass = p
	default:
		return errors.New("give the password on standard input with --password-stdin (never as an argument)")
	}
	if user == "" || pass == "" {
		return errors.New("login needs a user name and a password")
	}
	if err := registry.Login(e.ctx, host, user, pass, c.clientOptions()); err != nil {
		return err
	}
	e.notice("login to %s succeeded: credentials saved in Docker's config.json", host)
	return nil
}

type logoutCmd struct {
	Host string `arg:"" name:"HOST" help:"Registry host, HOST[:PORT]."`
}

func (c *logoutCmd) Run(e *env) error {
	host := strings.TrimPrefix(c.Host, registry.Scheme)
	if err := registry.ValidateHost(host); err != nil {
		return err
	}
	if err := registry.Logout(e.ctx, host); err != nil {
		return err
	}
	e.notice("removed the credentials of %s", host)
	return nil
}

func isTerminalFile(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// readPassword reads a line from the terminal f without echoing it.
func readPassword(f *os.File, prompt io.Writer) (string, error) {
	fmt.Fprint(prompt, "Password: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(prompt)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
