package qcow2

import (
	"bytes"
	stdflate "compress/flate"
	"io"
	"math/rand/v2"
	"testing"

	kflate "github.com/klauspost/compress/flate"
)

// stdInflate is the reference: the standard library's streaming decoder,
// reading exactly one cluster.
func stdInflate(dst, src []byte) error {
	_, err := io.ReadFull(stdflate.NewReader(bytes.NewReader(src)), dst)
	return err
}

// clusterSamples returns cluster-sized inputs of several kinds.
func clusterSamples(size int) [][]byte {
	rng := rand.New(rand.NewPCG(uint64(size), 7))
	random := make([]byte, size)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := make([]byte, 0, size)
	for len(text) < size {
		text = append(text, []byte("canga keeps qcow2 images; qemu is the oracle. ")[:rng.IntN(40)+1]...)
		text = append(text, byte(rng.IntN(256)))
	}
	runs := make([]byte, size)
	for i := range runs {
		runs[i] = byte(i / 1000)
	}
	mixed := append([]byte(nil), random...)
	copy(mixed[size/4:], text[:size/2])
	low := make([]byte, size)
	for i := range low {
		low[i] = byte(rng.IntN(4))
	}
	return [][]byte{random, text[:size], runs, mixed, low, make([]byte, size)}
}

func TestInflateMatchesStdlib(t *testing.T) {
	for _, size := range []int{512, 4096, 65536, 2 << 20} {
		for si, want := range clusterSamples(size) {
			for _, level := range []int{stdflate.NoCompression, stdflate.HuffmanOnly, stdflate.BestSpeed, 2, 5, stdflate.DefaultCompression, stdflate.BestCompression} {
				var buf bytes.Buffer
				w, _ := stdflate.NewWriter(&buf, level)
				w.Write(want)
				w.Close()
				z := buf.Bytes()
				got := make([]byte, size)
				if err := inflateCluster(got, z); err != nil {
					t.Fatalf("size %d sample %d level %d: %v", size, si, level, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("size %d sample %d level %d: output differs", size, si, level)
				}
				// Garbage after the stream is ignored: it may be the next
				// cluster's bytes.
				if err := inflateCluster(got, append(z, 0xff, 0x13, 0x77)); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("trailing bytes: %v", err)
				}
				// Without its last byte (which may hold nothing but the
				// end-of-block code) a stream still decodes right or fails;
				// without its second half, it fails.
				if err := inflateCluster(got, z[:len(z)-1]); err == nil && !bytes.Equal(got, want) {
					t.Fatalf("size %d sample %d level %d: truncated stream decoded wrong", size, si, level)
				}
				if err := inflateCluster(got, z[:len(z)/2]); err == nil {
					t.Fatalf("size %d sample %d level %d: half a stream accepted", size, si, level)
				}
				if err := inflateCluster(make([]byte, size+512), z); err == nil {
					t.Fatalf("size %d sample %d level %d: short stream accepted", size, si, level)
				}
			}
		}
	}
}

// FuzzInflate checks the decoder against the standard library on
// arbitrary input: whatever the standard library decodes to a full
// cluster, inflateCluster must decode to the same bytes, unless zlib (the
// decoder qemu uses) refuses the stream too; nothing panics.
func FuzzInflate(f *testing.F) {
	for _, s := range clusterSamples(4096) {
		for _, level := range []int{0, -2, 1, 6, 9} {
			var buf bytes.Buffer
			w, _ := stdflate.NewWriter(&buf, level)
			w.Write(s)
			w.Close()
			f.Add(buf.Bytes(), uint16(4096))
		}
	}
	f.Add([]byte{0x03, 0x00}, uint16(1))
	f.Fuzz(func(t *testing.T, src []byte, n uint16) {
		if n == 0 {
			return
		}
		got := make([]byte, n)
		err := inflateCluster(got, src)
		want := make([]byte, n)
		if stdInflate(want, src) == nil && err != errInflateNoEOB {
			if err != nil {
				t.Fatalf("stdlib decodes, inflateCluster says %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("output differs from stdlib")
			}
		}
	})
}

// kflateInflate is the baseline BenchmarkInflate compares with: the
// streaming decoder of github.com/klauspost/compress/flate.
func kflateInflate(dst, src []byte) error {
	_, err := io.ReadFull(kflate.NewReader(bytes.NewReader(src)), dst)
	return err
}

func BenchmarkInflate(b *testing.B) {
	for _, s := range clusterSamples(65536)[1:4] {
		var buf bytes.Buffer
		w, _ := stdflate.NewWriter(&buf, 6)
		w.Write(s)
		w.Close()
		z := buf.Bytes()
		dst := make([]byte, len(s))
		b.Run("canga", func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			b.ReportAllocs()
			for b.Loop() {
				if err := inflateCluster(dst, z); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("klauspost", func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			b.ReportAllocs()
			for b.Loop() {
				if err := kflateInflate(dst, z); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
