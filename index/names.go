package index

import (
	"errors"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Lookup resolves a name inside this index (SPEC §4): an exact tag, then a
// full image ID (with or without "sha256:"), then a unique prefix of at
// least [MinPrefix] hex digits (with or without "sha256:"). It fails with a
// [*NotFoundError] or an [*AmbiguousError] listing the candidates.
func (x *Index) Lookup(name string) (digest.Digest, error) {
	if id, ok := x.Tags[name]; ok {
		return id, nil
	}
	hex := strings.TrimPrefix(name, idPrefix)
	if len(hex) >= MinPrefix && isLowerHex(hex) {
		if len(hex) == hexLen {
			id := digest.Digest(idPrefix + hex)
			if x.Images[id] != nil {
				return id, nil
			}
			return "", &NotFoundError{What: "image", Name: name}
		}
		var found []digest.Digest
		for id := range x.Images {
			if strings.HasPrefix(string(id), idPrefix+hex) {
				found = append(found, id)
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
		default:
			slices.Sort(found)
			return "", &AmbiguousError{Name: name, Candidates: found}
		}
	}
	return "", &NotFoundError{What: "image", Name: name}
}

// IndexFunc returns the index of a configured repository. A nil index
// with a nil error means the repository has none yet (a remote never
// fetched) and is skipped; an error stops the resolution.
type IndexFunc func(repo string) (*Index, error)

// Resolve finds an image across repositories (SPEC §4). repos lists the
// configured repositories in search order, the default first (see
// [github.com/cangallo/canga/config.Config.SearchOrder]).
//
//   - "REPO:NAME" where REPO is in repos looks NAME up in REPO only. If
//     REPO has no such image, the whole string is then tried as a name in
//     every repository, so a tag such as "default:latest" still works.
//     Otherwise the whole string is the name: "ubuntu:16.04" is a tag.
//   - A name is looked up with [Index.Lookup] in each repository in
//     order; the first repository where it resolves wins, so a tag in the
//     default repository beats an ID prefix in another, and an ambiguous
//     prefix in an earlier repository is an error even if a later one
//     would match.
func Resolve(name string, repos []string, get IndexFunc) (repo string, id digest.Digest, err error) {
	if r, rest, ok := strings.Cut(name, ":"); ok && slices.Contains(repos, r) {
		id, err := lookupIn(r, rest, get)
		if err == nil {
			return r, id, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return "", "", err
		}
	}
	for _, r := range repos {
		id, err := lookupIn(r, name, get)
		if err == nil {
			return r, id, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return "", "", err
		}
	}
	return "", "", &NotFoundError{What: "image", Name: name}
}

func lookupIn(repo, name string, get IndexFunc) (digest.Digest, error) {
	x, err := get(repo)
	if err != nil {
		return "", err
	}
	if x == nil {
		return "", &NotFoundError{What: "image", Name: name, Repo: repo}
	}
	id, err := x.Lookup(name)
	if err != nil {
		var amb *AmbiguousError
		if errors.As(err, &amb) {
			amb.Repo = repo
		}
		var nf *NotFoundError
		if errors.As(err, &nf) {
			nf.Repo = repo
		}
		return "", err
	}
	return id, nil
}
