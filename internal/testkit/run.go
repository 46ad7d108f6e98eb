package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// toolTimeout bounds one run of a tool. It is generous, because a loaded
// 2-core host runs qemu-img and mkfs.ext4 many times slower than an idle
// one; it is there only so that a hung tool fails its test instead of
// hanging the whole run.
const toolTimeout = 10 * time.Minute

// debianPackage names the Debian package of each tool the tests run, for
// the message when one is missing.
var debianPackage = map[string]string{
	"qemu-img": "qemu-utils", "qemu-io": "qemu-utils",
	"sha256sum": "coreutils",
	"mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs",
	"ssh-keygen": "openssh-client", "ssh-agent": "openssh-client", "ssh-add": "openssh-client",
	"python3": "python3", "curl": "curl", "perl": "perl", "debootstrap": "debootstrap",
	"virt-customize": "libguestfs-tools", "virt-sparsify": "libguestfs-tools",
}

// notFound is the message for a tool that is not in PATH.
func notFound(tool string) string {
	msg := tool + " not found in PATH: the tests use it as their oracle"
	if pkg := debianPackage[tool]; pkg != "" {
		msg += " (apt-get install " + pkg + ", or scripts/deps.sh)"
	}
	return msg
}

// Need fails the test unless every tool is in PATH.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatal(notFound(tool))
		}
	}
}

// Run runs a tool and returns its standard output. The test fails, showing
// both outputs, when the tool cannot run or exits non-zero.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, code, stderr := RunCode(t, name, args...)
	if code != 0 {
		t.Fatalf("%s: exit %d\n%s%s", cmdline(name, args), code, out, stderr)
	}
	return out
}

// RunCode runs a tool and returns its standard output, exit code and
// standard error: a non-zero exit is an answer here. The test fails when
// the tool cannot run or does not finish within toolTimeout.
func RunCode(t testing.TB, name string, args ...string) (stdout string, code int, stderr string) {
	t.Helper()
	return runInput(t, nil, nil, name, args...)
}

// runInput is RunCode with standard input and variables added to the
// environment.
func runInput(t testing.TB, stdin io.Reader, env []string, name string, args ...string) (string, int, string) {
	t.Helper()
	out, code, stderr, err := command(stdin, env, toolTimeout, name, args...)
	if errors.Is(err, exec.ErrNotFound) {
		t.Fatal(notFound(name))
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s%s", cmdline(name, args), err, out, stderr)
	}
	return out, code, stderr
}

// command runs a tool; err is set only when it could not run or was
// killed at the time limit.
func command(stdin io.Reader, env []string, limit time.Duration, name string, args ...string) (stdout string, code int, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = stdin
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// A child that keeps the output pipes open must not stall Wait.
	cmd.WaitDelay = 10 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err != nil && ctx.Err() != nil:
		return out.String(), -1, errb.String(), fmt.Errorf("still running after %v, killed", limit)
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode(), errb.String(), nil
	}
	return out.String(), 0, errb.String(), err
}

// runErr runs a tool where no test is at hand (image builders that return
// errors): a non-zero exit is an error that carries the tool's output.
func runErr(limit time.Duration, name string, args ...string) error {
	out, code, stderr, err := command(nil, nil, limit, name, args...)
	if err == nil && code != 0 {
		err = fmt.Errorf("exit %d", code)
	}
	if err != nil {
		return fmt.Errorf("%s: %w\n%s%s", cmdline(name, args), err, out, stderr)
	}
	return nil
}

func cmdline(name string, args []string) string {
	return strings.Join(append([]string{name}, args...), " ")
}

// WantErr checks that err matches every sentinel (errors.Is) and mentions
// every substring.
func WantErr(t testing.TB, err error, sentinels []error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", subs)
	}
	for _, s := range sentinels {
		if !errors.Is(err, s) {
			t.Errorf("error %q does not match %v", err, s)
		}
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}
