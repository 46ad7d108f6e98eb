package testkit

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The mount helpers need root (CAP_SYS_ADMIN), as the tests have in CI:
// without it they fail the test rather than skip it, because a full or
// read-only file system is a case the tests must cover, and permission
// bits alone cannot make a directory read-only for root.

// Tmpfs mounts a tmpfs of size (mount's size= option: "16m") on a new
// temporary directory, unmounted when the test ends, and returns it.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount -t tmpfs -o size=%s tmpfs %s: %v (this test needs root and CAP_SYS_ADMIN, as in CI)", size, dir, err)
	}
	// Registered after TempDir's cleanup, so it runs before it.
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	return dir
}

// RemountReadOnly makes a mount point, one that Tmpfs returned, read-only.
func RemountReadOnly(t testing.TB, dir string) {
	t.Helper()
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("mount -o remount,ro %s: %v", dir, err)
	}
}
