package qcow2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// DefaultClusterSize is qemu's default, and canga's but for zstd.
const DefaultClusterSize = 64 << 10

// ZstdClusterSize is the default cluster size of zstd-compressed images.
// zstd gains from a larger frame where deflate, with its 32 KiB window,
// does not: at 256 KiB even zstd's fastest level writes a smaller image
// than qemu's level 3 at 64 KiB, in two thirds of the time. A guest read
// that misses qemu's one-cluster cache then decompresses 256 KiB instead
// of 64 KiB, a fraction of a millisecond.
const ZstdClusterSize = 256 << 10

// DefaultClusterSizeFor is the cluster size [Convert] uses for a
// compression when the options give none.
func DefaultClusterSizeFor(c Compression) int64 {
	if c == CompressionZstd {
		return ZstdClusterSize
	}
	return DefaultClusterSize
}

// ConvertOptions describes the qcow2 image [Convert] writes.
type ConvertOptions struct {
	ClusterSize int64 // a power of two from 512 bytes to 2 MiB; default [DefaultClusterSizeFor]
	// Compression of the clusters; the zero value "" means
	// [CompressionNone], as does CompressionNone.
	Compression Compression

	// BackingFile and BackingFormat go into the header as given.
	BackingFile   string
	BackingFormat string

	// Base makes the output a delta: only clusters whose content differs
	// from Base's at the same offset are written; clusters that differ
	// by being zero are written as zero clusters. Base is normally the
	// image BackingFile names.
	Base Disk
	// SameAsBase, if set, tells which ranges of the source are known to
	// equal Base without reading either (for a source whose backing chain
	// contains Base: the ranges no layer above Base allocates). It
	// returns an extent of [Unallocated] for such ranges.
	SameAsBase func(off, length int64) (Extent, error)

	// Hash, if set, receives the whole guest-visible content of the
	// source, in order: the image ID comes out of the same pass.
	Hash hash.Hash

	Workers  int              // compressing goroutines; default GOMAXPROCS
	Progress func(done int64) // guest bytes processed so far
}

// ConvertStats counts what [Convert] wrote.
type ConvertStats struct {
	VirtualSize        int64
	DataClusters       int64 // stored uncompressed
	CompressedClusters int64
	ZeroClusters       int64 // zero clusters hiding backing data
	FileSize           int64
}

// Cluster kinds in a converted chunk.
const (
	outSkip       = iota // unallocated: zero, or the same as the base
	outZero              // a zero cluster over base data
	outData              // payload is the raw cluster
	outCompressed        // payload is compressed
)

type convertedChunk struct {
	kinds []uint8
	ends  []int32 // payload i is out[ends[i-1]:ends[i]]
	out   []byte
	// in is the source chunk, kept for ConvertOptions.Hash; nil when the
	// chunk reads as zeros.
	in []byte
	n  int64
}

// Convert writes src as a qcow2 version 3 image to w, which must be empty.
// It reads ahead and compresses on all cores and writes in guest order.
// Nothing it writes is a valid image until it returns nil: the header is
// written last.
func Convert(ctx context.Context, w io.WriterAt, src Disk, opt ConvertOptions) (ConvertStats, error) {
	cs := opt.ClusterSize
	if cs == 0 {
		cs = DefaultClusterSizeFor(opt.Compression)
	}
	if cs < 1<<MinClusterBits || cs > 1<<MaxClusterBits || cs&(cs-1) != 0 {
		return ConvertStats{}, fmt.Errorf("qcow2: cluster size %d: must be a power of two from 512 to 2M", cs)
	}
	clusterBits := uint32(0)
	for int64(1)<<clusterBits < cs {
		clusterBits++
	}
	if opt.Compression != "" && !opt.Compression.Valid() {
		return ConvertStats{}, fmt.Errorf("qcow2: unknown compression %q (want zlib, zstd or none)", opt.Compression)
	}
	size := src.Size()
	hdr := Header{ClusterBits: clusterBits}
	if hdr.l1EntriesFor(uint64(size))*8 > maxL1Bytes {
		return ConvertStats{}, fmt.Errorf("qcow2: a virtual size of %d bytes needs larger clusters than %d bytes", size, cs)
	}
	if _, err := putExtensions(make([]byte, cs), 112, headerFields{opt.BackingFile, opt.BackingFormat}); err != nil {
		return ConvertStats{}, err
	}

	chunk, workers := ScanOptions{Workers: opt.Workers}.chunking() // chunks are multiples of every cluster size
	if size < chunk {
		// A small disk needs no buffers larger than itself.
		chunk = max(cs, (size+cs-1)&^(cs-1))
	}
	perChunk := int(chunk / cs)
	comps := make([]*compressor, workers)
	for i := range comps {
		c, err := newCompressor(opt.Compression, int(cs))
		if err != nil {
			return ConvertStats{}, err
		}
		comps[i] = c
	}
	inBufs := newBufferPool(jobBuffers(workers), int(chunk))
	baseBufs := newBufferPool(jobBuffers(workers), int(chunk))
	// Compressed output may exceed its input by a little per cluster
	// before it is found not to shrink.
	outBufs := newBufferPool(jobBuffers(workers), int(chunk)+perChunk*64)

	l := newLayout(w, size, clusterBits, headerCompression(opt.Compression))
	var st ConvertStats
	st.VirtualSize = size
	nChunks := (size + chunk - 1) / chunk
	err := runOrdered(ctx, nChunks, workers, chunkJob("converting", src, chunk),
		func(ctx context.Context, worker int, i int64) (convertedChunk, error) {
			return convertChunk(ctx, src, &opt, comps[worker], inBufs, baseBufs, outBufs, i*chunk, min(chunk, size-i*chunk), cs)
		},
		func(i int64, c convertedChunk) error {
			first := i * chunk / cs
			start := int32(0)
			for k, kind := range c.kinds {
				p := c.out[start:c.ends[k]]
				start = c.ends[k]
				switch kind {
				case outZero:
					l.zero(first + int64(k))
					st.ZeroClusters++
				case outData:
					l.data(first+int64(k), p)
					st.DataClusters++
				case outCompressed:
					l.compressed(first+int64(k), p)
					st.CompressedClusters++
				}
			}
			outBufs.put(c.out[:cap(c.out)])
			if opt.Hash != nil {
				if c.in != nil {
					opt.Hash.Write(c.in[:c.n])
					inBufs.put(c.in)
				} else {
					hashZeros(opt.Hash, c.n)
				}
			}
			if opt.Progress != nil {
				opt.Progress(i*chunk + min(chunk, size-i*chunk))
			}
			return l.err
		})
	if err != nil {
		return st, err
	}
	if err := l.finish(headerFields{opt.BackingFile, opt.BackingFormat}); err != nil {
		return st, err
	}
	st.FileSize = l.next * cs
	return st, nil
}

