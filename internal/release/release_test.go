package release

import (
	"bytes"
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const (
	version = "1.2.3-test"
	commit  = "0123456789abcdef0123456789abcdef01234567"
	epoch   = "1700000000" // 2023-11-14T22:13:20Z
)

func root(t *testing.T) string {
	t.Helper()
	r, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: scripts/deps.sh installs what the release needs", tool)
		}
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// copySource copies the project's files (those git knows or would add,
// without bin/ and dist/) to dst: a second checkout at another path.
func copySource(t *testing.T, src, dst string) {
	t.Helper()
	var files []string
	if _, err := os.Stat(filepath.Join(src, ".git")); err == nil {
		out := run(t, src, nil, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
		for _, f := range strings.Split(out, "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
	} else {
		err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			if d.IsDir() && (rel == "bin" || rel == "dist") {
				return filepath.SkipDir
			}
			if d.Type().IsRegular() {
				files = append(files, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(src, f))
		if err != nil {
			continue // deleted in the work tree
		}
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

// make dist twice, from the project and from a copy of it elsewhere, gives
// the same bytes; the tarballs hold what docs/install.md says, dated and
// owned as promised; the binary is static and says its version; the
// signature of SHA256SUMS verifies; the .deb installs into an empty root.
func TestDist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two releases: minutes")
	}
	need(t, "tar", "gzip", "dpkg-deb", "dpkg", "ssh-keygen", "sha256sum", "man")
	src := root(t)
	tmp := t.TempDir()
	key := filepath.Join(tmp, "release_key")
	run(t, tmp, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release", "-f", key)
	env := []string{"SOURCE_DATE_EPOCH=" + epoch, "COMMIT=" + commit}

	out1, out2 := filepath.Join(tmp, "out1"), filepath.Join(tmp, "out2")
	run(t, src, env, "scripts/dist.sh", version, out1, key)
	copy := filepath.Join(tmp, "elsewhere", "canga-src")
	copySource(t, src, copy)
	run(t, copy, env, "scripts/dist.sh", version, out2, key)

	names := func(dir string) []string {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	want := []string{"SHA256SUMS", "SHA256SUMS.sig",
		"canga-" + version + "-linux-amd64.tar.gz", "canga-" + version + "-linux-arm64.tar.gz",
		"canga_" + version + "_amd64.deb", "canga_" + version + "_arm64.deb"}
	if got := names(out1); !slices.Equal(got, want) {
		t.Fatalf("dist wrote %v, want %v", got, want)
	}
	for _, n := range want {
		a, err := os.ReadFile(filepath.Join(out1, n))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(out2, n))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same source: not reproducible", n)
		}
	}

	// The checksums and their signature, as docs/install.md checks them.
	run(t, out1, nil, "sha256sum", "--check", "--strict", "SHA256SUMS")
	signers := filepath.Join(tmp, "allowed_signers")
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(signers, append([]byte("release@example.org "), pub...), 0o644); err != nil {
		t.Fatal(err)
	}
	sums, err := os.Open(filepath.Join(out1, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	verify := exec.Command("ssh-keygen", "-Y", "verify", "-f", signers, "-I", "release@example.org", "-n", "canga-release", "-s", filepath.Join(out1, "SHA256SUMS.sig"))
	verify.Stdin = sums
	if b, err := verify.CombinedOutput(); err != nil {
		t.Errorf("ssh-keygen -Y verify SHA256SUMS: %v\n%s", err, b)
	}

	checkTarball(t, out1, tmp)
	checkDeb(t, filepath.Join(out1, "canga_"+version+"_amd64.deb"), tmp)
}

func checkTarball(t *testing.T, out, tmp string) {
	name := "canga-" + version + "-linux-amd64"
	listing := run(t, out, nil, "tar", "--numeric-owner", "--full-time", "-tvzf", name+".tar.gz")
	for _, f := range []string{"canga", "README.md", "docs/guide.md", "docs/formats.md", "man/man1/canga.1", "man/man1/canga-push.1",
		"completion/canga.bash", "completion/_canga", "completion/canga.fish"} {
		if !strings.Contains(listing, " "+name+"/"+f+"\n") {
			t.Errorf("the tarball lacks %s:\n%s", f, listing)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		// -rw-r--r-- 0/0 1234 2023-11-14 22:13:20 name
		f := strings.Fields(l)
		if len(f) < 6 || f[1] != "0/0" || f[3]+" "+f[4] != "2023-11-14 22:13:20" {
			t.Errorf("tarball entry not owned 0/0 and dated SOURCE_DATE_EPOCH: %s", l)
		}
	}
	x := filepath.Join(tmp, "x")
	if err := os.Mkdir(x, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, x, nil, "tar", "-xzf", filepath.Join(out, name+".tar.gz"))
	bin := filepath.Join(x, name, "canga")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("canga is not static: it has %v", p.Type)
		}
	}
	if runtime.GOARCH == "amd64" {
		v := run(t, x, nil, bin, "--version")
		if !strings.Contains(v, "canga "+version+"\n") || !strings.Contains(v, "commit: "+commit+"\n") {
			t.Errorf("canga --version:\n%s", v)
		}
	}
}

// checkDeb installs the package into an empty root with dpkg --root, as
// on a machine that never had canga, and uses what it installed.
// --path-include=* undoes the path-exclude of minimal images' dpkg.cfg.d
// (man pages, docs), so that the test sees the whole package.
func checkDeb(t *testing.T, deb, tmp string) {
	r := filepath.Join(tmp, "root")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(r, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, tmp, nil, "dpkg", "--root="+r, "--force-not-root", "--path-include=*", "--install", deb)
	status := run(t, tmp, nil, "dpkg", "--root="+r, "--status", "canga")
	for _, want := range []string{"Status: install ok installed", "Version: " + version, "Recommends: qemu-utils, libguestfs-tools"} {
		if !strings.Contains(status, want+"\n") {
			t.Errorf("dpkg --status canga lacks %q:\n%s", want, status)
		}
	}
	for _, f := range []string{"usr/share/man/man1/canga.1.gz", "usr/share/man/man1/canga-convert.1.gz",
		"usr/share/bash-completion/completions/canga", "usr/share/zsh/vendor-completions/_canga",
		"usr/share/fish/vendor_completions.d/canga.fish", "usr/share/doc/canga/README.md", "usr/share/doc/canga/docs/guide.md"} {
		if _, err := os.Stat(filepath.Join(r, f)); err != nil {
			t.Errorf("the package did not install %s: %v", f, err)
		}
	}
	if runtime.GOARCH == "amd64" {
		v := run(t, tmp, nil, filepath.Join(r, "usr/bin/canga"), "--version")
		if !strings.HasPrefix(v, "canga "+version+"\n") {
			t.Errorf("installed canga --version:\n%s", v)
		}
	}
	page := run(t, tmp, []string{"MANWIDTH=100"}, "man", "-l", filepath.Join(r, "usr/share/man/man1/canga.1.gz"))
	if !strings.Contains(page, "content-addressed") || !strings.Contains(page, "canga-push(1)") {
		t.Errorf("man -l canga.1.gz:\n%s", page)
	}
}

// The commands that read, digest, convert and keep repositories build for
// macOS and Windows (the Linux-only parts say so when they run).
func TestCrossBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles canga for two more systems")
	}
	for _, target := range [][2]string{{"darwin", "arm64"}, {"windows", "amd64"}} {
		run(t, root(t), []string{"GOOS=" + target[0], "GOARCH=" + target[1], "CGO_ENABLED=0"},
			"go", "build", "-o", os.DevNull, "./cmd/canga")
	}
}
