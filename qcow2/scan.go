package qcow2

import (
	"context"
	"crypto/sha256"
	"hash"
	"runtime"
	"sync"

	"github.com/opencontainers/go-digest"
)

// DefaultChunkSize is the unit of a [Scan]: a multiple of every cluster
// size, and large enough that per-chunk overhead vanishes.
const DefaultChunkSize = 4 << 20

// ScanOptions tunes [Scan]. Zero values pick defaults.
type ScanOptions struct {
	ChunkSize int64 // a multiple of 2 MiB is best; defaults to DefaultChunkSize
	Workers   int   // readers running ahead; defaults to GOMAXPROCS
	// Progress, if set, is called from the consumer with the number of
	// guest bytes delivered so far.
	Progress func(done int64)
}

// zeroChunk is shared by every scan: chunks that read as zeros are handed
// out from it without I/O or clearing. It is made on first use, so that a
// command that reads no disk does not start with 4 MiB of heap, and a
// garbage collection, before its main.
var zeroChunk = sync.OnceValue(func() []byte { return make([]byte, DefaultChunkSize) })

// Scan reads d from start to end and calls fn for each chunk, in order.
// Workers read and decompress chunks ahead of fn, in parallel; chunks that
// hold no data are not read at all and are passed with zero set and p
// pointing at shared zeros. fn must not keep p after it returns. Memory use
// is a few chunks per worker, whatever the size of d.
func Scan(ctx context.Context, d Disk, opt ScanOptions, fn func(off int64, p []byte, zero bool) error) error {
	chunk, workers := opt.chunking()
	size := d.Size()
	if size < chunk {
		// A small disk needs no buffer larger than itself.
		chunk = max(512, (size+511)&^511)
	}
	zeros := zeroChunk()
	if chunk > int64(len(zeros)) {
		zeros = make([]byte, chunk)
	}
	type result struct {
		buf  []byte
		n    int64
		zero bool
	}
	pool := newBufferPool(jobBuffers(workers), int(chunk))
	return runOrdered(ctx, (size+chunk-1)/chunk, workers, chunkJob("reading", d, chunk),
		func(ctx context.Context, _ int, i int64) (result, error) {
			off := i * chunk
			n := min(chunk, size-off)
			buf, err := pool.get(ctx)
			if err != nil {
				return result{}, err
			}
			zero, err := readChunk(d, buf[:n], off)
			if err != nil {
				pool.put(buf)
				return result{}, err
			}
			return result{buf: buf, n: n, zero: zero}, nil
		},
		func(i int64, r result) error {
			defer pool.put(r.buf)
			p := r.buf[:r.n]
			if r.zero {
				p = zeros[:r.n]
			}
			if err := fn(i*chunk, p, r.zero); err != nil {
				return err
			}
			if opt.Progress != nil {
				opt.Progress(i*chunk + r.n)
			}
			return nil
		})
}

func (opt ScanOptions) chunking() (chunk int64, workers int) {
	workers = opt.Workers
	if workers <= 0 {
		// Past a few cores the reader of a single file gains little, and
		// every worker holds a few chunks: memory must not grow with the
		// machine either.
		workers = min(runtime.GOMAXPROCS(0), maxWorkers)
	}
	chunk = opt.ChunkSize
	if chunk <= 0 {
		chunk = DefaultChunkSize
		if workers > 4 {
			chunk = DefaultChunkSize / 2 // still a multiple of every cluster size
		}
	}
	return chunk, workers
}

// maxWorkers bounds the default parallelism.
const maxWorkers = 8

// readChunk reads p at off unless the chunk holds no data.
func readChunk(d Disk, p []byte, off int64) (zero bool, err error) {
	e, err := d.Extent(off, int64(len(p)))
	if err != nil {
		return false, err
	}
	if e.ReadsZero() && e.Length >= int64(len(p)) {
		return true, nil
	}
	return false, readDiskAt(d, p, off)
}

// Digest returns the image ID of d: the SHA-256 of its whole guest-visible
// content, as `qemu-img convert -O raw` would write it.
func Digest(ctx context.Context, d Disk, opt ScanOptions) (digest.Digest, error) {
	h := sha256.New()
	if err := HashInto(ctx, d, h, opt); err != nil {
		return "", err
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

// HashInto writes the guest-visible content of d into h.
func HashInto(ctx context.Context, d Disk, h hash.Hash, opt ScanOptions) error {
	return Scan(ctx, d, opt, func(_ int64, p []byte, _ bool) error {
		h.Write(p)
		return nil
	})
}
