package cas

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
)

// A chunk list (SPEC §9) is the SHA-256 of each chunk-size piece of a
// blob, in order, the last piece possibly short, as 32 raw bytes each. It
// lets a reader check any piece of a blob it fetched alone, long before
// the whole blob's digest can be checked.

// ChunkSumSize is the size of one entry of a chunk list.
const ChunkSumSize = sha256.Size

// MinChunkSize and MaxChunkSize bound a chunk size: a power of two in
// between. The bounds keep a chunk list small (at most 1/128 of its blob)
// and a chunk small enough to fetch for one read.
const (
	MinChunkSize = 4 << 10
	MaxChunkSize = 64 << 20
)

// ErrChunkMismatch: a chunk's bytes are not the ones its chunk list names.
// It also matches [ErrDigestMismatch].
var ErrChunkMismatch = errors.New("cas: chunk mismatch")

type chunkMismatch struct {
	index int64
}

func (e *chunkMismatch) Error() string {
	return fmt.Sprintf("cas: chunk %d does not match the chunk list", e.index)
}

func (e *chunkMismatch) Is(target error) bool {
	return target == ErrChunkMismatch || target == ErrDigestMismatch
}

// CheckChunkSize accepts a power of two from MinChunkSize to MaxChunkSize.
func CheckChunkSize(n int64) error {
	if n < MinChunkSize || n > MaxChunkSize || n&(n-1) != 0 {
		return fmt.Errorf("chunk size %d: want a power of two from %d to %d", n, MinChunkSize, MaxChunkSize)
	}
	return nil
}

// ChunkCount is the number of chunks of a blob of size bytes.
func ChunkCount(size, chunkSize int64) int64 {
	return (size + chunkSize - 1) / chunkSize
}

// MaxChunkListSize bounds a chunk list, which is held in memory whole:
// 64 MiB, the list of a 2 TiB blob in 1 MiB chunks. A blob size in an
// index is the publisher's word, and must not size an allocation beyond it.
const MaxChunkListSize = 64 << 20

// ChunkListSize is the size of the chunk list of a blob of size bytes in
// chunks of chunkSize. It refuses a chunk size CheckChunkSize refuses, a
// negative size, and a list longer than MaxChunkListSize.
func ChunkListSize(size, chunkSize int64) (int64, error) {
	if err := CheckChunkSize(chunkSize); err != nil {
		return 0, err
	}
	// Divided first: size+chunkSize-1 could overflow.
	if size < 0 || size/chunkSize >= MaxChunkListSize/ChunkSumSize {
		return 0, fmt.Errorf("a chunk list of a %d-byte blob in chunks of %d: more than %d bytes, or a negative size", size, chunkSize, MaxChunkListSize)
	}
	return ChunkCount(size, chunkSize) * ChunkSumSize, nil
}

// CheckChunkList checks that list is a chunk list's shape for a blob of
// size bytes in chunks of chunkSize: exactly one sum per chunk.
func CheckChunkList(list []byte, size, chunkSize int64) error {
	want, err := ChunkListSize(size, chunkSize)
	if err != nil {
		return err
	}
	if int64(len(list)) != want {
		return fmt.Errorf("chunk list of %d bytes for a %d-byte blob in chunks of %d", len(list), size, chunkSize)
	}
	return nil
}

// ChunkList computes the chunk list of the bytes of r.
func ChunkList(r io.Reader, chunkSize int64) ([]byte, error) {
	if err := CheckChunkSize(chunkSize); err != nil {
		return nil, err
	}
	c := newChunker(chunkSize, nil)
	if _, err := io.Copy(c, r); err != nil {
		return nil, err
	}
	return c.list(), nil
}

// chunker computes a chunk list of what is written to it, in the same
// pass as the blob's digest. With want (a chunk list), it also checks each
// chunk as it completes and fails the write that completes a wrong one.
type chunker struct {
	size int64
	h    hash.Hash
	n    int64 // bytes in the current chunk
	sums []byte
	want []byte
}

func newChunker(size int64, want []byte) *chunker {
	return &chunker{size: size, h: sha256.New(), want: want}
}

func (c *chunker) Write(p []byte) (int, error) {
	written := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), c.size-c.n)
		c.h.Write(p[:k])
		c.n += k
		p = p[k:]
		if c.n == c.size {
			if err := c.close(); err != nil {
				return 0, err
			}
		}
	}
	return written, nil
}

// close ends the current chunk.
func (c *chunker) close() error {
	i := int64(len(c.sums) / ChunkSumSize)
	c.sums = c.h.Sum(c.sums)
	c.h.Reset()
	c.n = 0
	if c.want != nil {
		if end := (i + 1) * ChunkSumSize; end > int64(len(c.want)) || !bytes.Equal(c.sums[i*ChunkSumSize:], c.want[i*ChunkSumSize:end]) {
			c.sums = c.sums[:i*ChunkSumSize]
			return &chunkMismatch{index: i}
		}
	}
	return nil
}

// list ends a short last chunk and returns the list.
func (c *chunker) list() []byte {
	if c.n > 0 {
		_ = c.close() // a short last chunk is checked by the blob's digest
	}
	return c.sums
}

// WithChunks has a write compute the chunk list of the blob it stores, in
// chunks of chunkSize, into [BlobInfo].Chunks: in the same pass that
// hashes the blob, or, for a blob already stored, by reading it.
func WithChunks(chunkSize int64) Option {
	return func(o *options) { o.chunkSize = chunkSize }
}

// WithChunkList gives a partial download ([Store.OpenPartial]) the chunk
// list its blob must have, in chunks of chunkSize: each chunk is checked
// as it arrives, and chunks can be written out of order
// ([Partial.WriteChunk]).
func WithChunkList(chunkSize int64, list []byte) Option {
	return func(o *options) { o.chunkSize, o.wantChunks = chunkSize, list }
}

// hashers returns where copyHashed writes for a write with opts: the
// blob's hash, and the chunker when a chunk list is asked for.
func hashers(h hash.Hash, o options) (io.Writer, *chunker) {
	if o.chunkSize == 0 {
		return h, nil
	}
	c := newChunker(o.chunkSize, nil)
	return parallelHashes{h, c}, c
}
