package main

// The documents --json prints (docs/json.md describes them). Each is one
// JSON object with "version": the schema version, 1. A new key may be
// added within a version; a key is removed or changes meaning only with a
// new version.

import (
	"errors"
	"fmt"

	"github.com/cangallo/canga/repo"
	"github.com/opencontainers/go-digest"
)

const jsonVersion = 1

// listDoc is list --json.
type listDoc struct {
	Version int        `json:"version"`
	Images  []listItem `json:"images"`
}

// registryListDoc is list oci://HOST/NAME --json.
type registryListDoc struct {
	Version    int                `json:"version"`
	Repository string             `json:"repository"`
	Tags       []repo.RegistryTag `json:"tags"`
}

// digestDoc is digest --json: one item per FILE, in order, with id or
// error.
type digestDoc struct {
	Version int          `json:"version"`
	Images  []digestItem `json:"images"`
}

type digestItem struct {
	File  string        `json:"file"`
	ID    digest.Digest `json:"id,omitempty"`
	Error string        `json:"error,omitempty"`
}

// fsckDoc is fsck --json: the report's keys as they always were, with
// empty lists as [] rather than null.
type fsckDoc struct {
	Version int    `json:"version"`
	Repo    string `json:"repo"`
	*repo.FsckReport
}

func newFsckDoc(r *repo.Repo, rep *repo.FsckReport) fsckDoc {
	if rep.Unused == nil {
		rep.Unused = []string{}
	}
	if rep.Faults == nil {
		rep.Faults = []repo.Fault{}
	}
	return fsckDoc{Version: jsonVersion, Repo: r.Name(), FsckReport: rep}
}

// verifyDoc is verify --json.
type verifyDoc struct {
	Version        int    `json:"version"`
	Repo           string `json:"repo"`
	Valid          bool   `json:"valid"`
	Principal      string `json:"principal,omitempty"`
	Fingerprint    string `json:"fingerprint,omitempty"`
	AllowedSigners string `json:"allowed-signers,omitempty"`
	Error          string `json:"error,omitempty"`
}

// writeVerifyDoc prints the outcome of a verify, a failed one too (exit
// status 1, the error said on stderr as well).
func writeVerifyDoc(e *env, r *repo.Repo, s *repo.Signature, verr error) error {
	doc := verifyDoc{Version: jsonVersion, Repo: r.Name()}
	if verr != nil {
		doc.Error = verr.Error()
	} else {
		doc.Valid = true
		doc.Principal, doc.Fingerprint, doc.AllowedSigners = s.Principal, s.Fingerprint, s.AllowedSigners
	}
	if err := writeJSON(e, doc); err != nil {
		return errors.Join(verr, err)
	}
	if verr != nil {
		return &exitError{code: 1, err: fmt.Errorf("%w", verr)}
	}
	return nil
}
