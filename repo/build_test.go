package repo

import (
	"strings"
	"testing"

	"github.com/cangallo/canga/guestfs"
	"go.yaml.in/yaml/v3"
)

// TestRedactedCangafile: passwords never reach index.yaml, which is
// published and signed, however the Cangafile writes them; the rest of
// the Cangafile is kept as given. No libguestfs needed.
func TestRedactedCangafile(t *testing.T) {
	doc := `parent: base:1
description: with secrets
tasks:
  - run: echo hello
  - password: {user: root, password: &pw hunter2-root}
  - password: {user: carol, password: *pw}
  - password:
      user: alice
      password: "hunter2-alice"
  - password: {user: bob, disabled: true}
  - change: {file: /etc/x, regexp: 'password=.*', text: 'password=set-by-cangafile'}
`
	cf, err := guestfs.Parse([]byte(doc), t.TempDir())
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	n, err := redactedCangafile(cf.Node())
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, secret := range []string{"hunter2-root", "hunter2-alice"} {
		if strings.Contains(s, secret) {
			t.Errorf("%s is in the stored Cangafile:\n%s", secret, s)
		}
	}
	if strings.Count(s, "password: <redacted>") != 3 {
		t.Errorf("want 3 redacted passwords:\n%s", s)
	}
	for _, kept := range []string{"echo hello", "disabled: true", "user: alice", "password=set-by-cangafile", "description: with secrets"} {
		if !strings.Contains(s, kept) {
			t.Errorf("%q is missing from the stored Cangafile:\n%s", kept, s)
		}
	}
	if strings.Contains(s, "&") || strings.Contains(s, "*pw") {
		t.Errorf("anchors and aliases must be expanded:\n%s", s)
	}
	if _, err := redactedCangafile(nil); err == nil {
		t.Error("a nil document was accepted")
	}
}
