//go:build !linux

package atomicfile

import "os"

// renameNoReplace renames old to new unless new exists (fs.ErrExist).
// Without Linux's RENAME_NOREPLACE, link-then-unlink does the same: a link
// never replaces its target.
func renameNoReplace(old, new string) error {
	if err := os.Link(old, new); err != nil {
		return err
	}
	return os.Remove(old)
}
