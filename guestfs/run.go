package guestfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cangallo/canga/internal/panics"
)

// Errors of [Preflight] and [Run] that callers may branch on.
var (
	// ErrToolMissing: a libguestfs tool (or perl) is not installed.
	ErrToolMissing = errors.New("guestfs: tool not found")
	// ErrNoKernel: no readable host kernel for the libguestfs appliance.
	ErrNoKernel = errors.New("guestfs: no readable kernel")
)

// Tools names the programs Run starts: names looked up in $PATH, or paths.
// Empty fields mean the usual names.
type Tools struct {
	VirtCustomize string // default "virt-customize"
	VirtSparsify  string // default "virt-sparsify"
	// Perl runs virt-customize's `edit` (change tasks) on the host; it is
	// only looked up, virt-customize runs its own `perl`.
	Perl string // default "perl"
}

func (t Tools) withDefaults() Tools {
	if t.VirtCustomize == "" {
		t.VirtCustomize = "virt-customize"
	}
	if t.VirtSparsify == "" {
		t.VirtSparsify = "virt-sparsify"
	}
	if t.Perl == "" {
		t.Perl = "perl"
	}
	return t
}

// Options tune [Run], [Preflight] and [DryRun]. The zero value is the
// default: network on (as virt-builder), build log scrubbed, direct backend.
type Options struct {
	// Progress receives each line the tools print (stdout and stderr, in
	// order, without the line break), one call at a time. Nil discards.
	Progress func(line string)
	// NoNetwork passes --no-network: run commands cannot reach the network.
	NoNetwork bool
	// KeepLogfile leaves virt-customize's /tmp/builder.log (the output of
	// every run command) in the image; by default it is scrubbed.
	KeepLogfile bool
	// SELinuxRelabel passes --selinux-relabel, for SELinux guests.
	SELinuxRelabel bool
	// MemsizeMB and SMP size the appliance run commands execute in; zero
	// keeps libguestfs' defaults.
	MemsizeMB int
	SMP       int
	// TempDir holds the commands and password files while Run runs;
	// default: the overlay's directory (the repository's .tmp/).
	TempDir string
	// Env is added to the tools' environment ("KEY=VALUE"), after the
	// process's own. LIBGUESTFS_BACKEND defaults to "direct" unless set in
	// either.
	Env []string
	// Tools overrides the programs' names or paths.
	Tools Tools
	// BootDir is where Preflight looks for the host kernel; default /boot.
	BootDir string
	// LaunchTimeout bounds how long virt-customize may take to start its
	// appliance and inspect the guest under KVM (default
	// DefaultLaunchTimeout). Nested KVM can start qemu and then never run
	// the guest kernel, which libguestfs waits on without end; past this
	// bound Run stops the tool and starts again under software emulation.
	// It does not apply once LIBGUESTFS_BACKEND_SETTINGS is set.
	LaunchTimeout time.Duration
}

// DefaultLaunchTimeout is [Options.LaunchTimeout]'s default: the appliance
// boots and inspects a guest in seconds under KVM, a minute or two under
// emulation on a busy host.
const DefaultLaunchTimeout = 4 * time.Minute

// errLaunchHung is a tool stopped because its appliance did not start in
// time.
var errLaunchHung = errors.New("the appliance did not start in time")

// ToolError is a tool that failed: its exit status and its last lines of
// output (the guest command's own output, for a failing run command).
type ToolError struct {
	Tool     string
	ExitCode int // -1 when it did not exit normally
	Tail     []string
	Err      error
}

func (e *ToolError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "guestfs: %s failed (%v)", e.Tool, e.Err)
	if len(e.Tail) > 0 {
		b.WriteString("; its last output:")
		for _, l := range e.Tail {
			b.WriteString("\n  ")
			b.WriteString(l)
		}
	}
	for _, l := range e.Tail {
		if strings.Contains(l, "guestfs_launch failed") {
			b.WriteString("\nhint: the libguestfs appliance did not start; run libguestfs-test-tool to see why." +
				" Where KVM is missing or broken (nested virtualisation), LIBGUESTFS_BACKEND_SETTINGS=force_tcg helps")
			break
		}
	}
	return b.String()
}

func (e *ToolError) Unwrap() error { return e.Err }

