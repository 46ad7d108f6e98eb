package guestfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// bootDir makes a /boot stand-in holding the given vmlinuz-* entries.
func bootDir(t *testing.T, setup func(dir string)) string {
	t.Helper()
	dir := t.TempDir()
	if setup != nil {
		setup(dir)
	}
	return dir
}

func TestPreflight(t *testing.T) {
	okBoot := bootDir(t, func(d string) {
		testkit.WriteFile(t, filepath.Join(d, "vmlinuz-6.1.0-1-amd64"), []byte("kernel"), 0o644)
	})
	changePlan, err := NewPlan([]Task{{Kind: KindChange, File: "/a", Regexp: "a", Text: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	runPlan, err := NewPlan([]Task{{Kind: KindRun, Command: "true"}})
	if err != nil {
		t.Fatal(err)
	}
	sh := Tools{VirtCustomize: "sh", VirtSparsify: "sh", Perl: "canga-no-such-perl"}
	tests := []struct {
		name    string
		plan    *Plan
		opts    Options
		wantErr error
		msg     []string
	}{
		{"real tools and /boot", runPlan, Options{}, nil, nil},
		{"missing virt-customize", runPlan, Options{Tools: Tools{VirtCustomize: "canga-no-such-virt-customize"}, BootDir: okBoot},
			ErrToolMissing, []string{"canga-no-such-virt-customize", "apt-get install libguestfs-tools"}},
		{"missing virt-sparsify", nil, Options{Tools: Tools{VirtCustomize: "sh", VirtSparsify: "/nonexistent/virt-sparsify"}, BootDir: okBoot},
			ErrToolMissing, []string{"/nonexistent/virt-sparsify", "apt-get install libguestfs-tools"}},
		{"missing perl with a change task", changePlan, Options{Tools: sh, BootDir: okBoot},
			ErrToolMissing, []string{"canga-no-such-perl", "apt-get install perl"}},
		{"perl not needed without change", runPlan, Options{Tools: sh, BootDir: okBoot}, nil, nil},
		{"no kernel", runPlan, Options{Tools: sh, BootDir: bootDir(t, nil)},
			ErrNoKernel, []string{"vmlinuz-*", "apt-get install linux-image-amd64"}},
		{"dangling kernel symlink", runPlan, Options{Tools: sh, BootDir: bootDir(t, func(d string) {
			if err := os.Symlink(filepath.Join(d, "gone"), filepath.Join(d, "vmlinuz-6.1.0-2-amd64")); err != nil {
				t.Fatal(err)
			}
		})}, ErrNoKernel, []string{"not readable", "vmlinuz-6.1.0-2-amd64", "linux-image-amd64"}},
		{"kernel is a directory", runPlan, Options{Tools: sh, BootDir: bootDir(t, func(d string) {
			if err := os.Mkdir(filepath.Join(d, "vmlinuz-x"), 0o755); err != nil {
				t.Fatal(err)
			}
		})}, ErrNoKernel, []string{"not readable", "is a directory", "linux-image-amd64"}},
		{"one readable kernel is enough", runPlan, Options{Tools: sh, BootDir: bootDir(t, func(d string) {
			if err := os.Mkdir(filepath.Join(d, "vmlinuz-a"), 0o755); err != nil {
				t.Fatal(err)
			}
			testkit.WriteFile(t, filepath.Join(d, "vmlinuz-b"), []byte("kernel"), 0o644)
		})}, nil, nil},
		{"SUPERMIN_KERNEL missing", runPlan, Options{Tools: sh, BootDir: bootDir(t, nil), Env: []string{"SUPERMIN_KERNEL=/nonexistent/vmlinuz"}},
			ErrNoKernel, []string{"SUPERMIN_KERNEL", "/nonexistent/vmlinuz"}},
		{"SUPERMIN_KERNEL set", runPlan, Options{Tools: sh, BootDir: bootDir(t, nil), Env: []string{"SUPERMIN_KERNEL=" + filepath.Join(okBoot, "vmlinuz-6.1.0-1-amd64")}}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Preflight(tt.plan, tt.opts)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Preflight: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error does not say %q: %v", m, err)
				}
			}
		})
	}
}

// newOverlay makes a real (empty) qcow2 image with qemu-img.
func newOverlay(t *testing.T, dir string) string {
	t.Helper()
	return testkit.QemuCreate(t, filepath.Join(dir, "overlay.qcow2"), "64M")
}

// script writes an executable shell script standing in for a tool, to test
// how Run starts tools and reads their output without booting a guest
// (integration_test.go runs the real tools).
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	testkit.WriteFile(t, path, []byte("#!/bin/sh\n"+body), 0o755)
	return path
}

