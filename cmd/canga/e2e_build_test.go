package main_test

// End-to-end tests of `canga build` (SPEC §7). The fast ones need no guest:
// bad Cangafiles and --dry-run. The others boot the libguestfs appliance on
// a real Debian guest and run only with CANGA_GUESTFS_TEST=1 (CI sets it).
// Their oracles are debugfs (files of the exported ext4 disk), qemu-img,
// sha256sum and the host's crypt(3) through perl, never canga itself.
//
// The guest is a `debootstrap --variant=minbase bookworm` tree in a 1 GiB
// ext4 without a partition table, built once and kept, compressed, in
// $CANGA_TEST_CACHE or ~/.cache/canga-test. It is the same file, made the
// same way, as the guestfs package's integration test uses, so either test
// reuses the other's; building it needs root, debootstrap and the Debian
// mirror (25 s to 5 min, depending on the mirror).
//
// Timing with the guest cached, on the 2-core host where KVM is broken (the
// appliance launch fails at once and canga retries it under TCG): a build
// takes 40-50 s (virt-customize about 30 s, 20 of them booting and
// inspecting, then virt-sparsify), a failing one 24 s, the gated tests
// together 3.5 minutes; building the guest adds about half a minute when
// the mirror is quick. A loaded host takes several times that, hence
// bldBuildTimeout.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// bldBuildTimeout bounds one `canga build` that boots the appliance.
const bldBuildTimeout = 20 * time.Minute

// bldGated skips the test unless the libguestfs end-to-end tests are on.
func bldGated(t *testing.T) {
	t.Helper()
	if os.Getenv("CANGA_GUESTFS_TEST") != "1" {
		t.Skip("set CANGA_GUESTFS_TEST=1 to run canga build on a real Debian guest with libguestfs (a few minutes; CI sets it)")
	}
	testkit.Need(t, "virt-customize", "virt-sparsify", "debugfs", "perl")
}

// bldHome is a new CANGA_HOME whose default repository holds the guest as
// base:1; it returns the home and the base's image ID.
func bldHome(t *testing.T) (string, string) {
	t.Helper()
	guest := testkit.DebianGuest(t)
	home := t.TempDir()
	return home, addID(t, home, guest, "--tag", "base:1", "--os", "Debian 12 (bookworm)")
}

func bldWrite(t *testing.T, path, content string) {
	t.Helper()
	mkdir(t, filepath.Dir(path))
	testkit.WriteFile(t, path, []byte(content), 0o644)
}

// bldShow is canga show --json, the fields these tests look at.
type bldShow struct {
	ID          string         `json:"id"`
	Tags        []string       `json:"tags"`
	Parent      string         `json:"parent"`
	Blob        string         `json:"blob"`
	BlobSize    int64          `json:"blob-size"`
	VirtualSize int64          `json:"virtual-size"`
	Description string         `json:"description"`
	OS          string         `json:"os"`
	Chain       []string       `json:"chain"`
	Cangafile   map[string]any `json:"cangafile"`
}

func bldShowJSON(t *testing.T, home, image string) bldShow {
	t.Helper()
	out := ok(t, home, "show", "--json", image)
	var s bldShow
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("show --json %s: %v\n%s", image, err, out)
	}
	return s
}

// bldExport exports image as a raw disk with canga export.
func bldExport(t *testing.T, home, image string) testkit.Ext4 {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "out.raw")
	ok(t, home, "export", image, raw, "-O", "raw")
	return testkit.Ext4{Raw: raw}
}

// bldShadowField is the password field of user in the guest's /etc/shadow.
func bldShadowField(t *testing.T, d testkit.Ext4, user string) string {
	t.Helper()
	shadow, ok := d.Read(t, "/etc/shadow")
	if !ok {
		t.Fatal("guest /etc/shadow: missing")
	}
	for _, l := range strings.Split(shadow, "\n") {
		if f := strings.Split(l, ":"); len(f) > 2 && f[0] == user {
			return f[1]
		}
	}
	t.Fatalf("guest /etc/shadow has no %s entry:\n%s", user, shadow)
	return ""
}

