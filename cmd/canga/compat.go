package main

// What users of Cangallo type, because its README shows it: bare `canga`
// and `canga help [COMMAND]` for the command list, `-V`, and `--repo REPO`
// beside every optional REPO argument.

import (
	"fmt"
	"strings"

	"github.com/alecthomas/kong"
)

type helpCmd struct {
	Command []string `arg:"" optional:"" name:"COMMAND" help:"Command to describe (default: list the commands)."`
}

// Run prints the help of the command named, as COMMAND --help does.
func (c *helpCmd) Run(kctx *kong.Context) error {
	tr, err := kong.Trace(kctx.Kong, c.Command)
	if err != nil {
		return err
	}
	if tr.Error != nil {
		return fmt.Errorf("help %s: %w", strings.Join(c.Command, " "), tr.Error)
	}
	return tr.PrintUsage(false)
}

// repoOption is --repo REPO, Cangallo's spelling of a command's optional
// REPO argument (`canga fetch --repo=remote`).
type repoOption struct {
	RepoOpt string `name:"repo" placeholder:"REPO" help:"Same as the REPO argument."`
}

// merge puts --repo into the REPO argument *arg. Both given and different
// is a usage error: neither can be taken as the one meant.
func (o repoOption) merge(arg *string) error {
	switch {
	case o.RepoOpt == "":
	case *arg == "":
		*arg = o.RepoOpt
	case *arg != o.RepoOpt:
		return fmt.Errorf("REPO %q and --repo %q differ: give one of them", *arg, o.RepoOpt)
	}
	return nil
}

// The hooks kong calls once a command's flags and arguments are set: an
// error there is a usage error, before the command runs.

func (c *addCmd) AfterApply() error    { return c.merge(&c.Repo) }
func (c *listCmd) AfterApply() error   { return c.merge(&c.Repo) }
func (c *fetchCmd) AfterApply() error  { return c.merge(&c.Repo) }
func (c *importCmd) AfterApply() error { return c.merge(&c.Repo) }
func (c *serveCmd) AfterApply() error  { return c.merge(&c.Repo) }
func (c *signCmd) AfterApply() error   { return c.merge(&c.Repo) }
func (c *verifyCmd) AfterApply() error { return c.merge(&c.Repo) }
func (c *fsckCmd) AfterApply() error   { return c.merge(&c.Repo) }
func (c *gcCmd) AfterApply() error     { return c.merge(&c.Repo) }