// convertChunk decides, for each cluster of one chunk, what to store.
func convertChunk(ctx context.Context, src Disk, opt *ConvertOptions, comp *compressor, inBufs, baseBufs, outBufs *bufferPool, off, n, cs int64) (convertedChunk, error) {
	clusters := int((n + cs - 1) / cs)
	c := convertedChunk{kinds: make([]uint8, clusters), ends: make([]int32, clusters), n: n}
	out, err := outBufs.get(ctx)
	if err != nil {
		return c, err
	}
	c.out = out[:0]

	// Ranges known to equal the base need no reading at all.
	same := make([]bool, clusters)
	allSame := false
	if opt.Base != nil && opt.SameAsBase != nil {
		allSame = true
		for pos := off; pos < off+n; {
			e, err := opt.SameAsBase(pos, off+n-pos)
			if err != nil {
				return c, err
			}
			if e.Length <= 0 {
				return c, fmt.Errorf("qcow2: empty extent at %#x", pos)
			}
			if e.Kind == Unallocated {
				// Only clusters wholly inside the range are the same.
				for k := (e.Offset - off + cs - 1) / cs; (k+1)*cs <= e.Offset+e.Length-off && k < int64(clusters); k++ {
					same[k] = true
				}
			}
			pos = e.Offset + e.Length
		}
		for _, s := range same {
			allSame = allSame && s
		}
		if n%cs != 0 && !same[clusters-1] {
			// The last partial cluster: same if the range reaches the end.
			e, err := opt.SameAsBase(off+int64(clusters-1)*cs, n-int64(clusters-1)*cs)
			if err == nil && e.Kind == Unallocated && e.Length >= n-int64(clusters-1)*cs {
				same[clusters-1] = true
			}
			allSame = allSame && same[clusters-1]
		}
	}
	if allSame && opt.Hash == nil {
		return c, nil
	}

	in, err := inBufs.get(ctx)
	if err != nil {
		return c, err
	}
	// Pad the last cluster with zeros: a cluster is stored whole.
	padded := in[:int64(clusters)*cs]
	srcZero, err := readChunk(src, padded[:n], off)
	if err != nil {
		inBufs.put(in)
		return c, err
	}
	if srcZero && opt.Base == nil {
		inBufs.put(in)
		return c, nil // nothing to store; the hash gets zeros
	}
	if srcZero {
		clear(padded[:n]) // compared with the base below
	}
	clear(padded[n:])
	if opt.Hash != nil {
		c.in = in // deliver hashes it, then frees it
	} else {
		defer inBufs.put(in)
	}
	if allSame {
		return c, nil
	}

	var base []byte
	baseZero := true
	if opt.Base != nil {
		b, err := baseBufs.get(ctx)
		if err != nil {
			return c, err
		}
		defer baseBufs.put(b)
		base = b[:len(padded)]
		if baseZero, err = readChunk(opt.Base, base[:n], off); err != nil {
			return c, fmt.Errorf("read base: %w", err)
		}
		clear(base[n:])
	}

	zeros := zeroChunk()[:cs]
	for k := range clusters {
		p := padded[int64(k)*cs : int64(k+1)*cs]
		isZero := bytes.Equal(p, zeros)
		switch {
		case same[k]:
			c.kinds[k] = outSkip
		case opt.Base == nil || baseZero:
			if !isZero {
				c.kinds[k] = outData
			}
		default:
			b := base[int64(k)*cs : int64(k+1)*cs]
			switch {
			case bytes.Equal(p, b):
				c.kinds[k] = outSkip
			case isZero:
				c.kinds[k] = outZero
			default:
				c.kinds[k] = outData
			}
		}
		if c.kinds[k] == outData {
			start := len(c.out)
			if comp != nil {
				z, err := comp.compress(c.out, p)
				if err != nil {
					return c, err
				}
				if len(z)-start < int(cs) {
					c.out = z
					c.kinds[k] = outCompressed
				}
			}
			if c.kinds[k] == outData {
				c.out = append(c.out[:start], p...)
			}
		}
		c.ends[k] = int32(len(c.out))
	}
	return c, nil
}