// bldRequireTmpClean requires the repository's .tmp/ to be empty, after
// `canga gc` if the command left anything there.
func bldRequireTmpClean(t *testing.T, home string) {
	t.Helper()
	if left := tmpEntries(t, home); len(left) > 0 {
		t.Logf(".tmp/ holds %v: canga gc should remove it", left)
		ok(t, home, "gc")
		if left := tmpEntries(t, home); len(left) > 0 {
			t.Errorf(".tmp/ still holds %v after canga gc", left)
		}
	}
}

// bldRequireBlobChain checks a delta blob with qemu-img: clean, and its
// backing chain resolves, inside the repository, to the parents' blobs.
func bldRequireBlobChain(t *testing.T, home string, blobs ...string) {
	t.Helper()
	top := blobPath(home, blobs[0])
	testkit.QemuCheck(t, top)
	if got := testkit.Sha256sum(t, top).String(); got != blobs[0] {
		t.Errorf("blob %s has sha256sum %s", blobs[0], got)
	}
	chain := testkit.QemuChain(t, top)
	if len(chain) != len(blobs) {
		t.Fatalf("qemu-img info --backing-chain %s: %d images, want %d: %+v", top, len(chain), len(blobs), chain)
	}
	for i, c := range chain {
		if want := blobPath(home, blobs[i]); filepath.Clean(c.Filename) != want {
			t.Errorf("backing chain[%d] = %s, want %s", i, c.Filename, want)
		}
		if c.Format != "qcow2" {
			t.Errorf("backing chain[%d]: format %s, want qcow2", i, c.Format)
		}
		if i+1 < len(chain) && c.BackingFormat != "qcow2" {
			t.Errorf("backing chain[%d]: backing format %q, want qcow2", i, c.BackingFormat)
		}
	}
}

