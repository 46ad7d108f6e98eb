// Package qcow2 reads, checks and writes qcow2 disk images without qemu.
//
// The format is the one of qemu's docs/interop/qcow2.rst: versions 2 and 3,
// cluster sizes from 512 bytes to 2 MiB, refcount widths from 1 to 64 bits,
// zero clusters, deflate ("zlib") and zstd compressed clusters, extended L2
// entries with subclusters, and backing chains of qcow2 and raw files.
//
// Reading: every number read from a file is checked before it is used, the
// way qemu bounds them (an L1 table of at most 32 MiB, a refcount table of
// at most 8 MiB, a header no longer than a cluster, a backing file name of
// at most 1023 bytes) and, where it names a place in the file, against the
// file's size. Nothing is allocated from an unchecked number, and bad input
// is an error, never a panic; should a bug panic all the same while an
// image is read, the panic becomes an error wrapping [ErrInternal] that
// names the image and the guest offset. A compressed cluster decodes into
// exactly one cluster, as in qemu: zstd with klauspost/compress, deflate
// with canga's own decoder, which accepts and refuses exactly the streams
// that qemu's zlib does (FuzzInflate compares the two). L1 and L2 entries
// have one codec (l2entry.go) that the reader, the writer and the checker
// share. [Image] and [Raw] implement [Disk]: an
// [io.ReaderAt] over the guest-visible content that is safe for concurrent
// use and that can describe which ranges hold data ([Disk.Extent]), so
// callers skip I/O for holes. [OpenFile] opens an image with its backing
// chain; [Scan] and [Digest] read a disk in order with parallel read-ahead
// and decompression.
//
// Opening: [Open] and [OpenFile] refuse every image that qemu refuses to
// open, with qemu's limits and reasons: the checks of qemu's
// qcow2_do_open on the header, its extensions (backing format, feature
// names, bitmaps, crypto, data file), the feature bits, the reference
// count table, the active L1 table, the snapshot table and each entry's
// extra data, and the persistent bitmaps (qemu_open_test.go has one case
// each). Deliberate differences, all stricter than qemu, which reads the
// bytes past the end of the file as zeros (docs/qemu-differences.md):
//   - a data cluster, or an L2 table, that lies wholly or partly past the
//     end of the file is an error when it is read (qemu reads zeros, even
//     for the last bytes of an L2 table cut by the end of the file);
//   - truncated tables are an error at open: the part of the active L1
//     table that maps the disk, the reference count table, the snapshot
//     table entries, the bitmap directory and the tables of the bitmaps
//     that are not in use must lie in the file, and the header and its
//     extensions too;
//   - the L1 and reference count tables may not lie over the header;
//     header_length must be a multiple of 8, as the format says; a backing
//     file name may not overlap the header nor hold a NUL byte; a header
//     extension other than the feature name table may appear once;
//   - encryption and external data files are not supported; backing file
//     names must be plain file names, and chains at most [MaxChainDepth]
//     deep.
//
// Checking: [Check] rebuilds the refcounts from the metadata and reports
// what qemu-img check reports, with the same counts.
//
// Writing: [Convert] writes any [Disk] as a qcow2 version 3 image,
// uncompressed or compressed ([Compression]: zlib, zstd) on all cores, or as a delta
// against a base; [Create] writes an empty image; [SetBacking] rewrites the
// backing file name in place (qemu-img rebase -u). Everything written
// passes qemu-img check with no errors and no leaks.
package qcow2
