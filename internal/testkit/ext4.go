package testkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Ext4Disk makes a raw ext4 disk of size at disk holding a copy of the
// tree root, with mkfs.ext4 -d. opts come first (-L LABEL, -U UUID,
// -E root_owner=0:0).
func Ext4Disk(t testing.TB, disk, size, root string, opts ...string) {
	t.Helper()
	Run(t, "mkfs.ext4", append(append([]string{"-q", "-F"}, opts...), "-d", root, disk, size)...)
}

// Ext4 reads the files of a raw ext4 disk with debugfs: an oracle that is
// neither canga nor libguestfs.
type Ext4 struct{ Raw string }

// debugfs runs one request on a path. debugfs exits 0 whether or not the
// path exists; what it could not find, it says on standard error.
func (d Ext4) debugfs(t testing.TB, request, path string) (string, bool) {
	t.Helper()
	out, code, stderr := RunCode(t, "debugfs", "-R", request+` "`+path+`"`, d.Raw)
	if code != 0 {
		t.Fatalf("debugfs -R '%s %s' %s: exit %d\n%s", request, path, d.Raw, code, stderr)
	}
	if strings.Contains(stderr, "File not found") {
		return "", false
	}
	return out, true
}

// Read returns the content of a file of the disk, and false when there is
// no such file.
func (d Ext4) Read(t testing.TB, path string) (string, bool) {
	t.Helper()
	return d.debugfs(t, "cat", path)
}

// Exists reports whether the disk has path (a file, a directory, ...).
func (d Ext4) Exists(t testing.TB, path string) bool {
	t.Helper()
	_, ok := d.debugfs(t, "stat", path)
	return ok
}

// File requires the file at path to hold want.
func (d Ext4) File(t testing.TB, path, want string) {
	t.Helper()
	got, ok := d.Read(t, path)
	switch {
	case !ok:
		t.Errorf("guest %s: missing, want %q", path, want)
	case got != want:
		t.Errorf("guest %s = %q, want %q", path, got, want)
	}
}

// Absent requires the disk to have nothing at path.
func (d Ext4) Absent(t testing.TB, path string) {
	t.Helper()
	if d.Exists(t, path) {
		t.Errorf("guest %s exists, want it absent", path)
	}
}

// CryptMatches checks a crypt(3) hash, as /etc/shadow holds it, against a
// password with the host's crypt, through perl.
func CryptMatches(t testing.TB, password, hash string) bool {
	t.Helper()
	out := Run(t, "perl", "-e", `print crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? "match" : "differ"`, password, hash)
	return out == "match"
}

// GuestName is the file name of the test guest in the cache.
const GuestName = "guestfs-bookworm-minbase-v1.qcow2"

// debootstrapTimeout bounds the guest's debootstrap, which downloads from
// the Debian mirror (25 s to 5 minutes have been seen).
const debootstrapTimeout = 30 * time.Minute

// DebianGuest returns the test guest of the libguestfs tests, building it
// on first use: a `debootstrap --variant=minbase bookworm` tree, with an
// fstab and a hostname so that inspection sees an installed system and a
// motd to delete, in a 1 GiB ext4 labelled canga-root without a partition
// table, as a compressed qcow2 (about 210 MiB) of mode 0444. It is kept in
// $CANGA_TEST_CACHE or ~/.cache/canga-test; $CANGA_DEBIAN_MIRROR replaces
// deb.debian.org. Building it needs root and debootstrap.
func DebianGuest(t testing.TB) string {
	t.Helper()
	cache := os.Getenv("CANGA_TEST_CACHE")
	if cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(dir, "canga-test")
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cache, GuestName)
	if _, err := os.Stat(path); err == nil {
		return path
	}
	// go test runs packages (and these tests) at once: the lock keeps two
	// of them from building the guest together.
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatalf("lock %s: %v", lock.Name(), err)
	}
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the test guest %s is missing and building it needs root (debootstrap): run these tests once as root", path)
	}
	Need(t, "debootstrap", "mkfs.ext4", "qemu-img")
	start := time.Now()
	work := t.TempDir()
	root := filepath.Join(work, "root")
	mirror := "http://deb.debian.org/debian"
	if m := os.Getenv("CANGA_DEBIAN_MIRROR"); m != "" {
		mirror = m
	}
	if err := runErr(debootstrapTimeout, "debootstrap", "--variant=minbase", "bookworm", root, mirror); err != nil {
		t.Fatal(err)
	}
	WriteFile(t, filepath.Join(root, "etc/fstab"), []byte("LABEL=canga-root / ext4 errors=remount-ro 0 1\n"), 0o644)
	WriteFile(t, filepath.Join(root, "etc/hostname"), []byte("canga-test\n"), 0o644)
	WriteFile(t, filepath.Join(root, "etc/motd"), []byte("motd to delete\n"), 0o644)
	raw := filepath.Join(work, "disk.raw")
	Ext4Disk(t, raw, "1G", root, "-L", "canga-root")
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	defer os.Remove(tmp)
	Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", raw, tmp)
	if err := os.Remove(raw); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		t.Fatal(err)
	}
	// A link never replaces a guest that another test is already using.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	t.Logf("built the test guest in %v: %s", time.Since(start).Round(time.Second), path)
	return path
}
