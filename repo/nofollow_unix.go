//go:build unix

package repo

import "syscall"

const noFollow = syscall.O_NOFOLLOW
