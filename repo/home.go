package repo

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cangallo/canga/config"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/remote"
	"github.com/opencontainers/go-digest"
)

// Home is CANGA_HOME: the configuration and its repositories.
type Home struct {
	Config *config.Config
	// HTTP is the client for remotes; nil means one that names itself
	// UserAgent.
	HTTP *remote.Client
	// UserAgent names canga to servers ("canga/VERSION").
	UserAgent string

	repos map[string]*Repo
}

func (h *Home) httpClient() *remote.Client {
	if h.HTTP == nil {
		h.HTTP = remote.NewClient("")
		if h.UserAgent != "" {
			h.HTTP.UserAgent = h.UserAgent
		}
	}
	return h.HTTP
}

// OpenHome loads (creating on first use) the configuration of home, which
// is resolved as by [config.Home].
func OpenHome(home string) (*Home, error) {
	cfg, err := config.Load(home)
	if err != nil {
		return nil, err
	}
	return &Home{Config: cfg, repos: map[string]*Repo{}}, nil
}

// Repo opens a configured repository by name; "" is the default one.
func (h *Home) Repo(name string) (*Repo, error) {
	conf, err := h.Config.Repo(name)
	if err != nil {
		return nil, err
	}
	if r, ok := h.repos[conf.Name]; ok {
		return r, nil
	}
	r, err := Open(conf)
	if err != nil {
		return nil, err
	}
	r.h = h
	h.repos[conf.Name] = r
	return r, nil
}

// Opened returns the repositories this Home has opened so far.
func (h *Home) Opened() []*Repo {
	var out []*Repo
	for _, rc := range h.Config.Repos {
		if r, ok := h.repos[rc.Name]; ok {
			out = append(out, r)
		}
	}
	return out
}

// Resolve finds an image by name across the repositories (SPEC §4), in
// the configuration's search order, and returns its repository, index
// and ID.
func (h *Home) Resolve(name string) (*Repo, *index.Index, digest.Digest, error) {
	indexes := map[string]*index.Index{}
	get := func(repo string) (*index.Index, error) {
		if ix, ok := indexes[repo]; ok {
			return ix, nil
		}
		r, err := h.Repo(repo)
		if err != nil {
			return nil, err
		}
		ix, err := r.Index()
		if err != nil {
			return nil, err
		}
		indexes[repo] = ix
		return ix, nil
	}
	repoName, id, err := index.Resolve(name, h.Config.SearchOrder(), get)
	if err != nil {
		return nil, nil, "", err
	}
	r, err := h.Repo(repoName)
	if err != nil {
		return nil, nil, "", err
	}
	return r, indexes[repoName], id, nil
}

// ResolveIn finds an image by name in one repository only.
func (h *Home) ResolveIn(r *Repo, name string) (*index.Index, digest.Digest, error) {
	ix, err := r.Index()
	if err != nil {
		return nil, "", err
	}
	if rn, rest, ok := strings.Cut(name, ":"); ok && rn == r.Name() {
		if id, err := ix.Lookup(rest); err == nil {
			return ix, id, nil
		}
	}
	id, err := ix.Lookup(name)
	if err != nil {
		return nil, "", fmt.Errorf("repository %s: %w", r.Name(), err)
	}
	return ix, id, nil
}

// CheckTag refuses tags that [Home.Resolve] would read as REPO:NAME: a
// tag beginning with the name of a configured repository and a colon
// could never be found by its name.
func (h *Home) CheckTag(tag string) error {
	if err := index.ValidateTag(tag); err != nil {
		return err
	}
	if r, _, ok := strings.Cut(tag, ":"); ok {
		for _, rc := range h.Config.Repos {
			if rc.Name == r {
				return fmt.Errorf("tag %q: %q is a configured repository, so the tag would read as an image in it; choose another name", tag, r)
			}
		}
	}
	for _, rc := range h.Config.Repos {
		if rc.Name == tag {
			return errors.New("tag " + tag + ": is the name of a configured repository")
		}
	}
	return nil
}

// Remotes are the names of the configured remotes, in file order.
func (h *Home) Remotes() []string {
	var names []string
	for _, rc := range h.Config.Repos {
		if rc.Remote() {
			names = append(names, rc.Name)
		}
	}
	return names
}

// DeleteTag removes a tag from the first local repository, in search
// order, that has it; "REPO:TAG" names the repository. It returns the
// repository and the image the tag pointed at.
func (h *Home) DeleteTag(ctx context.Context, name string) (*Repo, digest.Digest, error) {
	tag, names := name, h.Config.SearchOrder()
	if rn, rest, ok := strings.Cut(name, ":"); ok && slices.Contains(names, rn) {
		tag, names = rest, []string{rn}
	}
	for _, rn := range names {
		r, err := h.Repo(rn)
		if err != nil {
			return nil, "", err
		}
		if r.Remote() {
			continue
		}
		ix, err := r.Index()
		if err != nil {
			return nil, "", err
		}
		if _, ok := ix.Tags[tag]; !ok {
			continue
		}
		id, err := r.DeleteTag(ctx, tag)
		return r, id, err
	}
	return nil, "", &index.NotFoundError{What: "tag", Name: name}
}

// Pull downloads image id of r, a remote whose cached index is ix, with
// its ancestors, into r's cache ([Repo.Copy] from the remote's web
// server). An image of a local repository has nothing to pull.
func (h *Home) Pull(ctx context.Context, r *Repo, ix *index.Index, id digest.Digest, opt CopyOptions) (*CopyResult, error) {
	if !r.Remote() {
		return &CopyResult{}, nil
	}
	src, err := r.remoteSource()
	if err != nil {
		return nil, err
	}
	return r.Copy(ctx, src, ix, id, opt)
}

// Import copies image id of src (whose index is six), with its ancestors,
// into the local repository dst, pulling it into src's cache first when
// src is a remote ([Repo.Copy] both times).
func (h *Home) Import(ctx context.Context, src *Repo, six *index.Index, id digest.Digest, dst *Repo, opt CopyOptions) (*CopyResult, error) {
	if dst.Remote() {
		return nil, fmt.Errorf("%w: %s: import into a local repository", ErrRemote, dst.Name())
	}
	if src == dst {
		return &CopyResult{}, nil
	}
	if _, err := h.Pull(ctx, src, six, id, opt); err != nil {
		return nil, err
	}
	// The destination's own progress: a copy on this machine.
	return dst.Copy(ctx, src.AsSource(), six, id, opt)
}

// NBDSocket is where canga nbd serves image id unless told otherwise, and
// where an overlay made by [Repo.OverlayLazy] looks for it:
// HOME/run/HEX16.sock (a unix socket name must stay short).
func (h *Home) NBDSocket(id digest.Digest) string {
	return filepath.Join(h.Config.Home, "run", index.ShortID(id)+".sock")
}
