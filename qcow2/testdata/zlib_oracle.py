#!/usr/bin/env python3
"""zlib as qemu uses it, for canga's fuzz tests (qcow2/zlib_fuzz_test.go).

Reads requests from stdin and answers on stdout, until stdin closes.
A request is: op (1 byte), arg (4 bytes, big-endian), length (4 bytes,
big-endian), then length bytes of payload. An answer is: status (1 byte,
1 = done, 0 = refused), length (4 bytes, big-endian), then the bytes.

op "D": decompress the raw deflate stream in the payload into one cluster
of arg bytes, as qemu's qcow2_zlib_decompress does: inflate with Z_FINISH
into an arg-byte buffer, done when the buffer is full, whether the stream
ended there (Z_STREAM_END) or the input ran out (Z_BUF_ERROR); refused
on any error, or when the stream ends before the buffer is full. What
follows in the payload is ignored, as qemu ignores the rest of the last
sector.

qemu inflates with windowBits -12 in one call, so that its output buffer
is the window; Python inflates into blocks of its own, which need the
window to reach back across them: -15 lets a distance reach as far back
as the output that one call would hold, which is exactly what qemu's call
accepts.

op "C": compress the payload as a raw deflate stream; arg holds the level
(low byte, 255 for the default), windowBits (next byte, 9 to 15, used
negated), memLevel (next byte, 1 to 9) and the strategy (top byte).

op "S": like "C", but the stream is not finished: it ends with a sync
flush (an empty stored block that is not the last), so that whatever
follows it is read as the next block.
"""
import struct
import sys
import zlib


def read_exact(f, n):
    b = f.read(n)
    if len(b) != n:
        return None
    return b


def decompress(n, data):
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(data, n)
    except zlib.error:
        return 0, b""
    if len(out) != n:
        return 0, out
    return 1, out


def compress(arg, data, mode=zlib.Z_FINISH):
    level = arg & 0xFF
    if level == 0xFF:
        level = -1
    wbits = (arg >> 8) & 0xFF
    mem = (arg >> 16) & 0xFF
    strategy = (arg >> 24) & 0xFF
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem, strategy)
    return 1, c.compress(data) + c.flush(mode)


def main():
    rd, wr = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = read_exact(rd, 9)
        if head is None:
            return
        op, arg, n = head[0:1], *struct.unpack(">II", head[1:9])
        data = read_exact(rd, n)
        if data is None:
            return
        if op == b"D":
            status, out = decompress(arg, data)
        elif op == b"C":
            status, out = compress(arg, data)
        elif op == b"S":
            status, out = compress(arg, data, zlib.Z_SYNC_FLUSH)
        else:
            status, out = 0, b"unknown op"
        wr.write(struct.pack(">BI", status, len(out)) + out)
        wr.flush()


if __name__ == "__main__":
    main()