type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(s string) { l.mu.Lock(); l.l = append(l.l, s); l.mu.Unlock() }
func (l *lines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.l...)
}

func TestRunInvokesTools(t *testing.T) {
	work := t.TempDir()
	record := t.TempDir()
	overlay := newOverlay(t, work)
	t.Setenv("LIBGUESTFS_BACKEND", "")
	vc := script(t, work, "virt-customize", `
printf '%s\n' "$@" > `+record+`/vc.args
echo "backend=$LIBGUESTFS_BACKEND extra=$CANGA_EXTRA"
for a; do last=$a; done
cp "$last" `+record+`/commands
cp "$(dirname "$last")/password-0" `+record+`/password-0
echo "[   0.0] Examining the guest ..."
echo "warning on stderr" >&2
printf 'progress 10%%\rprogress 100%%\n'
echo
echo "[   1.0] Finishing off"
`)
	vs := script(t, work, "virt-sparsify", `printf '%s\n' "$@" > `+record+`/vs.args; echo "[   3.5] Sparsify in-place operation completed with no errors"`)
	plan, err := NewPlan([]Task{
		{Kind: KindRun, Command: "echo hi"},
		{Kind: KindPassword, User: "root", Password: `p:a ss\`},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got lines
	err = Run(context.Background(), overlay, plan, Options{
		Progress: got.add, NoNetwork: true, Env: []string{"CANGA_EXTRA=x"},
		Tools: Tools{VirtCustomize: vc, VirtSparsify: vs},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []string{
		"backend=direct extra=x",
		"[   0.0] Examining the guest ...",
		"warning on stderr",
		"progress 10%",
		"progress 100%",
		"[   1.0] Finishing off",
		"[   3.5] Sparsify in-place operation completed with no errors",
	}
	if !reflect.DeepEqual(got.get(), want) {
		t.Errorf("progress lines:\n got %q\nwant %q", got.get(), want)
	}
	vcArgs, _ := os.ReadFile(filepath.Join(record, "vc.args"))
	args := strings.Split(strings.TrimSuffix(string(vcArgs), "\n"), "\n")
	if len(args) != 8 || strings.Join(args[:6], " ") != "--format qcow2 -a "+overlay+" --no-network --no-logfile" ||
		args[6] != "--commands-from-file" || filepath.Dir(filepath.Dir(args[7])) != work {
		t.Errorf("virt-customize args = %q", args)
	}
	if _, err := os.Stat(filepath.Dir(args[7])); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s left behind (%v)", filepath.Dir(args[7]), err)
	}
	cmds, _ := os.ReadFile(filepath.Join(record, "commands"))
	if string(cmds) != string(plan.Commands(filepath.Dir(args[7]))) {
		t.Errorf("commands file:\n%s", cmds)
	}
	pw, _ := os.ReadFile(filepath.Join(record, "password-0"))
	if string(pw) != "p:a ss\\\n" {
		t.Errorf("password file = %q", pw)
	}
	vsArgs, _ := os.ReadFile(filepath.Join(record, "vs.args"))
	if string(vsArgs) != "--format\nqcow2\n--in-place\n"+overlay+"\n" {
		t.Errorf("virt-sparsify args = %q", vsArgs)
	}
}

func TestRunToolFails(t *testing.T) {
	work := t.TempDir()
	overlay := newOverlay(t, work)
	vc := script(t, work, "virt-customize", `
i=0; while [ $i -lt 40 ]; do echo "line $i"; i=$((i+1)); done
echo "guest says: boom" >&2
head -c 10000 /dev/zero | tr '\0' x; echo
echo "virt-customize: error: false: command exited with an error" >&2
exit 3
`)
	sparsified := filepath.Join(work, "sparsified")
	vs := script(t, work, "virt-sparsify", "touch "+sparsified)
	plan, _ := NewPlan([]Task{{Kind: KindRun, Command: "false"}})
	var got lines
	err := Run(context.Background(), overlay, plan, Options{Progress: got.add, Tools: Tools{VirtCustomize: vc, VirtSparsify: vs}})
	var te *ToolError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want *ToolError", err)
	}
	if te.Tool != "virt-customize" || te.ExitCode != 3 || len(te.Tail) != tailLines {
		t.Errorf("ToolError = %q %d, %d tail lines", te.Tool, te.ExitCode, len(te.Tail))
	}
	msg := err.Error()
	for _, want := range []string{"virt-customize failed (exit status 3)", "guest says: boom", "command exited with an error", "line 39"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "line 9\n") {
		t.Errorf("error holds more than the tail:\n%s", msg)
	}
	all := got.get()
	if len(all) != 40+1+3+1 || all[41] != strings.Repeat("x", maxLineSize) || all[43] != strings.Repeat("x", 10000-2*maxLineSize) {
		t.Errorf("progress got %d lines", len(all))
	}
	if _, err := os.Stat(sparsified); err == nil {
		t.Error("virt-sparsify ran after virt-customize failed")
	}
}

func TestRunLaunchFailureHint(t *testing.T) {
	work := t.TempDir()
	vc := script(t, work, "virt-customize", `echo "virt-customize: error: libguestfs error: guestfs_launch failed." >&2; exit 1`)
	plan, _ := NewPlan([]Task{{Kind: KindRun, Command: "true"}})
	err := Run(context.Background(), newOverlay(t, work), plan, Options{Tools: Tools{VirtCustomize: vc, VirtSparsify: "true"}})
	if err == nil || !strings.Contains(err.Error(), "LIBGUESTFS_BACKEND_SETTINGS=force_tcg") {
		t.Errorf("err = %v, want the force_tcg hint", err)
	}
}

// A broken KVM fails the appliance's launch; Run tries again under
// emulation, once, and then runs virt-sparsify in the same way.
func TestRunRetriesLaunchWithTCG(t *testing.T) {
	work := t.TempDir()
	log := filepath.Join(work, "log")
	body := `echo "$0 settings=$LIBGUESTFS_BACKEND_SETTINGS" >>` + log + `
[ "$LIBGUESTFS_BACKEND_SETTINGS" = force_tcg ] && exit 0
echo "virt-customize: error: libguestfs error: guestfs_launch failed." >&2; exit 1`
	vc := script(t, work, "virt-customize", body)
	vs := script(t, work, "virt-sparsify", `echo "$0 settings=$LIBGUESTFS_BACKEND_SETTINGS" >>`+log)
	plan, _ := NewPlan([]Task{{Kind: KindRun, Command: "true"}})
	var got lines
	t.Setenv("LIBGUESTFS_BACKEND_SETTINGS", "")
	if err := Run(context.Background(), newOverlay(t, work), plan, Options{Tools: Tools{VirtCustomize: vc, VirtSparsify: vs}, Progress: got.add}); err != nil {
		t.Fatal(err)
	}
	requireTCGRetry(t, log, vc, vs, &got)
}

// Nested KVM can start qemu and never run the guest kernel: virt-customize
// then waits without end after "Examining the guest". Run stops it after
// LaunchTimeout and starts again under emulation; a launch that goes on
// past its first step is never stopped, however long the rest takes.
func TestRunLaunchHangRetriesWithTCG(t *testing.T) {
	work := t.TempDir()
	log := filepath.Join(work, "log")
	qemuPid := filepath.Join(work, "qemu.pid")
	// The hung run leaves a "qemu" behind, as virt-customize can: the run
	// after it must not start while that still holds the overlay.
	body := `echo "$0 settings=$LIBGUESTFS_BACKEND_SETTINGS" >>` + log + `
echo '[   0.0] Examining the guest ...'
if [ "$LIBGUESTFS_BACKEND_SETTINGS" != force_tcg ]; then
	sleep 300 &
	echo $! > ` + qemuPid + `
	exec sleep 60
fi
if kill -0 "$(cat ` + qemuPid + `)" 2>/dev/null; then
	echo "virt-customize: error: libguestfs error: guestfs_launch failed: the overlay is locked" >&2
	exit 1
fi
sleep 0.3
echo '[   5.0] Setting a random seed'
sleep 0.5
echo '[   9.0] Finishing off'`
	vc := script(t, work, "virt-customize", body)
	vs := script(t, work, "virt-sparsify", `echo "$0 settings=$LIBGUESTFS_BACKEND_SETTINGS" >>`+log)
	plan, _ := NewPlan([]Task{{Kind: KindRun, Command: "true"}})
	var got lines
	t.Setenv("LIBGUESTFS_BACKEND_SETTINGS", "")
	start := time.Now()
	err := Run(context.Background(), newOverlay(t, work), plan, Options{
		Tools: Tools{VirtCustomize: vc, VirtSparsify: vs}, Progress: got.add, LaunchTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v: the hung tool was not stopped", d)
	}
	requireTCGRetry(t, log, vc, vs, &got)

	// The same hang with emulation already forced is the user's to see:
	// no watchdog, the caller's context ends it.
	t.Setenv("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
	hang := script(t, work, "virt-customize-hang", "echo '[   0.0] Examining the guest ...'\nexec sleep 60\n")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = Run(ctx, newOverlay(t, work), plan, Options{
		Tools: Tools{VirtCustomize: hang, VirtSparsify: vs}, LaunchTimeout: 200 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("forced emulation: got %v, want the caller's deadline", err)
	}
}

func TestRunCancel(t *testing.T) {
	work := t.TempDir()
	vc := script(t, work, "virt-customize", "echo started\nexec sleep 60\n")
	plan, _ := NewPlan([]Task{{Kind: KindRun, Command: "true"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	err := Run(ctx, newOverlay(t, work), plan, Options{
		Tools: Tools{VirtCustomize: vc, VirtSparsify: "true"},
		Progress: func(line string) {
			if line == "started" {
				cancel()
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

func TestRunBadOverlay(t *testing.T) {
	work := t.TempDir()
	raw := filepath.Join(work, "disk.raw")
	testkit.WriteFile(t, raw, []byte(strings.Repeat("\x00", 4096)), 0o644)
	plan, _ := NewPlan([]Task{{Kind: KindRun, Command: "true"}})
	opts := Options{Tools: Tools{VirtCustomize: "true", VirtSparsify: "true"}}
	for path, want := range map[string]string{
		raw:                             "not a qcow2 image",
		filepath.Join(work, "missing"):  "no such file",
		work:                            "not a regular file",
		filepath.Join(work, "disk.raw"): "not a qcow2 image",
	} {
		if err := Run(context.Background(), path, plan, opts); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run(%s) = %v, want %q", path, err, want)
		}
	}
	if err := Run(context.Background(), raw, nil, opts); err == nil {
		t.Error("nil plan accepted")
	}
	// Preflight runs first.
	err := Run(context.Background(), newOverlay(t, work), plan, Options{Tools: Tools{VirtCustomize: "canga-none"}})
	if !errors.Is(err, ErrToolMissing) {
		t.Errorf("err = %v, want ErrToolMissing", err)
	}
	// Passwords need a temporary directory whose name has no colon.
	colon := filepath.Join(work, "a:b")
	if err := os.Mkdir(colon, 0o755); err != nil {
		t.Fatal(err)
	}
	pwPlan, _ := NewPlan([]Task{{Kind: KindPassword, User: "root", Password: "x"}})
	if err := Run(context.Background(), newOverlay(t, work), pwPlan, Options{TempDir: colon, Tools: opts.Tools}); err == nil || !strings.Contains(err.Error(), "contains ':'") {
		t.Errorf("colon temp dir: %v", err)
	}
}

// TestRunOutputPanic: a panic in the goroutine that reads a tool's output
// (here, in the Progress callback) is an error, not a crash.
func TestRunOutputPanic(t *testing.T) {
	work := t.TempDir()
	vc := script(t, work, "virt-customize", "echo hello; echo world")
	plan, _ := NewPlan([]Task{{Kind: KindRun, Command: "true"}})
	err := Run(context.Background(), newOverlay(t, work), plan, Options{
		Progress: func(string) { panic("a bug in Progress") },
		Tools:    Tools{VirtCustomize: vc, VirtSparsify: "true"},
	})
	if !errors.Is(err, ErrInternal) || !strings.Contains(err.Error(), "a bug in Progress") {
		t.Fatalf("got %v", err)
	}
}

// requireTCGRetry checks that log shows virt-customize run once as is and
// once under emulation, then virt-sparsify under emulation, and that the
// retry was announced.
func requireTCGRetry(t *testing.T, log, vc, vs string, got *lines) {
	t.Helper()
	b, _ := os.ReadFile(log)
	want := vc + " settings=\n" + vc + " settings=force_tcg\n" + vs + " settings=force_tcg\n"
	if string(b) != want {
		t.Errorf("runs:\n%s\nwant:\n%s", b, want)
	}
	if !slices.ContainsFunc(got.get(), func(l string) bool { return strings.Contains(l, "software emulation") }) {
		t.Error("no notice of the retry")
	}
}

// Once a line has followed the first one, the appliance runs: the
// watchdog is off, however long the rest of the run is silent.
func TestRunLaunchedIsNotStopped(t *testing.T) {
	work := t.TempDir()
	log := filepath.Join(work, "log")
	vc := script(t, work, "virt-customize", `echo "$0 settings=$LIBGUESTFS_BACKEND_SETTINGS" >>`+log+`
echo '[   0.0] Examining the guest ...'
echo '[   1.0] Setting a random seed'
sleep 1
echo '[   9.0] Finishing off'`)
	vs := script(t, work, "virt-sparsify", `echo "$0 settings=$LIBGUESTFS_BACKEND_SETTINGS" >>`+log)
	plan, _ := NewPlan([]Task{{Kind: KindRun, Command: "true"}})
	t.Setenv("LIBGUESTFS_BACKEND_SETTINGS", "")
	err := Run(context.Background(), newOverlay(t, work), plan, Options{
		Tools: Tools{VirtCustomize: vc, VirtSparsify: vs}, LaunchTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(log); string(b) != vc+" settings=\n"+vs+" settings=\n" {
		t.Errorf("runs:\n%s\nwant one of each, with KVM", b)
	}
}