// A build with every task kind, then a build on top of it in the seed's
// older form, each checked inside the exported disk.
func TestBldGuestBuild(t *testing.T) {
	bldGated(t)
	start := time.Now()
	home, baseID := bldHome(t)
	base := bldShowJSON(t, home, "base:1")
	baseDisk := bldExport(t, home, "base:1")
	if !baseDisk.Exists(t, "/etc/motd") {
		t.Fatal("the base guest has no /etc/motd to delete")
	}
	baseRoot := bldShadowField(t, baseDisk, "root")
	if strings.HasPrefix(baseRoot, "$") {
		t.Fatalf("the base guest's root already has a password hash %q", baseRoot)
	}
	if baseDisk.Exists(t, "/etc/bld.conf") || baseDisk.Exists(t, "/out") {
		t.Fatal("the base guest already has what the build should create")
	}

	work := t.TempDir()
	bldWrite(t, filepath.Join(work, "ctx", "hello.txt"), "hello from the host\n")
	bldWrite(t, filepath.Join(work, "ctx", "sub", "nested.txt"), "nested\n")
	bldWrite(t, filepath.Join(work, "ctx", "remove-me"), "to be deleted\n")
	bldWrite(t, filepath.Join(work, "single.txt"), "single file\n")
	bldWrite(t, filepath.Join(work, "old", "data.txt"), "older form data\n")
	bldWrite(t, filepath.Join(work, "old", "tmp", "scratch"), "scratch\n")
	const password = "bld-S3cret pass:w0rd"
	cangafile := filepath.Join(work, "Cangafile")
	bldWrite(t, cangafile, `# canga build end-to-end test: every task kind
parent: base:1
description: bld e2e build ☃
os: Debian 12 (bookworm)
tag: bld-overridden:1
tasks:
  - copy: ctx /opt
  - copy: {src: single.txt, dest: /etc/bld}
  - run: |
      mkdir -p /out
      echo "multi-line run" > /out/multi
      # a comment line
      cat /opt/ctx/hello.txt > /out/seen-copy
  - run:
      - echo "list item" > /out/list
      - printf '%s\n' '#PermitRootLogin prohibit-password' 'UsePAM yes' > /etc/bld.conf
  - change: {file: /etc/bld.conf, regexp: '^#?PermitRootLogin.*', text: 'PermitRootLogin no'}
  - delete: /etc/motd
  - delete: /opt/ctx/remove-me
  - password: {user: root, password: '`+password+`'}
`)
	before := snapshot(t, home)

	// From another directory, with an absolute path: copy sources are
	// relative to the Cangafile, not to the working directory.
	t0 := time.Now()
	r := cangaIn(t, home, t.TempDir(), bldBuildTimeout, "build", cangafile, "--tag", "built:1")
	t.Logf("canga build (every task kind) took %v", time.Since(t0).Round(time.Second))
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	requireNoPanic(t, r)
	for _, want := range []string{"Copying: ", "Running: echo \"list item\"", "Editing: /etc/bld.conf", "Deleting: /etc/motd",
		"Setting passwords", "Sparsify in-place operation completed"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("canga build's stderr does not show %q\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stdout+r.stderr, password) {
		t.Errorf("the password appears in canga build's output\n%v", r)
	}

	built := bldShowJSON(t, home, "built:1")
	if r.stdout != built.ID+"\n" {
		t.Errorf("canga build printed %q, want the new image's ID %s", r.stdout, built.ID)
	}
	if built.Parent != baseID || !slices.Equal(built.Chain, []string{built.ID, baseID}) {
		t.Errorf("built:1 parent %s chain %v, want parent %s", built.Parent, built.Chain, baseID)
	}
	if !slices.Equal(built.Tags, []string{"built:1"}) || built.Description != "bld e2e build ☃" ||
		built.OS != "Debian 12 (bookworm)" || built.VirtualSize != base.VirtualSize {
		t.Errorf("built:1: %+v", built)
	}
	if res := canga(t, home, "show", "bld-overridden:1"); res.code == 0 {
		t.Errorf("--tag built:1 should override the Cangafile's tag, but bld-overridden:1 exists\n%v", res)
	}

	// A delta: what the tasks changed, not a copy of the guest.
	const maxDelta = 8 << 20
	if built.BlobSize <= 0 || built.BlobSize > maxDelta || built.BlobSize*10 > base.BlobSize {
		t.Errorf("built:1's blob is %d bytes, the base's %d: want a delta of at most %d bytes and a tenth of the base",
			built.BlobSize, base.BlobSize, maxDelta)
	}
	t.Logf("base blob %d bytes, built:1 delta %d bytes", base.BlobSize, built.BlobSize)
	if got := fileSize(t, blobPath(home, built.Blob)); got != built.BlobSize {
		t.Errorf("built:1's blob file is %d bytes, show says %d", got, built.BlobSize)
	}
	bldRequireBlobChain(t, home, built.Blob, base.Blob)

	// The stored Cangafile is the one given, the password redacted, in the
	// output and in index.yaml's bytes.
	tasks, _ := built.Cangafile["tasks"].([]any)
	if built.Cangafile["parent"] != "base:1" || len(tasks) != 8 {
		t.Fatalf("stored cangafile: %v", built.Cangafile)
	}
	task, _ := tasks[7].(map[string]any)
	pw, _ := task["password"].(map[string]any)
	if pw["user"] != "root" || pw["password"] != "<redacted>" {
		t.Errorf("stored cangafile's password task = %v, want the password redacted", tasks[7])
	}
	if idx, err := os.ReadFile(filepath.Join(repoDir(home), "index.yaml")); err != nil {
		t.Fatal(err)
	} else if bytes.Contains(idx, []byte(password)) || bytes.Contains(idx, []byte("S3cret")) {
		t.Errorf("index.yaml holds the password:\n%s", idx)
	}
	// One image more: its qcow2 blob and its chunk list (SPEC §9).
	if after := snapshot(t, home); len(after.blobs) != len(before.blobs)+2 {
		t.Errorf("blobs before %v, after %v: want two more", before.blobs, after.blobs)
	}
	if e := ociReadIndex(t, repoDir(home))[built.ID]; e.Chunks == "" || e.ChunkSize != 1<<20 {
		t.Errorf("the built image has no chunk list: %+v", e)
	}
	bldRequireTmpClean(t, home)

	// Each task's effect, seen by debugfs in the exported disk, whose bytes
	// are the image ID.
	disk := bldExport(t, home, "built:1")
	if got := testkit.RawDigest(t, disk.Raw).String(); got != built.ID {
		t.Errorf("sha256sum of qemu-img convert -O raw of the export = %s, want the ID %s", got, built.ID)
	}
	disk.File(t, "/opt/ctx/hello.txt", "hello from the host\n")
	disk.File(t, "/opt/ctx/sub/nested.txt", "nested\n")
	disk.Absent(t, "/opt/ctx/remove-me")
	disk.File(t, "/etc/bld/single.txt", "single file\n")
	disk.File(t, "/out/multi", "multi-line run\n")
	disk.File(t, "/out/seen-copy", "hello from the host\n")
	disk.File(t, "/out/list", "list item\n")
	disk.File(t, "/etc/bld.conf", "PermitRootLogin no\nUsePAM yes\n")
	disk.Absent(t, "/etc/motd")
	disk.Absent(t, "/tmp/builder.log")
	rootHash := bldShadowField(t, disk, "root")
	if !strings.HasPrefix(rootHash, "$") || !testkit.CryptMatches(t, password, rootHash) {
		t.Errorf("root's password field is %q (was %q): want a hash of the Cangafile's password", rootHash, baseRoot)
	}

	// The seed README's older form, on top of built:1 named by a bare ID
	// prefix as the seed's Cangafiles do, from the Cangafile's directory
	// with a relative path, tagged by the Cangafile's own tag.
	bldWrite(t, filepath.Join(work, "Cangafile.old"), `---
description: bld e2e build, older form
os: Debian 12 (bookworm)
parent: `+strings.TrimPrefix(built.ID, "sha256:")[:16]+`
tag: bld-old:1
files:
  - old /
run:
  - cp /old/data.txt /out/old-copy
  - echo older-form-run >> /out/multi
  - rm -rf /old/tmp
`)
	t0 = time.Now()
	r = cangaIn(t, home, work, bldBuildTimeout, "build", "Cangafile.old")
	t.Logf("canga build (older form) took %v", time.Since(t0).Round(time.Second))
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	old := bldShowJSON(t, home, "bld-old:1")
	if r.stdout != old.ID+"\n" || old.Parent != built.ID || !slices.Equal(old.Chain, []string{old.ID, built.ID, baseID}) ||
		old.Description != "bld e2e build, older form" {
		t.Errorf("bld-old:1: %+v (canga build printed %q)", old, r.stdout)
	}
	if old.BlobSize > maxDelta {
		t.Errorf("bld-old:1's blob is %d bytes, want a delta of at most %d", old.BlobSize, maxDelta)
	}
	if _, ok := old.Cangafile["files"].([]any); !ok {
		t.Errorf("stored older-form cangafile has no files list: %v", old.Cangafile)
	}
	if run, _ := old.Cangafile["run"].([]any); len(run) != 3 {
		t.Errorf("stored older-form cangafile's run list: %v", old.Cangafile["run"])
	}
	bldRequireBlobChain(t, home, old.Blob, built.Blob, base.Blob)
	bldRequireTmpClean(t, home)
	disk = bldExport(t, home, "bld-old:1")
	if got := testkit.RawDigest(t, disk.Raw).String(); got != old.ID {
		t.Errorf("sha256sum of qemu-img convert -O raw of the export = %s, want the ID %s", got, old.ID)
	}
	disk.File(t, "/old/data.txt", "older form data\n")
	disk.File(t, "/out/old-copy", "older form data\n")
	disk.Absent(t, "/old/tmp")
	// built:1's changes are still there under the new one's.
	disk.File(t, "/out/multi", "multi-line run\nolder-form-run\n")
	disk.File(t, "/etc/bld.conf", "PermitRootLogin no\nUsePAM yes\n")
	disk.Absent(t, "/etc/motd")
	if got := bldShadowField(t, disk, "root"); got != rootHash {
		t.Errorf("root's password field is %q, want built:1's %q", got, rootHash)
	}
	t.Logf("TestBldGuestBuild took %v", time.Since(start).Round(time.Second))
}

// A failing task fails the build with the guest's output shown, and leaves
// the repository as it was.
func TestBldGuestBuildFails(t *testing.T) {
	bldGated(t)
	home, _ := bldHome(t)
	work := t.TempDir()
	bldWrite(t, filepath.Join(work, "ctx", "hello.txt"), "hello\n")
	tests := []struct {
		name, cangafile string
		want            []string
	}{
		{"marker on stderr", `parent: base:1
tasks:
  - copy: ctx /opt
  - run: |
      echo first > /first
      printf 'bld-%s-marker\n' guest-stderr >&2; exit 3
      touch /never
  - password: {user: root, password: not-reached}
`, []string{"bld-guest-stderr-marker", "command exited with an error", "canga: build failed: virt-customize"}},
		{"run false, older form", `parent: base:1
files:
  - ctx /
run:
  - "true"
  - "false"
`, []string{"false: command exited with an error", "canga: build failed: virt-customize"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(work, "Cangafile")
			bldWrite(t, path, tt.cangafile)
			before := snapshot(t, home)
			t0 := time.Now()
			r := cangaIn(t, home, work, bldBuildTimeout, "build", path, "--tag", "failed:1")
			t.Logf("failed in %v", time.Since(t0).Round(time.Second))
			requireCleanFailure(t, r)
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("canga build's stderr does not show %q\n%s", w, r.stderr)
				}
			}
			if r.stdout != "" {
				t.Errorf("a failed build printed %q on stdout", r.stdout)
			}
			requireUnchanged(t, home, before)
			bldRequireTmpClean(t, home)
			requireUnchanged(t, home, before)
			if res := canga(t, home, "show", "failed:1"); res.code == 0 {
				t.Errorf("failed:1 exists after a failed build\n%v", res)
			}
		})
	}
}

