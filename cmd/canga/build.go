package main

import (
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/cangallo/canga/guestfs"
	"github.com/cangallo/canga/repo"
)

type buildCmd struct {
	Cangafile string `arg:"" name:"CANGAFILE" help:"The Cangafile (YAML): parent, description, os, tag, tasks."`
	Tag       string `short:"t" help:"Tag the new image (overrides the Cangafile's tag)."`
	DryRun    bool   `name:"dry-run" help:"Print the virt-customize commands without running them."`
	NoNetwork bool   `name:"no-network" help:"Give the guest no network while the tasks run."`
}

// Build = overlay on the parent, virt-customize for the tasks,
// virt-sparsify --in-place, then add as a compressed delta (SPEC §7).
func (c *buildCmd) Run(e *env) error {
	cf, err := guestfs.ParseFile(c.Cangafile)
	if err != nil {
		return err
	}
	h, err := e.openHome()
	if err != nil {
		return err
	}
	opt := repo.BuildOptions{
		Tag:       c.Tag,
		NoNetwork: c.NoNetwork,
		Output:    func(line string) { fmt.Fprintln(e.stderr, line) },
		Notice:    func(s string) { e.notice("%s", s) },
	}
	if runtime.GOOS != "linux" && !c.DryRun {
		// libguestfs boots a Linux appliance with KVM: it exists only
		// there. --dry-run, which only renders the tasks, works anywhere.
		return fmt.Errorf("build runs the tasks with libguestfs, which is Linux-only (this canga is for %s/%s; --dry-run works here)", runtime.GOOS, runtime.GOARCH)
	}
	if c.DryRun {
		out, err := h.BuildDryRun(cf, opt)
		if err != nil {
			return err
		}
		fmt.Fprint(e.stdout, out)
		return nil
	}
	var bar *progress
	opt.Progress = func(done, total int64) {
		if bar == nil {
			bar = e.newProgress("add", total)
		}
		bar.set(done)
	}
	r, res, err := h.Build(e.ctx, cf, opt)
	if bar != nil {
		bar.done(err == nil)
	}
	var te *guestfs.ToolError
	if errors.As(err, &te) && !strings.Contains(err.Error(), "hint:") {
		// Its output, the guest's error with it, has just streamed by.
		return fmt.Errorf("build failed: %s: %v (its output is above)", te.Tool, te.Err)
	}
	if err != nil {
		return err
	}
	e.addResult(r, res)
	return nil
}