// compressor compresses clusters for one goroutine, reusing its state.
type compressor struct {
	zlib *flate.Writer
	zstd *zstd.Encoder
	sink appendWriter
}

// DeflateLevel is the compression level of zlib clusters: with a 32 KiB
// window (qemu uses 4 KiB), it matches qemu's output size at a fraction of
// its time.
const DeflateLevel = 5

func newCompressor(name Compression, clusterSize int) (*compressor, error) {
	c := &compressor{}
	switch name {
	case "", CompressionNone:
		return nil, nil
	case CompressionZlib:
		w, err := flate.NewWriter(&c.sink, DeflateLevel)
		if err != nil {
			return nil, err
		}
		c.zlib = w
	case CompressionZstd:
		// Large clusters compress well at the fastest level (see
		// ZstdClusterSize); small ones need the default level to stay
		// near qemu's size.
		level := zstd.SpeedDefault
		if clusterSize >= ZstdClusterSize {
			level = zstd.SpeedFastest
		}
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderLevel(level),
			// Entropy-code literals even when no match is found: text
			// and binaries with few repeats still shrink, at little cost.
			zstd.WithAllLitEntropyCompression(true),
			zstd.WithEncoderCRC(false),
			zstd.WithSingleSegment(true),
			zstd.WithWindowSize(max(zstd.MinWindowSize, clusterSize)),
			zstd.WithZeroFrames(true))
		if err != nil {
			return nil, err
		}
		c.zstd = e
	}
	return c, nil
}

// compress appends the compressed form of p to dst.
func (c *compressor) compress(dst, p []byte) ([]byte, error) {
	if c.zstd != nil {
		return c.zstd.EncodeAll(p, dst), nil
	}
	c.sink.b = dst
	c.zlib.Reset(&c.sink)
	if _, err := c.zlib.Write(p); err != nil {
		return nil, err
	}
	if err := c.zlib.Close(); err != nil {
		return nil, err
	}
	return c.sink.b, nil
}

// hashZeros writes n zero bytes to h.
func hashZeros(h hash.Hash, n int64) {
	zeros := zeroChunk()
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}

type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// ConvertRaw writes the guest-visible content of src to f as a raw image.
// Ranges of zeros are left as holes.
func ConvertRaw(ctx context.Context, f *os.File, src Disk, opt ScanOptions) error {
	const block = 4096 // holes at the file system's granularity
	zeros := zeroChunk()[:block]
	err := Scan(ctx, src, opt, func(off int64, p []byte, zero bool) error {
		if zero {
			return nil
		}
		for i := 0; i < len(p); {
			// Find the next run of non-zero blocks and write it whole.
			for i < len(p) && bytes.Equal(p[i:min(i+block, len(p))], zeros[:min(block, len(p)-i)]) {
				i += block
			}
			j := i
			for j < len(p) && !bytes.Equal(p[j:min(j+block, len(p))], zeros[:min(block, len(p)-j)]) {
				j += block
			}
			if i < len(p) {
				if _, err := f.WriteAt(p[i:min(j, len(p))], off+int64(i)); err != nil {
					return err
				}
			}
			i = j
		}
		return nil
	})
	if err != nil {
		return err
	}
	return f.Truncate(src.Size())
}

// Create writes an empty qcow2 version 3 image of size bytes to w.
func Create(w io.WriterAt, size int64, opt ConvertOptions) error {
	if opt.Base != nil || opt.SameAsBase != nil {
		return errors.New("qcow2: Create takes no base")
	}
	_, err := Convert(context.Background(), w, zeroDisk(size), opt)
	return err
}

// zeroDisk is an unallocated disk of some size.
type zeroDisk int64

func (z zeroDisk) Size() int64 { return (int64(z) + 511) &^ 511 }
func (z zeroDisk) ReadAt(p []byte, off int64) (int, error) {
	n, err := clampRead(len(p), off, z.Size())
	clear(p[:n])
	return n, err
}
func (z zeroDisk) Extent(off, length int64) (Extent, error) {
	n, _ := clampRead(int(min(length, z.Size())), off, z.Size())
	return Extent{Offset: off, Length: int64(n), Kind: Unallocated}, nil
}
func (z zeroDisk) Close() error { return nil }