// bldHolders lists the processes that have a file under dir open.
func bldHolders(dir string) []string {
	var held []string
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && strings.HasPrefix(target, dir+"/") {
			held = append(held, fmt.Sprintf("%s -> %s", fd, target))
		}
	}
	return held
}

// bldRunning is a canga build running in the background.
type bldRunning struct {
	cmd            *exec.Cmd
	stdout, stderr testkit.SyncBuffer
	done           chan error
	exited         bool
}

// bldStartSleeper starts a build, in a new home, whose one task sleeps,
// and returns once the task runs: virt-customize prints a command's output
// when it ends, and its "Running:" line as it starts.
func bldStartSleeper(t *testing.T) (*bldRunning, string, repoState) {
	t.Helper()
	home, _ := bldHome(t)
	path := filepath.Join(t.TempDir(), "Cangafile")
	bldWrite(t, path, "parent: base:1\ntasks:\n  - run: sleep 300; echo bld-finished\n")
	before := snapshot(t, home)
	b := &bldRunning{cmd: exec.Command(cangaBin, "build", path, "--tag", "sleeper:1"), done: make(chan error, 1)}
	b.cmd.Env = cangaEnv(home)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	t.Cleanup(func() {
		if !b.exited {
			_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
			<-b.done
		}
	})
	running := regexp.MustCompile(`(?m)\] Running: sleep 300`)
	deadline := time.After(bldBuildTimeout)
	for !running.MatchString(b.stderr.String()) {
		select {
		case err := <-b.done:
			b.exited = true
			t.Fatalf("canga build ended (%v) before its task ran\n%s", err, b.stderr.String())
		case <-deadline:
			t.Fatalf("the task did not start within %v\n%s", bldBuildTimeout, b.stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	return b, home, before
}

// terminate sends canga SIGTERM and waits for it to exit.
func (b *bldRunning) terminate(t *testing.T) result {
	t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var err error
	select {
	case err = <-b.done:
		b.exited = true
	case <-time.After(2 * time.Minute):
		t.Fatalf("canga build still running 2 minutes after SIGTERM\n%s", b.stderr.String())
	}
	t.Logf("canga build exited %v after SIGTERM", time.Since(t0).Round(time.Millisecond))
	r := result{args: b.cmd.Args[1:], stdout: b.stdout.String(), stderr: b.stderr.String(), elapsed: time.Since(t0)}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("canga build after SIGTERM: %v, want a non-zero exit\n%v", err, r)
	}
	r.code = ee.ExitCode()
	return r
}

// canga killed (SIGTERM) while a task runs: the build stops, the
// appliance goes, and nothing of it stays in the repository.
func TestBldGuestBuildInterrupted(t *testing.T) {
	bldGated(t)
	b, home, before := bldStartSleeper(t)
	if held := bldHolders(home); len(held) == 0 {
		t.Errorf("while the build runs, no process holds a file of the repository: the check below is blind")
	} else {
		t.Logf("while the build runs:\n%s", strings.Join(held, "\n"))
	}
	r := b.terminate(t)
	t.Logf("stderr:\n%s", r.stderr)
	requireCleanFailure(t, r)
	if r.stdout != "" {
		t.Errorf("an interrupted build printed %q on stdout", r.stdout)
	}

	// libguestfs' recovery process kills qemu when virt-customize dies;
	// give it a moment, then nothing may hold a file of the repository.
	var held []string
	for wait := time.Now().Add(30 * time.Second); ; {
		if held = bldHolders(home); len(held) == 0 || time.Now().After(wait) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(held) > 0 {
		t.Errorf("after canga exited, processes still hold files of the repository:\n%s", strings.Join(held, "\n"))
	}
	requireUnchanged(t, home, before)
	bldRequireTmpClean(t, home)
	requireUnchanged(t, home, before)
}

// canga gc while a build runs must leave the live build's .tmp/ entries
// alone: the overlay, and the directory with the commands and password
// files that virt-customize reads (again, when it retries without KVM).
func TestBldGuestGCDuringBuild(t *testing.T) {
	bldGated(t)
	b, home, before := bldStartSleeper(t)
	live := tmpEntries(t, home)
	gcOut := ok(t, home, "gc")
	if after := tmpEntries(t, home); !slices.Equal(live, after) {
		t.Errorf("canga gc during a build (%q) changed .tmp/ from %v to %v: it removed files of a live build",
			strings.TrimSpace(gcOut), live, after)
	}
	requireUnchanged(t, home, before)
	b.terminate(t)
	requireUnchanged(t, home, before)
	bldRequireTmpClean(t, home)
}

// bldFastHome is a home whose base:1 is a small ext4 disk: enough for what
// runs before the guest boots.
func bldFastHome(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	addID(t, home, baseQcow2(t), "--tag", "base:1")
	return home
}

// --dry-run prints the virt-customize and virt-sparsify commands and the
// commands file, without a guest, and changes nothing.
func TestBldDryRun(t *testing.T) {
	home := bldFastHome(t)
	work := t.TempDir()
	bldWrite(t, filepath.Join(work, "ctx", "hello.txt"), "hello\n")
	const password = "dry-S3cret"
	tests := []struct {
		name, cangafile string
		want            []string
	}{
		{"every task kind", `parent: base:1
tasks:
  - copy: ctx /opt
  - run: |
      echo one > /one
      echo two > /two
  - run: [echo three > /three]
  - change: {file: /etc/ssh/sshd_config, regexp: '^#?PermitRootLogin.*', text: 'PermitRootLogin no'}
  - delete: /etc/motd
  - password: {user: root, password: ` + password + `}
`, []string{
			"mkdir /opt\n",
			"copy-in " + filepath.Join(work, "ctx") + ":/opt\n",
			"run-command echo one > /one\n",
			"run-command echo two > /two\n",
			"run-command echo three > /three\n",
			"edit /etc/ssh/sshd_config:",
			"delete /etc/motd\n",
			"password root:file:",
		}},
		{"older form", `parent: base:1
files:
  - ctx /
run:
  - echo old > /old
`, []string{
			"copy-in " + filepath.Join(work, "ctx") + ":/\n",
			"run-command echo old > /old\n",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(work, "Cangafile")
			bldWrite(t, path, tt.cangafile)
			before := snapshot(t, home)
			r := cangaIn(t, home, work, cangaTimeout, "build", "--dry-run", "Cangafile", "--tag", "dry:1")
			if r.code != 0 {
				t.Fatalf("%v", r)
			}
			requireNoPanic(t, r)
			lines := strings.Split(r.stdout, "\n")
			var customize, sparsify bool
			for _, l := range lines {
				customize = customize || regexp.MustCompile(`(^| )virt-customize .*--commands-from-file `).MatchString(l)
				sparsify = sparsify || regexp.MustCompile(`(^| )virt-sparsify .*--in-place `).MatchString(l)
			}
			if !customize || !sparsify {
				t.Errorf("--dry-run does not print the virt-customize and virt-sparsify commands\n%s", r.stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("--dry-run does not print %q\n%s", w, r.stdout)
				}
			}
			if strings.Contains(r.stdout+r.stderr, password) {
				t.Errorf("--dry-run shows the password\n%v", r)
			}
			requireUnchanged(t, home, before)
			if left := tmpEntries(t, home); len(left) > 0 {
				t.Errorf("--dry-run left %v in .tmp/", left)
			}
			if res := canga(t, home, "show", "dry:1"); res.code == 0 {
				t.Errorf("--dry-run made dry:1\n%v", res)
			}
		})
	}
}

// Bad Cangafiles and arguments fail before any guest boots, with a message
// that names the problem and where it is, and change nothing.
func TestBldBadCangafile(t *testing.T) {
	home := bldFastHome(t)
	work := t.TempDir()
	bldWrite(t, filepath.Join(work, "ctx", "hello.txt"), "hello\n")
	tests := []struct {
		name, cangafile string
		args            []string
		want            []string // in the last line of stderr
	}{
		{"unknown key", "parent: base:1\nbogus: 1\ntasks:\n  - run: \"true\"\n", nil,
			[]string{"Cangafile:2:", `unknown key "bogus"`}},
		{"unknown task kind", "parent: base:1\ntasks:\n  - run: \"true\"\n  - frobnicate: x\n", nil,
			[]string{"Cangafile:4:", "tasks[1].frobnicate", `unknown key "frobnicate"`}},
		{"missing parent", "description: no parent\ntasks:\n  - run: \"true\"\n", nil,
			[]string{"Cangafile:1:", "parent", "missing"}},
		{"parent does not resolve", "parent: nosuch:9\ntasks:\n  - run: \"true\"\n", nil,
			[]string{"parent nosuch:9", "no image"}},
		{"missing copy source", "parent: base:1\ntasks:\n  - run: \"true\"\n  - copy: nothere /opt\n", nil,
			[]string{"Cangafile:4:", "tasks[1].copy", `"nothere"`, "does not exist"}},
		{"missing copy source, older form", "parent: base:1\nfiles:\n  - ctx /\n  - {src: gone, dest: /x}\n", nil,
			[]string{"Cangafile:4:", "files[1]", `"gone"`, "does not exist"}},
		{"change without text", "parent: base:1\ntasks:\n  - change: {file: /etc/x, regexp: a}\n", nil,
			[]string{"Cangafile:3:", "tasks[0].change.text", "missing"}},
		{"bad regexp", "parent: base:1\ntasks:\n  - change: {file: /etc/x, regexp: 'a(', text: b}\n", nil,
			[]string{"Cangafile:3:", "tasks[0].change.regexp", "invalid regexp"}},
		{"relative guest path", "parent: base:1\ntasks:\n  - delete: etc/motd\n", nil,
			[]string{"Cangafile:3:", "tasks[0].delete", "absolute"}},
		{"password and disabled", "parent: base:1\ntasks:\n  - password: {user: root, password: x, disabled: true}\n", nil,
			[]string{"Cangafile:3:", "tasks[0].password", "not both"}},
		{"no tasks", "parent: base:1\n", nil,
			[]string{"Cangafile:", "nothing to do"}},
		{"not YAML", "parent: [base:1\n", nil,
			[]string{"Cangafile"}},
		{"bad tag", "parent: base:1\ntasks:\n  - run: \"true\"\n", []string{"--tag", "bad tag"},
			[]string{`"bad tag"`}},
		{"bad tag in the Cangafile", "parent: base:1\ntag: 'bad tag'\ntasks:\n  - run: \"true\"\n", nil,
			[]string{`"bad tag"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(work, "Cangafile")
			bldWrite(t, path, tt.cangafile)
			before := snapshot(t, home)
			r := fails(t, home, append([]string{"build", path}, tt.args...)...)
			if r.elapsed > 10*time.Second {
				t.Errorf("took %v: a bad Cangafile should fail before anything slow", r.elapsed)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 1 {
				t.Errorf("want one error line on stderr\n%v", r)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not say %q\n%v", w, r)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			requireUnchanged(t, home, before)
			if left := tmpEntries(t, home); len(left) > 0 {
				t.Errorf("a rejected build left %v in .tmp/", left)
			}
		})
	}
	t.Run("no such Cangafile", func(t *testing.T) {
		before := snapshot(t, home)
		r := fails(t, home, "build", filepath.Join(work, "NoCangafile"))
		if !strings.Contains(r.stderr, "NoCangafile") {
			t.Errorf("stderr does not name the file\n%v", r)
		}
		requireUnchanged(t, home, before)
	})
}
