//go:build !linux

package repo

import "io/fs"

// sysFileID: size and modification time are what every system gives;
// canga replaces index files by rename, so a new version has a new
// modification time.
func sysFileID(fs.FileInfo, *fileID) {}
