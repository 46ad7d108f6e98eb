// Package nbd serves one read-only export over the Network Block Device
// protocol, as the NBD project's doc/proto.md specifies it
// (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md):
// the protocol qemu, qemu-img, qemu-io, nbd-client and libguestfs speak. It
// is what `canga nbd` runs over an image's guest-visible content, an
// [io.ReaderAt] of a known size, on a unix socket or a loopback TCP port.
//
// Only what a read-only export needs is spoken, from the specification:
//
//   - The fixed newstyle handshake (NBD_FLAG_FIXED_NEWSTYLE,
//     NBD_FLAG_NO_ZEROES), with the options NBD_OPT_GO and NBD_OPT_INFO
//     (replying NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE and, when asked,
//     NBD_INFO_NAME and NBD_INFO_DESCRIPTION), NBD_OPT_EXPORT_NAME for old
//     clients, NBD_OPT_LIST and NBD_OPT_ABORT. NBD_OPT_STARTTLS is refused
//     with NBD_REP_ERR_POLICY (no TLS: the export is for local clients);
//     every other option, extended headers among them, gets
//     NBD_REP_ERR_UNSUP.
//   - Structured replies (NBD_OPT_STRUCTURED_REPLY), and with them the
//     base:allocation metadata context (NBD_OPT_LIST_META_CONTEXT,
//     NBD_OPT_SET_META_CONTEXT) when the server has an [AllocationFunc]:
//     NBD_CMD_BLOCK_STATUS then tells a client which ranges are holes
//     (NBD_STATE_HOLE and NBD_STATE_ZERO), so that qemu-img convert or
//     qemu-img map skip them instead of reading zeros. A read is then
//     answered with one NBD_REPLY_TYPE_OFFSET_DATA chunk, an error with one
//     NBD_REPLY_TYPE_ERROR chunk.
//   - Transmission: NBD_CMD_READ, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLUSH (a
//     no-op: nothing is ever written), NBD_CMD_DISC. Writes, trims and
//     write-zeroes get NBD_EPERM (the export is NBD_FLAG_READ_ONLY; a
//     write's payload is read and dropped), anything else NBD_EINVAL.
//     Export flags: HAS_FLAGS, READ_ONLY, SEND_FLUSH and CAN_MULTI_CONN
//     (nothing is cached per connection, so connections may be mixed).
//
// Requests of a connection run concurrently and their replies may come out
// of order, as the protocol allows; a reply is written whole under a lock.
// A read or block status that fails, or a bug that panics in one, is
// NBD_EIO for that request only: the connection goes on.
//
// Clients are not trusted. An option longer than 64 KiB, a bad magic
// number, unknown client flags or a write longer than [MaxRequest] close
// the connection; a read longer than [MaxRequest] (32 MiB, the limit the
// specification tells portable clients to keep to, advertised with
// NBD_INFO_BLOCK_SIZE) or past the end of the export is NBD_EINVAL; a block
// status reply has at most 1024 extents, and may stop short of the range
// asked for, as the specification allows. The
// whole handshake must end within a deadline ([WithHandshakeTimeout]) so a
// client that dawdles cannot hold a connection open. Memory is bounded per
// connection: at most [WithInFlight] requests and bytes are read at once,
// and a client that stops reading its replies only stops the server from
// reading its further requests. Every goroutine turns a panic into an
// error wrapping [ErrInternal].
package nbd
