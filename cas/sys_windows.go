package cas

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// noFollow: Windows has no O_NOFOLLOW; symbolic links there need
// privileges to make.
const noFollow = 0

// tryLock takes an exclusive lock on f without blocking (LockFileEx, the
// Windows counterpart of flock); false means someone else holds it.
func tryLock(f *os.File) (bool, error) {
	ol := new(windows.Overlapped)
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, windows.ERROR_LOCK_VIOLATION), errors.Is(err, windows.ERROR_IO_PENDING):
		return false, nil
	default:
		return false, &os.PathError{Op: "LockFileEx", Path: f.Name(), Err: err}
	}
}
