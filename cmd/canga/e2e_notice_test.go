package main_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// TestStaleSignatureNotice: a command that changes a signed index says the
// signature is now stale; reading does not, and signing again quiets it.
func TestStaleSignatureNotice(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	key := testkit.Keygen(t, dir, "key", "", "-t", "ed25519")
	ok(t, home, "-q", "add", baseQcow2(t), "--tag", "n:1")
	ok(t, home, "sign", "--key", key)
	if r := canga(t, home, "list"); strings.Contains(r.stderr, "signed") {
		t.Errorf("list warns: %s", r.stderr)
	}
	r := canga(t, home, "tag", "n:2", "n:1")
	if r.code != 0 || !strings.Contains(r.stderr, "changed since it was signed") {
		t.Errorf("no stale-signature notice after tag: %s", r)
	}
	ok(t, home, "sign", "--key", key)
	if r := canga(t, home, "tag", "n:2", "n:1"); strings.Contains(r.stderr, "signed") {
		t.Errorf("a tag that changes nothing... warns: %s", r.stderr)
	}
}
