package main_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// progOpenPTY opens a pseudo-terminal pair: canga writes its stderr to the
// terminal side and the test reads what it printed from the other.
func progOpenPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	var unlock int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlock pty: %v", e)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 30, Col: 100}); err != nil {
		t.Fatalf("pty size: %v", err)
	}
	return m, s
}

// progRun runs canga with stderr on a terminal and returns what it printed
// there.
func progRun(t *testing.T, home string, args ...string) string {
	t.Helper()
	ptmx, tty := progOpenPTY(t)
	cmd := exec.Command(cangaBin, args...)
	cmd.Env = cangaEnv(home)
	cmd.Stderr = tty
	var out bytes.Buffer
	cmd.Stdout = &out
	var got bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&got, ptmx); close(done) }()
	if err := cmd.Run(); err != nil {
		t.Fatalf("canga %v: %v\n%s", args, err, got.String())
	}
	tty.Close()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		ptmx.Close()
		<-done
	}
	return got.String()
}

// TestProgressOnTerminal: add, export and convert show a progress bar when
// stderr is a terminal, and nothing with --quiet (the other tests run with
// stderr not a terminal, where canga is silent too).
func TestProgressOnTerminal(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	dir := t.TempDir()
	base := baseQcow2(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"add", []string{"add", base, "--tag", "p:1"}},
		{"export", []string{"export", "p:1", filepath.Join(dir, "out.qcow2")}},
		{"convert", []string{"convert", "-c", base, filepath.Join(dir, "c.qcow2")}},
		{"digest", []string{"digest", base}},
	} {
		t.Run(c.name, func(t *testing.T) {
			bar := progRun(t, home, c.args...)
			if !strings.Contains(bar, "%") || !strings.Contains(bar, "MiB") {
				t.Errorf("no progress bar on the terminal: %q", bar)
			}
			quiet := progRun(t, home, append([]string{"--quiet"}, c.args...)...)
			if strings.Contains(quiet, "%") {
				t.Errorf("--quiet still shows a bar: %q", quiet)
			}
		})
	}
}
