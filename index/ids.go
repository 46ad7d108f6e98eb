package index

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

const (
	idPrefix = "sha256:"
	hexLen   = 64
	// MinPrefix is the shortest ID prefix accepted as a name (SPEC §1).
	MinPrefix = 4
	// shortLen is the length of a short ID, as in the seed's list.
	shortLen = 16
)

// ParseID checks that s is an image ID or blob digest as canga writes
// them: "sha256:" followed by exactly 64 lowercase hex digits. Nothing else
// is accepted, so a digest from a remote index can be used as a file name.
func ParseID(s string) (digest.Digest, error) {
	if why := idProblem(s); why != "" {
		return "", fmt.Errorf("%w %s: %s", ErrInvalidID, quote(s), why)
	}
	return digest.Digest(s), nil
}

// idProblem says what is wrong with s as an ID, or "" when it is fine.
func idProblem(s string) string {
	if s == "" {
		return "empty"
	}
	hex, ok := strings.CutPrefix(s, idPrefix)
	if !ok {
		if i := strings.IndexByte(s, ':'); i > 0 && isAlnum(s[:i]) {
			return fmt.Sprintf("algorithm %s not supported, want sha256", quote(s[:i]))
		}
		if isLowerHex(s) && len(s) == hexLen {
			return "missing sha256: prefix"
		}
		return "want sha256: followed by 64 lowercase hex digits"
	}
	return hexProblem(hex)
}

// hexProblem says what is wrong with s as the hex part of an ID.
func hexProblem(s string) string {
	if !isLowerHex(s) {
		return "want 64 lowercase hex digits after sha256:"
	}
	if len(s) != hexLen {
		return fmt.Sprintf("want 64 hex digits, have %d", len(s))
	}
	return ""
}

// isFullHex reports whether s is a bare 64-digit lowercase hex ID.
func isFullHex(s string) bool { return len(s) == hexLen && isLowerHex(s) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if hexVal[s[i]] == 0xff {
			return false
		}
	}
	return true
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// ShortID is the first 16 hex digits of an ID, the form the seed's list
// prints. Anything that is not a sha256 digest comes back unchanged.
func ShortID(id digest.Digest) string {
	hex, ok := strings.CutPrefix(string(id), idPrefix)
	if !ok || len(hex) < shortLen {
		return string(id)
	}
	return hex[:shortLen]
}

// LegacyFileName is the name of an image's file in a Cangallo (version 0)
// repository: HEX.qcow2 beside index.yaml, named by the image ID.
func LegacyFileName(id digest.Digest) string {
	return strings.TrimPrefix(string(id), idPrefix) + ".qcow2"
}
