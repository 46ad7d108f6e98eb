package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cangallo/canga/guestfs"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/repo"
	"gopkg.in/yaml.v3"
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
	tag := cf.Tag
	if c.Tag != "" {
		tag = c.Tag
	}
	h, err := e.openHome()
	if err != nil {
		return err
	}
	if tag != "" {
		if err := h.CheckTag(tag); err != nil {
			return err
		}
	}
	r, ix, parent, err := h.Resolve(cf.Parent)
	if err != nil {
		return fmt.Errorf("parent %s: %w", cf.Parent, err)
	}
	if r.Conf.Remote() {
		return fmt.Errorf("parent %s is in remote repository %s: canga import it into a local repository first", cf.Parent, r.Name())
	}
	plan, err := cf.Plan()
	if err != nil {
		return err
	}
	opts := guestfs.Options{
		NoNetwork: c.NoNetwork,
		Progress:  func(line string) { fmt.Fprintln(e.stderr, line) },
		// The commands and password files live outside the repository:
		// its .tmp/ belongs to gc, which removes what nobody holds.
		TempDir: os.TempDir(),
	}
	if c.DryRun {
		fmt.Fprint(e.stdout, guestfs.DryRun(filepath.Join(r.Dir(), ".tmp", "build-XXXXXX.qcow2"), plan, opts))
		return nil
	}
	if err := guestfs.Preflight(plan, opts); err != nil {
		return err
	}

	// The overlay lives in the repository's .tmp/, flocked, so that gc
	// leaves it alone while the build runs and removes it if canga dies.
	tmp, err := r.Store.CreateTemp("build-*.qcow2")
	if err != nil {
		return err
	}
	defer tmp.Discard()
	if err := r.Overlay(ix, parent, tmp.File); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	e.notice("building on %s (%s) in %s", index.ShortID(parent), cf.Parent, tmp.Name())
	if err := guestfs.Run(e.ctx, tmp.Name(), plan, opts); err != nil {
		var te *guestfs.ToolError
		if errors.As(err, &te) && !strings.Contains(err.Error(), "hint:") {
			// Its output, the guest's error with it, has just streamed by.
			return fmt.Errorf("build failed: %s: %v (its output is above)", te.Tool, te.Err)
		}
		return err
	}
	node, err := redactedCangafile(cf.Node())
	if err != nil {
		return err
	}
	return e.add(r, tmp.Name(), repo.AddOptions{
		Tag:         tag,
		Description: cf.Description,
		OS:          cf.OS,
		Parent:      parent,
		Cangafile:   node,
		Notice:      func(s string) { e.notice("%s", s) },
	})
}

// redactedCangafile returns the Cangafile's mapping for the index entry,
// with passwords replaced: index.yaml is published and signed.
func redactedCangafile(doc *yaml.Node) (*yaml.Node, error) {
	if doc == nil || doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("cangafile: not a YAML document")
	}
	var walk func(n *yaml.Node) *yaml.Node
	walk = func(n *yaml.Node) *yaml.Node {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias // a password may hide behind an alias
		}
		c := *n
		c.Anchor = ""
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, k := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 1 && n.Content[i-1].Value == "password" && k.Kind != yaml.MappingNode {
				c.Content[i] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "<redacted>"}
				continue
			}
			c.Content[i] = walk(k)
		}
		return &c
	}
	return walk(doc.Content[0]), nil
}
