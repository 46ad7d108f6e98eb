package registry

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Scheme starts every registry reference.
const Scheme = "oci://"

// Reference names a repository on a registry, and optionally one manifest
// in it by tag or by digest: oci://HOST[:PORT]/NAME[:TAG|@sha256:HEX].
type Reference struct {
	// Host is HOST[:PORT] as written: "registry.example.com",
	// "127.0.0.1:5000", "[::1]:5000".
	Host string
	// Name is the repository name: lower-case path components separated
	// by slashes, "canga/ubuntu".
	Name string
	// Tag and Digest are both empty (the repository itself: a caller that
	// needs a manifest chooses the default, Docker's "latest") or one of
	// them is set.
	Tag    string
	Digest digest.Digest
}

// The grammar is distribution's (reference/regexp.go), as oras-go and
// Docker use it. The expressions are compiled on first use: every canga
// command starts with this package's init, and most never parse a
// reference.
const nameComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`

var (
	nameRegexp  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^` + nameComponent + `(?:/` + nameComponent + `)*$`) })
	tagRegexp   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[\w][\w.-]{0,127}$`) })
	labelRegexp = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$`) })
)

// maxNameLength is Docker's bound on a whole name (host and path).
const maxNameLength = 255

// ParseReference parses oci://HOST[:PORT]/NAME[:TAG|@sha256:HEX]. Errors
// wrap [ErrInvalidReference] and say what is wrong.
func ParseReference(s string) (Reference, error) {
	bad := func(format string, args ...any) (Reference, error) {
		return Reference{}, fmt.Errorf("%w %q: %s", ErrInvalidReference, s, fmt.Sprintf(format, args...))
	}
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		if scheme, _, found := strings.Cut(s, "://"); found {
			return bad("scheme %q: a registry reference starts with %s", scheme+"://", Scheme)
		}
		return bad("no scheme: a registry reference starts with %s", Scheme)
	}
	host, path, ok := strings.Cut(rest, "/")
	if err := ValidateHost(host); err != nil {
		return bad("%v", err)
	}
	if !ok || path == "" {
		return bad("no repository name after the host")
	}
	ref := Reference{Host: host}
	if name, dgst, ok := strings.Cut(path, "@"); ok {
		if strings.Contains(name, ":") {
			return bad("give a tag or a digest, not both")
		}
		d, err := parseDigest(dgst)
		if err != nil {
			return bad("%v", err)
		}
		ref.Name, ref.Digest = name, d
	} else if i := strings.LastIndexByte(path, ':'); i > strings.LastIndexByte(path, '/') {
		ref.Name, ref.Tag = path[:i], path[i+1:]
		if err := validateTag(ref.Tag); err != nil {
			return bad("%v", err)
		}
	} else {
		ref.Name = path
	}
	if err := ValidateName(ref.Name); err != nil {
		return bad("%v", err)
	}
	if len(ref.Host)+1+len(ref.Name) > maxNameLength {
		return bad("longer than %d characters", maxNameLength)
	}
	return ref, nil
}

// String returns the reference in the form [ParseReference] reads.
func (r Reference) String() string {
	s := Scheme + r.Host + "/" + r.Name
	switch {
	case r.Digest != "":
		s += "@" + r.Digest.String()
	case r.Tag != "":
		s += ":" + r.Tag
	}
	return s
}

// TagOrDigest returns the digest if there is one, else the tag (perhaps
// empty): what [Repository.Resolve] takes.
func (r Reference) TagOrDigest() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// ValidateHost checks HOST[:PORT]: a DNS name or an IPv4 address, or an
// IPv6 address in brackets, and an optional port 1-65535.
func ValidateHost(host string) error {
	if host == "" {
		return fmt.Errorf("no host")
	}
	name, port := host, ""
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return fmt.Errorf("host %q: no closing ]", host)
		}
		addr, err := netip.ParseAddr(host[1:end])
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return fmt.Errorf("host %q: not an IPv6 address in brackets", host)
		}
		rest := host[end+1:]
		if rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return fmt.Errorf("host %q: junk after ]", host)
			}
			port = p
			if port == "" {
				return fmt.Errorf("host %q: empty port", host)
			}
		}
		name = ""
	} else if h, p, ok := strings.Cut(host, ":"); ok {
		name, port = h, p
		if port == "" {
			return fmt.Errorf("host %q: empty port", host)
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
			return fmt.Errorf("host %q: bad port %q", host, port)
		}
	}
	if name == "" {
		if strings.HasPrefix(host, "[") {
			return nil
		}
		return fmt.Errorf("host %q: no host name", host)
	}
	if len(name) > 253 {
		return fmt.Errorf("host %q: name too long", host)
	}
	for label := range strings.SplitSeq(name, ".") {
		if !labelRegexp().MatchString(label) {
			return fmt.Errorf("host %q: not a host name or IPv4 address", host)
		}
	}
	return nil
}

// ValidateName checks a repository name.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty repository name")
	case strings.ToLower(name) != name:
		return fmt.Errorf("repository name %q: must be lower case", name)
	case !nameRegexp().MatchString(name):
		return fmt.Errorf("repository name %q: path components of a-z, 0-9 and single separators . _ __ - between them, joined by /", name)
	}
	return nil
}

func validateTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("empty tag")
	}
	if !tagRegexp().MatchString(tag) {
		return fmt.Errorf("tag %q: up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -", tag)
	}
	return nil
}

func parseDigest(s string) (digest.Digest, error) {
	// Not d.Algorithm(): go-digest panics on a digest without a colon.
	if !strings.HasPrefix(s, string(digest.SHA256)+":") {
		return "", fmt.Errorf("digest %q: want sha256:HEX", s)
	}
	d := digest.Digest(s)
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: want sha256: and 64 lower-case hex digits", s)
	}
	return d, nil
}
