// Package cas is the content-addressed blob store of a canga repository
// (SPEC §2, "A repository is a directory").
//
// Layout, relative to the repository directory:
//
//	blobs/sha256/HEX   read-only (0444) files named by the SHA-256 of their bytes
//	.tmp/              work in progress: temp files, download partials
//	.lock              the writers' lock (flock), never part of the content
//	index.yaml         owned by package index; cas only writes it atomically
//
// # Atomicity
//
// Nothing becomes a blob before its bytes are hashed, checked against what the
// caller expected, fsynced and made read-only. There are four ways in, and
// each checks size and digest (and the caller's [WithCheck] functions)
// before the name exists: [Store.Ingest] of a stream, [Store.CommitFile]
// of a temp file the caller filled, [Store.CopyFile] of a file elsewhere
// on this machine (a copy-on-write clone where the file system has one,
// never a hard link), and [Partial.Commit] of a download. A blob appears by one rename
// (RENAME_NOREPLACE where the file system has it) from .tmp/ into
// blobs/sha256/, followed by an fsync of the directory, so a crash at any
// moment leaves either no blob or a complete, correct one. A blob that already
// exists is success: equal names mean equal bytes. Every error path removes
// its temp file, so a failed write (a digest mismatch, a full disk) leaves
// neither a blob nor a temp file behind. [Store.WriteFileAtomic] gives
// index.yaml the same temp-fsync-rename-fsync treatment ([Store.WriteAtomic]
// as it is encoded, [Store.ReplaceFile] once a fetched copy is checked), and
// [Store.KeepFile] the image files of a Cangallo cache.
//
// # Temp files and gc
//
// Every file in .tmp/ is held under an exclusive flock(2) for as long as a
// process uses it. A process that dies loses its flocks with it, so
// [Store.GC] removes exactly the temp files that nobody holds: it takes each
// one's flock without blocking before it unlinks it, and a creator checks,
// once it holds its own flock, that its file is still the one linked under
// its name (otherwise it starts over). Download partials (.tmp/partial-HEX)
// follow the same rule: gc removes them unless a live puller holds them.
//
// # Downloads
//
// [Store.OpenPartial] keeps a download in .tmp/partial-HEX, named by the
// expected digest so that a later attempt, in any process, resumes it: it
// re-hashes the bytes already there and reports the offset to continue from.
// Two pullers of one blob do not share the file: the second waits (polling,
// until its context ends, then [ErrBusy]) and, if the first completed the
// blob meanwhile, gets [ErrExists]. A partial that turns out longer than
// expected, or whose final digest is wrong, is removed; one cut short by the
// network is kept.
//
// # Locking
//
// Writers of one repository are serialised by [Store.Lock], an exclusive
// flock on REPO/.lock, taken by polling with back-off until the context ends.
// Readers never take it: they only ever see complete blobs and complete
// index files, because both appear by atomic rename.
//
// Ingest, CommitFile and partial downloads are safe without the lock (two
// writers of the same blob produce the same file, and the second rename is a
// no-op), but a caller that ingests a blob it is going to reference from the
// index must hold the lock from before the ingest until the index is written:
// otherwise a concurrent gc, which only keeps what the index references, may
// reclaim the blob in between. Read-modify-write of index.yaml needs the lock
// for the usual reason. [Store.GC] takes the held [Lock] as an argument, as
// proof, and refuses to run without it.
//
// The package is Linux-only (flock, renameat2), like canga.
//
// Progress callbacks receive the total number of bytes processed so far
// (not increments); the package never prints.
package cas
