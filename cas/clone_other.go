//go:build !linux

package cas

import "os"

// clone reports that no copy-on-write clone was made: FICLONE is Linux's,
// and elsewhere a blob is copied.
func clone(dst, src *os.File) bool { return false }
