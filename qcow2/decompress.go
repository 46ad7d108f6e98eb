package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Decompressors are pooled: building one allocates tables and windows that
// dwarf a cluster, and a scan decompresses thousands of clusters.
var (
	zstdPool = sync.Pool{New: func() any {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			// A qemu cluster is at most 2 MiB, so its frame never needs a
			// larger window; a hostile frame asking for more is refused
			// instead of allocated.
			zstd.WithDecoderMaxWindow(8<<20),
			zstd.WithDecoderMaxMemory(8<<20))
		if err != nil {
			return err
		}
		return d
	}}
)

// decompressCluster fills dst (one cluster) from the compressed bytes src.
// Like qemu, it stops once dst is full and ignores what follows: the tail
// of the last sector may belong to the next compressed cluster.
func decompressCluster(typ uint8, dst, src []byte) error {
	var err error
	switch typ {
	case headerCompressionZlib:
		err = inflateCluster(dst, src)
	case headerCompressionZstd:
		err = unzstd(dst, src)
	default:
		err = fmt.Errorf("compression type %d", typ)
	}
	return err
}

// onlyReader hides every method of a reader but Read, so that decoders
// take their streaming path instead of decoding all of src at once.
type onlyReader struct{ r *bytes.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func unzstd(dst, src []byte) error {
	v := zstdPool.Get()
	d, ok := v.(*zstd.Decoder)
	if !ok {
		return fmt.Errorf("zstd decoder: %v", v)
	}
	// Not deferred: a decoder that panicked is not reused.
	if err := d.Reset(onlyReader{bytes.NewReader(src)}); err != nil {
		zstdPool.Put(d)
		return err
	}
	_, err := io.ReadFull(d, dst)
	// Drop the reference to src so the pool does not keep it alive.
	_ = d.Reset(nil)
	zstdPool.Put(d)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}
