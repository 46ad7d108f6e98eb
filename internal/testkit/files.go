package testkit

import (
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FileDigest hashes a file in the test process: for bulk before-and-after
// comparisons, where an external tool adds nothing.
func FileDigest(t testing.TB, path string) digest.Digest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := digest.SHA256.FromReader(f)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return d
}

// Sha256sum is the digest of a file by coreutils' sha256sum: an oracle
// that shares no code with what is tested.
func Sha256sum(t testing.TB, path string) digest.Digest {
	t.Helper()
	out := Run(t, "sha256sum", path)
	f := strings.Fields(out)
	if len(f) < 1 || len(f[0]) != 64 {
		t.Fatalf("sha256sum %s: %q", path, out)
	}
	return digest.NewDigestFromEncoded(digest.SHA256, f[0])
}

// ReadFile is [os.ReadFile] that fails the test on error.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// WriteFile is [os.WriteFile] that fails the test on error; it returns
// path.
func WriteFile(t testing.TB, path string, data []byte, perm os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	return path
}

// FlipByte inverts every bit of the byte at off of a file, in place. A
// file without the owner's write permission (a blob is 0444) gets it for
// the change and its own mode back after.
func FlipByte(t testing.TB, path string, off int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode&0o200 == 0 {
		if err := os.Chmod(path, mode|0o200); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.Chmod(path, mode); err != nil {
				t.Error(err)
			}
		}()
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read byte %d of %s: %v", off, path, err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
