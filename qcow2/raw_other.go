//go:build !linux

package qcow2

import "os"

func sparseExtent(f *os.File, off, n int64) (Extent, bool) { return Extent{}, false }
