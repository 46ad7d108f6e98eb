package index

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cangallo/canga/internal/yamlnode"
	"github.com/opencontainers/go-digest"
)

// Sentinel errors. Every error this package returns wraps one of them, so
// callers branch with [errors.Is].
var (
	// ErrInvalid: an index document, or an in-memory index about to be
	// written, breaks the rules of SPEC §2.
	ErrInvalid = errors.New("index: invalid index")
	// ErrUnsupportedVersion: the index declares a version this canga does
	// not read. It comes wrapped together with ErrInvalid.
	ErrUnsupportedVersion = errors.New("index: unsupported index version")
	// ErrInvalidID: a string is not an image ID or blob digest of the form
	// sha256:<64 lowercase hex>.
	ErrInvalidID = errors.New("index: invalid image ID")
	// ErrInvalidTag: a tag breaks the rules of [ValidateTag].
	ErrInvalidTag = errors.New("index: invalid tag")
	// ErrNotFound: no image, tag or repository by that name.
	ErrNotFound = errors.New("index: not found")
	// ErrAmbiguous: an ID prefix matches more than one image.
	ErrAmbiguous = errors.New("index: ambiguous image name")
	// ErrHasChildren: an image cannot be removed while other images use it
	// as their parent.
	ErrHasChildren = errors.New("index: image has children")
)

// ParseError reports why [Parse] rejected a document, and where.
type ParseError struct {
	Line int    // 1-based line in the document, 0 when unknown
	Path string // key path, e.g. images["sha256:…"].parent; empty for the document
	Msg  string
	Err  error // a more specific sentinel (ErrInvalidID, ErrInvalidTag, ErrUnsupportedVersion), or nil
}

func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString("index: ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap makes a ParseError match both [ErrInvalid] and its specific cause.
func (e *ParseError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalid}
	}
	return []error{ErrInvalid, e.Err}
}

// NotFoundError is returned when a name resolves to nothing. It matches
// [ErrNotFound].
type NotFoundError struct {
	What string // "image", "tag" or "repository"
	Name string
	Repo string // the repository searched, empty when every repository was
}

func (e *NotFoundError) Error() string {
	what := e.What
	if what == "" {
		what = "image"
	}
	if e.Repo != "" {
		return fmt.Sprintf("index: no %s %s in repository %s", what, quote(e.Name), e.Repo)
	}
	return fmt.Sprintf("index: no %s %s", what, quote(e.Name))
}

func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// AmbiguousError is returned when an ID prefix matches several images. It
// matches [ErrAmbiguous] and lists every candidate.
type AmbiguousError struct {
	Name       string
	Repo       string // empty for a lookup in a single index
	Candidates []digest.Digest
}

func (e *AmbiguousError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "index: ambiguous image name %s", quote(e.Name))
	if e.Repo != "" {
		fmt.Fprintf(&b, " in repository %s", e.Repo)
	}
	b.WriteString(": matches ")
	for i, c := range e.Candidates {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.String())
	}
	return b.String()
}

func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }

// HasChildrenError is returned by [Index.Remove] without recursion when the
// image is the parent of others. It matches [ErrHasChildren].
type HasChildrenError struct {
	ID       digest.Digest
	Children []digest.Digest
}

func (e *HasChildrenError) Error() string {
	short := make([]string, len(e.Children))
	for i, c := range e.Children {
		short[i] = ShortID(c)
	}
	return fmt.Sprintf("index: image %s has children (%s); remove them first or remove recursively",
		ShortID(e.ID), strings.Join(short, ", "))
}

func (e *HasChildrenError) Is(target error) bool { return target == ErrHasChildren }

// quote quotes s for an error message, cut short: the string may come from
// a hostile document and need not be echoed in full.
func quote(s string) string { return yamlnode.Quote(s) }
