package index

import (
	"fmt"
	"strings"
)

// MaxTagLen is the longest tag accepted, as Docker's tag limit.
const MaxTagLen = 128

// ValidateTag checks a tag name. A tag is 1 to 128 characters from
// [a-z0-9] and "._-/:", starting with a letter or digit, as Docker and
// Cangallo names (ubuntu:16.04, ubuntu/one:16.04, test_image).
//
// Names are resolved tag first, then ID (SPEC §4), so a tag that reads as an
// ID or ID prefix would silently hide images: tags made only of hex digits
// with at least 4 of them (MinPrefix), and tags starting with "sha256:", are
// refused. Shorter hex words ("abc", "42") cannot be prefixes and are fine.
func ValidateTag(tag string) error {
	if why := tagProblem(tag); why != "" {
		return fmt.Errorf("%w %s: %s", ErrInvalidTag, quote(tag), why)
	}
	return nil
}

func tagProblem(tag string) string {
	if tag == "" {
		return "empty"
	}
	if len(tag) > MaxTagLen {
		return fmt.Sprintf("longer than %d characters", MaxTagLen)
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '.' || c == '_' || c == '-' || c == '/' || c == ':':
			if i == 0 {
				return "must start with a lowercase letter or digit"
			}
		case 'A' <= c && c <= 'Z':
			return "uppercase letters are not allowed"
		case c >= 0x80:
			return "non-ASCII characters are not allowed"
		default:
			return fmt.Sprintf("character %q not allowed (use a-z 0-9 . _ - / :)", rune(c))
		}
	}
	if strings.HasPrefix(tag, idPrefix) {
		return "must not start with sha256: (it would read as an image ID)"
	}
	if len(tag) >= MinPrefix && isLowerHex(tag) {
		return "only hex digits: it would read as an image ID prefix"
	}
	return ""
}