// Preflight checks what Run needs before anything runs: the tools in $PATH
// (perl too when the plan has change tasks; plan may be nil) and a host
// kernel the current user can read, which libguestfs boots its appliance
// with.
func Preflight(plan *Plan, opts Options) error {
	tools := opts.Tools.withDefaults()
	need := []string{tools.VirtCustomize, tools.VirtSparsify}
	if plan != nil && plan.has(KindChange) {
		need = append(need, tools.Perl)
	}
	for _, t := range need {
		if _, err := exec.LookPath(t); err != nil {
			pkg := "libguestfs-tools"
			if t == tools.Perl {
				pkg = "perl"
			}
			return fmt.Errorf("%w: %s is not in $PATH (%v): install it with `apt-get install %s`", ErrToolMissing, t, err, pkg)
		}
	}
	// supermin takes the kernel from SUPERMIN_KERNEL when set.
	if k := getenv(opts.Env, "SUPERMIN_KERNEL"); k != "" {
		if err := readable(k); err != nil {
			return fmt.Errorf("%w: SUPERMIN_KERNEL %s: %v", ErrNoKernel, k, err)
		}
		return nil
	}
	boot := opts.BootDir
	if boot == "" {
		boot = "/boot"
	}
	kernels, _ := filepath.Glob(filepath.Join(boot, "vmlinuz-*"))
	if len(kernels) == 0 {
		return fmt.Errorf("%w: no %s: libguestfs boots the host's kernel; install one with `apt-get install linux-image-amd64`",
			ErrNoKernel, filepath.Join(boot, "vmlinuz-*"))
	}
	var bad []string
	for _, k := range kernels {
		if err := readable(k); err != nil {
			bad = append(bad, err.Error())
			continue
		}
		return nil
	}
	return fmt.Errorf("%w: the kernels in %s are not readable by the current user (%s): libguestfs needs to read one; "+
		"make it readable (chmod 0644 %s) or reinstall it (`apt-get install --reinstall linux-image-amd64`)",
		ErrNoKernel, boot, strings.Join(bad, "; "), filepath.Join(boot, "vmlinuz-*"))
}

// readable checks that path is a regular file the current user can read.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// getenv looks key up in extra (last one wins), then in the process.
func getenv(extra []string, key string) string {
	for i := len(extra) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(extra[i], "="); ok && k == key {
			return v
		}
	}
	return os.Getenv(key)
}

func (o Options) env() []string {
	env := os.Environ()
	if getenv(o.Env, "LIBGUESTFS_BACKEND") == "" {
		env = append(env, "LIBGUESTFS_BACKEND=direct")
	}
	return append(env, o.Env...)
}

// commands returns the tools' argument lists (without the program names).
func (o Options) commands(overlay, commandsFile string) (customize, sparsify []string) {
	customize = []string{"--format", "qcow2", "-a", overlay}
	if o.NoNetwork {
		customize = append(customize, "--no-network")
	}
	if !o.KeepLogfile {
		customize = append(customize, "--no-logfile")
	}
	if o.SELinuxRelabel {
		customize = append(customize, "--selinux-relabel")
	}
	if o.MemsizeMB > 0 {
		customize = append(customize, "-m", strconv.Itoa(o.MemsizeMB))
	}
	if o.SMP > 0 {
		customize = append(customize, "--smp", strconv.Itoa(o.SMP))
	}
	customize = append(customize, "--commands-from-file", commandsFile)
	sparsify = []string{"--format", "qcow2", "--in-place", overlay}
	return customize, sparsify
}

