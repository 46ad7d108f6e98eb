package cas

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

const (
	sha256Prefix = "sha256:"
	hexLen       = 64
)

// ValidateDigest accepts exactly "sha256:" followed by 64 lowercase hex
// digits. Digests come from index files and servers, and the hex part becomes
// a file name, so anything looser ("sha256:../../etc/passwd", uppercase, other
// algorithms) is refused before the file system is touched.
func ValidateDigest(d digest.Digest) error {
	s := string(d)
	if !strings.HasPrefix(s, sha256Prefix) || !isHex64(s[len(sha256Prefix):]) {
		return fmt.Errorf("%w %q", ErrInvalidDigest, truncate(s, 100))
	}
	return nil
}

func isHex64(s string) bool {
	if len(s) != hexLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// truncate keeps error messages short when the bad input is huge.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
