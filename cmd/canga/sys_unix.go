//go:build unix

package main

import (
	"io/fs"
	"syscall"
)

// allocatedBytes is the disk space a file takes, as qemu-img info's
// "disk size": its allocated blocks.
func allocatedBytes(fi fs.FileInfo) (int64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Blocks * 512, true
}
