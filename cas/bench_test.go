package cas

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
)

var benchSizes = []int{1 << 20, 64 << 20}

// BenchmarkIngest measures ingest from memory: hashing, writing, fsync and
// rename. Every iteration stores new bytes (the first 8 differ), and removing
// the blob is outside the timed part.
func BenchmarkIngest(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%dMiB", size>>20), func(b *testing.B) {
			s, err := Init(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			data := content(70, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			i := uint64(0)
			for b.Loop() {
				i++
				binary.LittleEndian.PutUint64(data, i)
				info, err := s.Ingest(context.Background(), bytes.NewReader(data), "", int64(size), nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Remove(info.Digest); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCommitFile measures committing a file already written to .tmp/:
// a sequential re-read to hash it, fsync and rename.
func BenchmarkCommitFile(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%dMiB", size>>20), func(b *testing.B) {
			s, err := Init(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			data := content(71, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			i := uint64(0)
			for b.Loop() {
				b.StopTimer()
				i++
				binary.LittleEndian.PutUint64(data, i)
				tf, err := s.CreateTemp("bench-*")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(tf, bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				info, err := s.CommitFile(context.Background(), tf, "", nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Remove(info.Digest); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
