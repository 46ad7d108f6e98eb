// Package qcow2 reads, checks and writes qcow2 disk images without qemu.
//
// The format is the one of qemu's docs/interop/qcow2.rst: versions 2 and 3,
// cluster sizes from 512 bytes to 2 MiB, refcount widths from 1 to 64 bits,
// zero clusters, deflate ("zlib") and zstd compressed clusters, extended L2
// entries with subclusters, and backing chains of qcow2 and raw files.
//
// Every number read from a file is checked before it is used, the way qemu
// bounds them (an L1 table of at most 32 MiB, a refcount table of at most
// 8 MiB, a header no longer than a cluster, a backing file name of at most
// 1023 bytes) and, where it names a place in the file, against the file's
// size. Nothing is allocated from an unchecked number, and bad input is an
// error, never a panic.
//
// [Image] and [Raw] implement [Disk]: an [io.ReaderAt] over the guest-visible
// content that is safe for concurrent use and that can describe which ranges
// hold data, so callers skip I/O for holes ([Disk.Extent]).
package qcow2
