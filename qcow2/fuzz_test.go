package qcow2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

// fuzzSeeds adds small qemu-made images of many kinds to a fuzz corpus.
func fuzzSeeds(f *testing.F) {
	dir := f.TempDir()
	src := filepath.Join(dir, "src.raw")
	writeSource(f, src, 96<<10, 5)
	for i, args := range [][]string{
		{"-o", "cluster_size=512"},
		{"-o", "cluster_size=4k,compat=0.10"},
		{"-c", "-o", "cluster_size=4k"},
		{"-c", "-o", "cluster_size=4k,compression_type=zstd"},
		{"-o", "cluster_size=16k,extended_l2=on"},
		{"-c", "-o", "cluster_size=512"},
		{"-o", "cluster_size=4k,refcount_bits=1"},
	} {
		out := filepath.Join(dir, "seed.qcow2")
		qemu(f, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, args...), src, out)...)
		if i == 4 {
			qemuIO(f, "qcow2", out, "write -z 3k 2k", "write -P 9 70k 3k")
		}
		b, err := os.ReadFile(out)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzImage opens arbitrary bytes as a qcow2 image, reads it, maps it and
// checks it: nothing may panic or hang, and what the extent map calls
// zeros must read as zeros.
func FuzzImage(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ra := bytes.NewReader(data)
		if _, err := Check(ra, int64(len(data))); err != nil {
			_ = err // refusing is fine; panicking is not
		}
		img, err := Open(ra, int64(len(data)))
		if err != nil {
			return
		}
		size := img.Size()
		// Read the start, the end, and what the extents say, bounded so
		// that a huge empty disk costs nothing.
		buf := make([]byte, 256<<10)
		for _, off := range []int64{0, size / 2, max(0, size-int64(len(buf)))} {
			if _, err := img.ReadAt(buf, off); err != nil && err != io.EOF {
				return
			}
		}
		for off, n := int64(0), 0; off < size && n < 64; n++ {
			e, err := img.Extent(off, size-off)
			if err != nil {
				return
			}
			if e.Offset != off || e.Length <= 0 {
				t.Fatalf("Extent(%d) = %+v", off, e)
			}
			if e.ReadsZero() {
				p := buf[:min(int64(len(buf)), e.Length)]
				if _, err := img.ReadAt(p, off); err != nil && err != io.EOF {
					t.Fatalf("ReadAt of a %s extent: %v", e.Kind, err)
				}
				if !bytes.Equal(p, zeroChunk[:len(p)]) {
					t.Fatalf("extent %+v reads non-zero bytes", e)
				}
			}
			off += e.Length
		}
	})
}

// FuzzConvertRoundTrip writes random sparse content (data, zeros, holes,
// hidden base data) as a plain, compressed or delta image and reads it
// back: the bytes, the content hash and the metadata must all be right.
func FuzzConvertRoundTrip(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, uint8(0))
	f.Add(bytes.Repeat([]byte{0xff, 0x10, 0x00, 0x80}, 40), uint8(7))
	f.Add([]byte("a program that writes many different things"), uint8(13))
	f.Fuzz(func(t *testing.T, ops []byte, mode uint8) {
		cs := int64(512) << (mode % 4 * 3) // 512, 4K, 32K, 256K
		size := int64(len(ops)%7+1) * 300 << 10
		base := make([]byte, size)
		top := make([]byte, size)
		// Each op is 4 bytes: where (2), how long (1), what (1).
		for i := 0; i+4 <= len(ops); i += 4 {
			off := int64(binary.LittleEndian.Uint16(ops[i:])) * 37 % size
			n := min(int64(ops[i+2])*1031+1, size-off)
			switch k := ops[i+3]; k % 5 {
			case 0: // data in the base, seen through the top
				fill(base[off:off+n], k)
				fill(top[off:off+n], k)
			case 1: // data only in the top
				fill(top[off:off+n], k)
			case 2: // zeros over base data
				fill(base[off:off+n], k)
				clear(top[off : off+n])
			case 3: // compressible text
				for j := range top[off : off+n] {
					top[off+int64(j)] = "abc "[j%4]
				}
			}
		}
		comp := []Compression{CompressionNone, CompressionZlib, CompressionZstd}[mode/4%3]
		delta := mode&0x80 != 0
		baseDisk := NewRaw(bytes.NewReader(base), size)
		src := NewRaw(bytes.NewReader(top), size)
		opt := ConvertOptions{ClusterSize: cs, Compression: comp, Hash: sha256.New()}
		if delta {
			opt.Base, opt.BackingFile, opt.BackingFormat = baseDisk, "base.raw", FormatRaw
		}
		out := filepath.Join(t.TempDir(), "out.qcow2")
		w, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := Convert(t.Context(), w, src, opt); err != nil {
			t.Fatal(err)
		}
		want := sha256.Sum256(top)
		if got := digest.NewDigest(digest.SHA256, opt.Hash); got != digest.NewDigestFromBytes(digest.SHA256, want[:]) {
			t.Fatalf("content hash %s", got)
		}
		fi, _ := w.Stat()
		res, err := Check(w, fi.Size())
		if err != nil || !res.Clean() {
			t.Fatalf("check: %+v %v", res, err)
		}
		var ro []Option
		if delta {
			ro = append(ro, WithBacking(baseDisk))
		}
		img, err := Open(w, fi.Size(), ro...)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		if _, err := img.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(got, top) {
			t.Fatalf("read back differs (cluster %d, %s, delta %v)", cs, comp, delta)
		}
	})
}

// fill writes a pattern that depends on k and the position.
func fill(p []byte, k byte) {
	for i := range p {
		p[i] = byte(i*int(k|1)>>3) ^ k
	}
}
