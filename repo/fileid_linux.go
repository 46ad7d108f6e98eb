package repo

import (
	"io/fs"
	"syscall"
)

// sysFileID adds to id what only the system knows of a file: its device,
// inode and change time.
func sysFileID(fi fs.FileInfo, id *fileID) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.Dev, id.Ino, id.Ctime = uint64(st.Dev), st.Ino, st.Ctim.Nano()
	}
}
