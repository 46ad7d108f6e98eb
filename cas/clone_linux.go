package cas

import (
	"os"

	"golang.org/x/sys/unix"
)

// clone makes dst a copy-on-write clone of src, and reports whether the
// file system could. dst is empty, so a failed attempt leaves nothing to
// undo.
func clone(dst, src *os.File) bool {
	err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	if err != nil {
		// EXDEV, EOPNOTSUPP, EINVAL, ENOTTY...: no clone here; copy.
		return false
	}
	return true
}
