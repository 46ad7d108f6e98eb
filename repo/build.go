package repo

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cangallo/canga/guestfs"
	"github.com/cangallo/canga/index"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// BuildOptions tune [Home.Build].
type BuildOptions struct {
	// Tag names the new image; it overrides the Cangafile's tag.
	Tag string
	// NoNetwork gives the guest no network while the tasks run.
	NoNetwork bool
	// Output hears each line the libguestfs tools print.
	Output func(line string)
	// Notice and Progress are as for [AddOptions], for the add at the end;
	// Notice also hears where the build runs.
	Notice   func(string)
	Progress func(done, total int64)
}

// ErrParentRemote: a build's parent is in a remote's cache, where nothing
// can be added.
var ErrParentRemote = errors.New("repo: the parent is in a remote repository")

// build is a build ready to run: its parent found, its plan made.
type build struct {
	r      *Repo
	ix     *index.Index
	parent digest.Digest
	tag    string
	plan   *guestfs.Plan
	gopts  guestfs.Options
}

func (h *Home) prepareBuild(cf *guestfs.Cangafile, opt BuildOptions) (*build, error) {
	tag := cf.Tag
	if opt.Tag != "" {
		tag = opt.Tag
	}
	if tag != "" {
		if err := h.CheckTag(tag); err != nil {
			return nil, err
		}
	}
	r, ix, parent, err := h.Resolve(cf.Parent)
	if err != nil {
		return nil, fmt.Errorf("parent %s: %w", cf.Parent, err)
	}
	if r.Remote() {
		return nil, fmt.Errorf("%w: %s is in %s: import it into a local repository first", ErrParentRemote, cf.Parent, r.Name())
	}
	plan, err := cf.Plan()
	if err != nil {
		return nil, err
	}
	return &build{r: r, ix: ix, parent: parent, tag: tag, plan: plan, gopts: guestfs.Options{
		NoNetwork: opt.NoNetwork,
		Progress:  opt.Output,
		// The commands and password files live outside the repository:
		// its .tmp/ belongs to gc, which removes what nobody holds.
		TempDir: os.TempDir(),
	}}, nil
}

// BuildDryRun returns, ready to print, the commands a build of cf would
// run; it runs nothing and writes nothing.
func (h *Home) BuildDryRun(cf *guestfs.Cangafile, opt BuildOptions) (string, error) {
	b, err := h.prepareBuild(cf, opt)
	if err != nil {
		return "", err
	}
	return guestfs.DryRun(b.r.store.TempName("build-*.qcow2"), b.plan, b.gopts), nil
}

// Build builds the image cf describes (SPEC §7) and adds it to the
// parent's repository: an overlay on the parent, in the repository's
// .tmp/ (flocked, so that gc leaves it alone while the build runs and
// removes it if canga dies), virt-customize for the tasks,
// virt-sparsify --in-place, then an add as a compressed delta on the
// parent, with the Cangafile in the entry and its passwords redacted.
// Nothing of a failed build enters the repository.
func (h *Home) Build(ctx context.Context, cf *guestfs.Cangafile, opt BuildOptions) (*Repo, *AddResult, error) {
	b, err := h.prepareBuild(cf, opt)
	if err != nil {
		return nil, nil, err
	}
	if err := guestfs.Preflight(b.plan, b.gopts); err != nil {
		return nil, nil, err
	}
	node, err := redactedCangafile(cf.Node())
	if err != nil {
		return nil, nil, err
	}
	tmp, err := b.r.store.CreateTemp("build-*.qcow2")
	if err != nil {
		return nil, nil, err
	}
	defer tmp.Discard()
	if err := b.r.Overlay(b.ix, b.parent, tmp.File); err != nil {
		return nil, nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, nil, err
	}
	if opt.Notice != nil {
		opt.Notice(fmt.Sprintf("building on %s (%s) in %s", index.ShortID(b.parent), cf.Parent, tmp.Name()))
	}
	if err := guestfs.Run(ctx, tmp.Name(), b.plan, b.gopts); err != nil {
		return nil, nil, err
	}
	res, err := b.r.Add(ctx, tmp.Name(), AddOptions{
		Tag:         b.tag,
		Description: cf.Description,
		OS:          cf.OS,
		Parent:      b.parent,
		Cangafile:   node,
		Notice:      opt.Notice,
		Progress:    opt.Progress,
	})
	return b.r, res, err
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
