package guestfs

// The integration test boots the real libguestfs appliance on a small Debian
// guest. It runs only with CANGA_GUESTFS_TEST=1 and needs libguestfs-tools,
// linux-image-amd64, qemu-utils, e2fsprogs (debugfs) and, the first time,
// debootstrap, root and the Debian mirror: the guest (a `debootstrap
// --variant=minbase bookworm` root in a 1 GiB ext4 without a partition
// table, about 210 MiB as compressed qcow2) is built once and kept in
// $CANGA_TEST_CACHE or ~/.cache/canga-test.
//
// Timing on the 2-core build host, where nested KVM is unusable so the
// appliance runs under TCG: debootstrap took 25 s once and 5 min another
// time (mirror speed), the rest of the guest build a few seconds. On an idle
// host the build test's Run took 63 s (virt-customize 42 s, of which 24 s is
// booting and inspecting, and virt-sparsify 21 s) and each failure case
// 25-40 s: about 2 min in all with the guest cached. On a loaded host the
// same took 8 min: run with -timeout 30m. With working KVM it is several
// times faster.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

func integration(t *testing.T) {
	t.Helper()
	if os.Getenv("CANGA_GUESTFS_TEST") != "1" {
		t.Skip("set CANGA_GUESTFS_TEST=1 to boot libguestfs (a few minutes; see integration_test.go)")
	}
}

// tcgEnv forces TCG for the appliance. KVM here can fail at once (nested
// KVM without what `-cpu max` needs: MSR 0x10a) or, worse, start qemu and
// never run the guest kernel (seen here: stuck after "Booting from ROM",
// where a 3-second probe called KVM fine). Run's launch watchdog recovers
// from both, after DefaultLaunchTimeout; tests do not wait for it.
func tcgEnv(t *testing.T) []string {
	t.Helper()
	if os.Getenv("LIBGUESTFS_BACKEND_SETTINGS") != "" {
		return nil
	}
	return []string{"LIBGUESTFS_BACKEND_SETTINGS=force_tcg"}
}

func newGuestOverlay(t *testing.T, base string) string {
	t.Helper()
	return testkit.QemuCreate(t, filepath.Join(t.TempDir(), "overlay.qcow2"), "", "-b", base, "-F", "qcow2")
}

const integrationCangafile = `parent: test-base
description: canga guestfs integration test ☃
files:
  - context /opt
run:
  - printf '%s\n' 'PermitRootLogin yes' '#PermitRootLogin prohibit-password' 'UsePAM yes' 'path=/old/dir' 'naïve café' > /etc/canga.conf
tasks:
  - copy: {src: my file.txt, dest: /opt/with space}
  - run: |
      mkdir -p /out
      echo "double" 'single' $(echo subst) ${CANGA_UNSET:-dflt} > /out/quotes
      printf '%s|' a\\b 'c\d' "e\\f" > /out/backslashes
      echo 'hash # kept' >> /out/quotes # a comment
      # a comment line
      printf '%s ' one \
        two \
        three > /out/continued
      echo Ünïcödé ☃ > /out/unicode
      echo even\\
  - run:
    - |
      for i in 1 2 3; do
        echo "line $i"
      done > /out/script
    - "echo a > /out/inject\nrun-command touch /pwned || true"
  - change: {file: /etc/canga.conf, regexp: '^#?PermitRootLogin.*', text: 'PermitRootLogin no'}
  - change: {file: /etc/canga.conf, regexp: '^path=/old/.*$', text: 'path=/new/a & \1 $1 @x "q'' \\ é'}
  - change: {file: /etc/canga.conf, regexp: 'café|naïve', text: '☃'}
  - delete: /etc/motd
  - delete: /opt/context/remove-*
  - password: {user: root, password: 'pa:ss w\ord'}
  - password: {user: nobody, disabled: true}
`

