//go:build !unix

package remote

import (
	"io/fs"
	"os"
	"path"
)

// openBeneath opens dir/parts[0]/.../parts[n-1] only if no component below
// dir is a symbolic link and the last is a regular file. Without openat and
// O_NOFOLLOW, os.Root keeps the open inside dir and each component is
// checked with Lstat first (a link made between the check and the open
// can still only lead inside dir).
func openBeneath(dir string, parts []string) (*os.File, fs.FileInfo, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	var li fs.FileInfo
	for i := range parts {
		li, err = root.Lstat(path.Join(parts[:i+1]...))
		if err != nil {
			return nil, nil, err
		}
		if li.Mode()&fs.ModeSymlink != 0 || (i < len(parts)-1 && !li.IsDir()) {
			return nil, nil, &os.PathError{Op: "open", Path: parts[i], Err: fs.ErrNotExist}
		}
	}
	if !li.Mode().IsRegular() {
		return nil, nil, errNotRegular
	}
	f, err := root.Open(path.Join(parts...))
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, errNotRegular
	}
	return f, fi, nil
}
