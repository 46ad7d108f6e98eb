//go:build unix

package guestfs

import (
	"errors"
	"os/exec"
	"syscall"
	"time"
)

// ownGroup starts the tool in a process group of its own, so that the
// qemu it starts can be found and stopped with it.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killGroup kills what is left of the process group of a tool that has
// exited, and waits (a bounded time) until it is gone. A tool stopped
// while its appliance hung can leave qemu running for a while, holding
// the write lock of the overlay, and the next launch on it would fail.
func killGroup(pid int) {
	deadline := time.Now().Add(groupExitWait)
	for {
		err := syscall.Kill(-pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) || time.Now().After(deadline) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