func TestIntegrationBuild(t *testing.T) {
	integration(t)
	base := testkit.DebianGuest(t)
	env := tcgEnv(t)

	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "context"), 0o755); err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, filepath.Join(dir, "context", "hello.txt"), []byte("hello\n"), 0o644)
	testkit.WriteFile(t, filepath.Join(dir, "context", "remove-me"), []byte("gone\n"), 0o644)
	testkit.WriteFile(t, filepath.Join(dir, "my file.txt"), []byte("spaces\n"), 0o644)
	cangafile := filepath.Join(dir, "Cangafile")
	testkit.WriteFile(t, cangafile, []byte(integrationCangafile), 0o644)
	c, err := ParseFile(cangafile)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := c.Plan()
	if err != nil {
		t.Fatal(err)
	}
	overlay := newGuestOverlay(t, base)
	var progress lines
	start := time.Now()
	err = Run(context.Background(), overlay, plan, Options{Progress: func(l string) {
		progress.add(l)
		t.Log(l)
	}, Env: env})
	t.Logf("Run (virt-customize + virt-sparsify) took %v", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	out := strings.Join(progress.get(), "\n")
	for _, want := range []string{"Running: printf '%s ' one \\", "Editing: /etc/canga.conf", "Sparsify in-place operation completed"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress does not show %q", want)
		}
	}

	g := testkit.Ext4{Raw: testkit.QemuRaw(t, overlay)}
	g.File(t, "/opt/context/hello.txt", "hello\n")
	g.Absent(t, "/opt/context/remove-me")
	g.File(t, "/opt/with space/my file.txt", "spaces\n")
	g.File(t, "/out/quotes", "double single subst dflt\nhash # kept\n")
	g.File(t, "/out/backslashes", `a\b|c\d|e\f|`)
	g.File(t, "/out/continued", "one two three ")
	g.File(t, "/out/unicode", "Ünïcödé ☃\n")
	g.File(t, "/out/script", "line 1\nline 2\nline 3\n")
	g.File(t, "/out/inject", "a\n")
	g.Absent(t, "/pwned")
	g.File(t, "/etc/canga.conf", "PermitRootLogin no\nPermitRootLogin no\nUsePAM yes\n"+
		`path=/new/a & \1 $1 @x "q' \\ é`+"\n☃ ☃\n")
	g.Absent(t, "/etc/motd")
	g.Absent(t, "/tmp/builder.log")

	shadow, _ := g.Read(t, "/etc/shadow")
	fields := map[string]string{}
	for _, l := range strings.Split(shadow, "\n") {
		if f := strings.Split(l, ":"); len(f) > 2 {
			fields[f[0]] = f[1]
		}
	}
	if fields["nobody"] != "*" {
		t.Errorf("nobody's password field = %q, want *", fields["nobody"])
	}
	// The host's crypt(3), through perl, checks the hash.
	hash := fields["root"]
	if !testkit.CryptMatches(t, `pa:ss w\ord`, hash) {
		t.Errorf("root's hash %q does not match the password", hash)
	}
}

func TestIntegrationFailures(t *testing.T) {
	integration(t)
	base := testkit.DebianGuest(t)
	env := tcgEnv(t)
	tests := []struct {
		name, cangafile string
		want            []string
	}{
		{"failing command", "parent: x\nrun:\n  - echo canga-fail-marker >&2; false\n",
			[]string{"exit status 1", "canga-fail-marker", "command exited with an error"}},
		{"unknown user", "parent: x\ntasks:\n  - password: {user: nosuchuser, password: x}\n",
			[]string{"exit status 1", "canga: password: no user 'nosuchuser'"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.cangafile), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			plan, err := c.Plan()
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = Run(context.Background(), newGuestOverlay(t, base), plan, Options{Env: env})
			t.Logf("failed in %v", time.Since(start).Round(time.Second))
			var te *ToolError
			if !errors.As(err, &te) || te.Tool != "virt-customize" || te.ExitCode != 1 {
				t.Fatalf("err = %v, want virt-customize's *ToolError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}
