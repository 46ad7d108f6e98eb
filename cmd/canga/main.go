// Command canga keeps qcow2 disk images in a content-addressed repository.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/repo"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

// exitError carries an exit status other than 1, for commands whose
// status means something (check: 2 corrupt, 3 leaks). Every other error,
// a usage error included, exits 1.
type exitError struct {
	code int
	err  error // nil: the command already said what it had to
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// env is what every command gets: where to write, and global flags.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	quiet  bool
	home   string
	h      *repo.Home // loaded on first use
}

type versionFlag bool

func (versionFlag) BeforeReset(app *kong.Kong) error {
	fmt.Fprintf(app.Stdout, "canga %s\ncommit: %s\ngo: %s %s/%s\n", version, buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	app.Exit(0)
	return nil
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}

type cli struct {
	Version versionFlag `short:"V" help:"Print version, commit and Go version, then exit."`
	Home    string      `help:"Canga home directory (config.yaml and default repository)." env:"CANGA_HOME" placeholder:"DIR"`
	Quiet   bool        `short:"q" help:"No progress bars."`

	Create  createCmd  `cmd:"" help:"Create a new qcow2 image." group:"Images"`
	Info    infoCmd    `cmd:"" help:"Describe a disk image, like qemu-img info." group:"Images"`
	Check   checkCmd   `cmd:"" help:"Check a qcow2 image's metadata, like qemu-img check (exit 0 clean, 2 corrupt, 3 leaks only)." group:"Images"`
	Digest  digestCmd  `cmd:"" help:"Print the image ID of each FILE: the SHA-256 of its guest-visible content." group:"Images"`
	Convert convertCmd `cmd:"" help:"Convert an image, like qemu-img convert." group:"Images"`

	Add     addCmd     `cmd:"" help:"Store an image in a repository; prints its image ID." group:"Repository"`
	List    listCmd    `cmd:"" help:"List images (^ has a parent, * not downloaded)." group:"Repository"`
	Show    showCmd    `cmd:"" help:"Show an image: its entry, tags and chain." group:"Repository"`
	Tag     tagCmd     `cmd:"" help:"Tag an image (moving the tag if it exists)." group:"Repository"`
	Deltag  deltagCmd  `cmd:"" help:"Remove a tag." group:"Repository"`
	Del     delCmd     `cmd:"" help:"Delete an image, its tags and its blob." group:"Repository"`
	Export  exportCmd  `cmd:"" help:"Write an image as one standalone file, its chain flattened." group:"Repository"`
	Overlay overlayCmd `cmd:"" help:"Create a qcow2 image backed by an image's blob, to run a VM on." group:"Repository"`
	Fsck    fsckCmd    `cmd:"" help:"Verify every blob, image ID and chain of a repository." group:"Repository"`
	Gc      gcCmd      `cmd:"" name:"gc" help:"Remove unused blobs and leftovers of interrupted work." group:"Repository"`

	Fetch  fetchCmd  `cmd:"" help:"Download a remote repository's index (and signature)." group:"Remote repositories"`
	Pull   pullCmd   `cmd:"" help:"Download a remote image and its ancestors, or an image of an OCI registry, verified while streaming." group:"Remote repositories"`
	Import importCmd `cmd:"" help:"Copy an image and its ancestors into a local repository." group:"Remote repositories"`
	Serve  serveCmd  `cmd:"" help:"Serve a repository read-only over HTTP." group:"Remote repositories"`
	Nbd    nbdCmd    `cmd:"" name:"nbd" help:"Serve an image read-only over NBD, fetching a remote's image chunk by chunk as it is read." group:"Remote repositories"`
	Sign   signCmd   `cmd:"" help:"Sign a repository's index with an SSH key." group:"Remote repositories"`
	Verify verifyCmd `cmd:"" help:"Verify a repository's index signature." group:"Remote repositories"`

	Push   pushCmd   `cmd:"" help:"Push an image to an OCI registry (oci://HOST/NAME:TAG)." group:"OCI registries"`
	Login  loginCmd  `cmd:"" help:"Save credentials for a registry in Docker's config.json." group:"OCI registries"`
	Logout logoutCmd `cmd:"" help:"Remove the credentials of a registry from Docker's config.json." group:"OCI registries"`

	Build buildCmd `cmd:"" help:"Build a derived image from a Cangafile, with libguestfs." group:"Building"`

	Help       helpCmd       `cmd:"" help:"List the commands, or describe one (as COMMAND --help)."`
	Completion completionCmd `cmd:"" help:"Print a shell completion script (bash, zsh or fish)."`

	// For the completion scripts and make man: not for people.
	Complete completeCmd `cmd:"" name:"__complete" hidden:"" help:"Print completion candidates for a command line."`
	Man      manCmd      `cmd:"" name:"__man" hidden:"" help:"Write the man pages into a directory."`
}

// newParser builds the command line model and parser of c.
func newParser(c *cli, stdout, stderr io.Writer) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("canga"),
		kong.Description("Keep qcow2 disk images in a content-addressed repository."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitSignal(code)) }),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
}

// memoryLimit is the Go runtime's soft memory limit, unless GOMEMLIMIT
// sets another. Commands on an index of 100,000 images hold 40 to 60 MB
// of it, and the collector's default pacing (the heap may double between
// collections) would let the process grow well past 128 MiB; the limit
// makes it collect sooner instead, and costs nothing to commands whose
// heap is small (see bench/RESULTS.md).
const memoryLimit = 96 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	defer func() {
		// A panic is a bug in canga; say so plainly instead of a trace.
		if r := recover(); r != nil {
			if ee, ok := r.(exitSignal); ok {
				code = int(ee)
				return
			}
			fmt.Fprintf(stderr, "canga: internal error: %v\n", r)
			code = 70
		}
	}()
	var c cli
	parser, err := newParser(&c, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "canga: %v\n", err)
		return 70
	}
	if len(args) == 0 {
		// Bare canga lists the commands, as Cangallo did: not an error.
		args = []string{"help"}
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		// A usage error is an error like any other (SPEC §5, as qemu-img
		// does): 2 and 3 belong to check, where they mean corrupt and
		// leaks only.
		fmt.Fprintf(stderr, "canga: %v\n", err)
		return 1
	}
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, quiet: c.Quiet, home: c.Home}
	defer e.warnStaleSignatures()
	if err := kctx.Run(e); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				fmt.Fprintf(stderr, "canga: %v\n", ee.err)
			}
			return ee.code
		}
		fmt.Fprintf(stderr, "canga: %v%s\n", err, hint(err))
		return 1
	}
	return 0
}

// hint says what to do about an error, where the libraries' words stop.
func hint(err error) string {
	switch {
	case errors.Is(err, repo.ErrNotPulled):
		return " (canga pull downloads it)"
	case errors.Is(err, index.ErrHasChildren):
		return " (or use del --recursive)"
	}
	return ""
}

// warnStaleSignatures tells the user when a command left a signed index
// changed after its signature: remotes that require one will refuse it.
func (e *env) warnStaleSignatures() {
	if e.h == nil {
		return
	}
	for _, r := range e.h.Opened() {
		if r.Changed() && r.StaleSignature() {
			e.notice("the index of repository %s changed since it was signed: run canga sign %s", r.Name(), r.Name())
		}
	}
}

// exitSignal unwinds kong's exit (after --help or --version) through run.
type exitSignal int
