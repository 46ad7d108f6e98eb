package qcow2

import "fmt"

// Compression names how the clusters of an image are compressed. It is
// the one vocabulary of canga: [ConvertOptions], the header ([Header.Compression])
// and the index of a repository all use it.
type Compression string

const (
	CompressionNone Compression = "none"
	CompressionZlib Compression = "zlib" // raw deflate, as qemu calls it
	CompressionZstd Compression = "zstd"
)

// Valid reports whether c is one of the named compressions. The zero
// value "" is not: where it is allowed it means "none" ([ConvertOptions])
// or "unknown".
func (c Compression) Valid() bool {
	return c == CompressionNone || c == CompressionZlib || c == CompressionZstd
}

// ParseCompression returns the compression named s: zlib, zstd or none.
func ParseCompression(s string) (Compression, error) {
	if c := Compression(s); c.Valid() {
		return c, nil
	}
	return "", fmt.Errorf("qcow2: unknown compression %q (want zlib, zstd or none)", s)
}

// The header's compression_type field (qcow2.rst, byte 104): which
// algorithm the compressed clusters use, zlib unless the compression type
// feature bit says otherwise.
const (
	headerCompressionZlib uint8 = 0
	headerCompressionZstd uint8 = 1
)

// headerCompression is the compression_type field for c: zlib's for
// everything but zstd, since an image without compressed clusters
// declares zlib too.
func headerCompression(c Compression) uint8 {
	if c == CompressionZstd {
		return headerCompressionZstd
	}
	return headerCompressionZlib
}