// DryRun returns, ready to print, the commands Run would run and the
// commands file it would write (passwords stay in files and are not shown;
// XXXXXX stands for the temporary directory's random part).
func DryRun(overlay string, plan *Plan, opts Options) string {
	tools := opts.Tools.withDefaults()
	if abs, err := filepath.Abs(overlay); err == nil {
		overlay = abs
	}
	tempDir := opts.TempDir
	if tempDir == "" {
		tempDir = filepath.Dir(overlay)
	}
	tmp := filepath.Join(tempDir, "guestfs-XXXXXX")
	customize, sparsify := opts.commands(overlay, filepath.Join(tmp, "commands"))
	var env []string
	if getenv(opts.Env, "LIBGUESTFS_BACKEND") == "" {
		env = append(env, "LIBGUESTFS_BACKEND=direct")
	}
	env = append(env, opts.Env...)
	var b strings.Builder
	for _, argv := range [][]string{append([]string{tools.VirtCustomize}, customize...), append([]string{tools.VirtSparsify}, sparsify...)} {
		words := append(append([]string(nil), env...), argv...)
		for i, w := range words {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(shellQuote(w))
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "# %s/commands:\n", tmp)
	b.Write(plan.Commands(tmp))
	return b.String()
}

// shellQuote quotes a word for display as a shell command line.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// qcow2Magic starts every qcow2 file.
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// Run applies plan to the qcow2 image at overlay: virt-customize with the
// plan's commands file, then virt-sparsify --in-place. It checks
// [Preflight] first. On failure the overlay is left half-done: the caller
// discards it. A cancelled ctx stops the running tool (SIGTERM, then SIGKILL
// after 30 seconds) and Run returns an error wrapping ctx.Err().
func Run(ctx context.Context, overlay string, plan *Plan, opts Options) error {
	if plan == nil {
		return errors.New("guestfs: nil plan")
	}
	if err := Preflight(plan, opts); err != nil {
		return err
	}
	overlay, err := filepath.Abs(overlay)
	if err != nil {
		return fmt.Errorf("guestfs: %w", err)
	}
	if err := checkQcow2(overlay); err != nil {
		return err
	}

	tempDir := opts.TempDir
	if tempDir == "" {
		tempDir = filepath.Dir(overlay)
	}
	dir, err := os.MkdirTemp(tempDir, "guestfs-")
	if err != nil {
		return fmt.Errorf("guestfs: %w", err)
	}
	defer os.RemoveAll(dir)
	secrets := plan.secrets()
	if len(secrets) > 0 && strings.Contains(dir, ":") {
		// virt-customize's `file:` password selector is split at colons.
		return fmt.Errorf("guestfs: temporary directory %s contains ':', which virt-customize's password files cannot be named with; set another TempDir", dir)
	}
	for i, s := range secrets {
		if err := os.WriteFile(secretFile(dir, i), []byte(s+"\n"), 0o600); err != nil {
			return fmt.Errorf("guestfs: %w", err)
		}
	}
	commandsFile := filepath.Join(dir, "commands")
	if err := os.WriteFile(commandsFile, plan.Commands(dir), 0o600); err != nil {
		return fmt.Errorf("guestfs: %w", err)
	}

	tools := opts.Tools.withDefaults()
	customize, sparsify := opts.commands(overlay, commandsFile)
	if getenv(opts.Env, "LIBGUESTFS_BACKEND_SETTINGS") != "" {
		err = runTool(ctx, tools.VirtCustomize, customize, opts, 0)
	} else {
		launchTimeout := opts.LaunchTimeout
		if launchTimeout <= 0 {
			launchTimeout = DefaultLaunchTimeout
		}
		err = runTool(ctx, tools.VirtCustomize, customize, opts, launchTimeout)
		if launchFailed(err) {
			// /dev/kvm can exist and still fail or hang (nested
			// virtualisation); the appliance then starts under emulation.
			// Nothing has touched the overlay when the appliance did not
			// start, so trying again is safe.
			if opts.Progress != nil {
				opts.Progress("canga: the appliance did not start with KVM; trying again with software emulation (LIBGUESTFS_BACKEND_SETTINGS=force_tcg)")
			}
			opts.Env = append(append([]string(nil), opts.Env...), "LIBGUESTFS_BACKEND_SETTINGS=force_tcg")
			err = runTool(ctx, tools.VirtCustomize, customize, opts, 0)
		}
	}
	if err != nil {
		return err
	}
	return runTool(ctx, tools.VirtSparsify, sparsify, opts, 0)
}

// launchFailed reports whether err is a tool's failure to start the
// libguestfs appliance, or a tool stopped because it did not start in time.
func launchFailed(err error) bool {
	if errors.Is(err, errLaunchHung) {
		return true
	}
	var te *ToolError
	if !errors.As(err, &te) {
		return false
	}
	for _, l := range te.Tail {
		if strings.Contains(l, "guestfs_launch failed") {
			return true
		}
	}
	return false
}

func checkQcow2(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("guestfs: overlay: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("guestfs: overlay: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("guestfs: overlay %s is not a regular file", path)
	}
	magic := make([]byte, len(qcow2Magic))
	if _, err := io.ReadFull(f, magic); err != nil || !bytes.Equal(magic, qcow2Magic) {
		return fmt.Errorf("guestfs: overlay %s is not a qcow2 image", path)
	}
	return nil
}

const (
	tailLines   = 30
	maxLineSize = 4096
	// waitDelay bounds how long a tool may take to exit after SIGTERM, and
	// how long a leftover holder of its output pipe may keep it open.
	waitDelay = 30 * time.Second
	// groupExitWait bounds how long killGroup waits for the processes a
	// tool left behind to be gone.
	groupExitWait = 10 * time.Second
)

// runTool runs one tool, sending its output lines to opts.Progress and
// keeping the last ones for the error. A non-zero launchTimeout stops the
// tool with errLaunchHung when its appliance has not started by then: when
// no line has followed its first one (virt-customize's "Examining the
// guest").
func runTool(ctx context.Context, tool string, args []string, opts Options, launchTimeout time.Duration) error {
	name := filepath.Base(tool)
	var hung atomic.Bool
	launched := func() {}
	if launchTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		timer := time.AfterFunc(launchTimeout, func() {
			hung.Store(true)
			cancel()
		})
		defer timer.Stop()
		launched = func() { timer.Stop() }
	}
	examining := false
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("guestfs: %w", err)
	}
	defer pr.Close()

	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = opts.env()
	// One pipe for both streams keeps their lines in the order written.
	cmd.Stdout, cmd.Stderr = pw, pw
	// SIGTERM lets the OCaml tools shut the appliance down and remove
	// their temporary files.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = waitDelay
	ownGroup(cmd)

	tail := newTail(tailLines)
	done := make(chan struct{})
	var scanErr error // a panic of the scanner (or of Progress), once done is closed
	go func() {
		defer close(done)
		scanErr = func() (err error) {
			defer panics.Recover(&err, ErrInternal, func() string { return "reading the output of " + name })
			scanLines(pr, func(line string) {
				// virt-customize prints its first step ("Examining the
				// guest") before it starts the appliance, and the next one
				// once the appliance runs. Any line counts, whatever the
				// version's words: more lines before the launch only stop
				// the watchdog early, never a build that runs.
				if examining {
					launched()
				}
				examining = true
				tail.add(line)
				if opts.Progress != nil {
					opts.Progress(line)
				}
			})
			return nil
		}()
		// After a panic, the tool must not block on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
	}()

	err = cmd.Start()
	pw.Close()
	if err != nil {
		<-done
		return fmt.Errorf("guestfs: start %s: %w", name, err)
	}
	waitErr := cmd.Wait()
	killGroup(cmd.Process.Pid)
	// A process the tool left behind may still hold the pipe: stop reading
	// after a grace period rather than hang.
	select {
	case <-done:
	case <-time.After(waitDelay):
		pr.Close()
		<-done
	}
	if scanErr != nil {
		return scanErr
	}
	if waitErr == nil {
		return nil
	}
	if hung.Load() {
		return &ToolError{Tool: name, ExitCode: -1, Tail: tail.lines(),
			Err: fmt.Errorf("%w: no progress %v after it began to examine the guest", errLaunchHung, launchTimeout)}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("guestfs: %s: %w", name, ctx.Err())
	}
	code := -1
	var exitErr *exec.ExitError
	if errors.As(waitErr, &exitErr) {
		code = exitErr.ExitCode()
	}
	return &ToolError{Tool: name, ExitCode: code, Tail: tail.lines(), Err: waitErr}
}

// scanLines calls fn for each non-empty line of r; \r also ends a line (for
// progress bars) and a line longer than maxLineSize is cut into pieces.
func scanLines(r io.Reader, fn func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, maxLineSize), maxLineSize)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			return i + 1, data[:i], nil
		}
		if len(data) >= maxLineSize {
			return maxLineSize, data[:maxLineSize], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		if line := strings.TrimRight(sc.Text(), " \t"); line != "" {
			fn(line)
		}
	}
	// A read error (the pipe closed under us) ends the output; the tool's
	// exit status tells what happened.
}

// tail keeps the last n lines.
type tail struct {
	mu  sync.Mutex
	n   int
	buf []string
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) == t.n {
		copy(t.buf, t.buf[1:])
		t.buf = t.buf[:t.n-1]
	}
	t.buf = append(t.buf, line)
}

func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}
