package qcow2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/opencontainers/go-digest"
)

// fuzzImages returns small qemu-made images of many kinds, of a few KiB
// each (512-byte clusters), for fuzz corpora: small inputs keep the
// fuzzer fast and its minimizing short. With extendedL2, one image of 16
// KiB clusters (the least extended L2 entries allow) is added, of 80 KiB.
func fuzzImages(f *testing.F, extendedL2 bool) [][]byte {
	dir := f.TempDir()
	// 8 KiB of disk: text, random bytes, zeros and a hole.
	raw := make([]byte, 8<<10)
	copy(raw[:2<<10], bytes.Repeat([]byte("canga qcow2 cluster "), 110))
	for i := range 1 << 10 {
		raw[2<<10+i] = byte(i*7919>>3) ^ byte(i)
	}
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, raw, 0o644); err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	add := func(p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	variants := [][]string{
		{"-o", "cluster_size=512"},
		{"-o", "cluster_size=512,compat=0.10"},
		{"-c", "-o", "cluster_size=512"},
		{"-c", "-o", "cluster_size=512,compression_type=zstd"},
		{"-o", "cluster_size=512,refcount_bits=1"},
		{"-o", "cluster_size=512,refcount_bits=64"},
	}
	if extendedL2 {
		variants = append(variants, []string{"-o", "cluster_size=16k,extended_l2=on"})
	}
	for i, args := range variants {
		p := filepath.Join(dir, fmt.Sprintf("seed%d.qcow2", i))
		testkit.Run(f, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, args...), src, p)...)
		switch i {
		case 0:
			testkit.QemuIO(f, "qcow2", p, "write -z 1k 512", "write -P 9 6k 1k")
		case 1:
			testkit.Run(f, "qemu-img", "snapshot", "-c", "s1", p)
			testkit.QemuIO(f, "qcow2", p, "write -P 8 0 512")
		case 2:
			testkit.Run(f, "qemu-img", "bitmap", "--add", p, "b0")
		case 6:
			testkit.QemuIO(f, "qcow2", p, "write -z 3k 2k", "write -P 9 7k 1k")
		}
		add(p)
	}
	// An overlay: a backing file name and format, and little else.
	top := filepath.Join(dir, "top.qcow2")
	testkit.Run(f, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", "seed0.qcow2", "-F", "qcow2", top)
	testkit.QemuIO(f, "qcow2", top, "write -P 3 1k 1k")
	add(top)
	return out
}

// FuzzImage opens arbitrary bytes as a qcow2 image, reads it, maps it and
// checks it: nothing may panic or hang, and what the extent map calls
// zeros must read as zeros.
func FuzzImage(f *testing.F) {
	for _, b := range fuzzImages(f, true) {
		f.Add(b)
	}
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
				if !bytes.Equal(p, zeroChunk()[:len(p)]) {
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
// Disks are 4 to 32 KiB, written in memory, so that an execution takes
// about a millisecond; the cluster sizes go from 512 bytes to 64 KiB, a
// disk of one partial cluster included.
func FuzzConvertRoundTrip(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, uint8(0))
	f.Add(bytes.Repeat([]byte{0xff, 0x10, 0x00, 0x80}, 40), uint8(7))
	f.Add([]byte("a program that writes many different things"), uint8(13))
	f.Add(bytes.Repeat([]byte{0x31, 0x07, 0x40, 0x02, 0x10, 0x00, 0xff, 0x01}, 9), uint8(0x85))
	out := &memFile{b: make([]byte, 0, 1<<20)} // reused: executions run one at a time
	f.Fuzz(func(t *testing.T, ops []byte, mode uint8) {
		cs := int64(512) << []uint{0, 3, 5, 7}[mode%4] // 512, 4K, 16K, 64K
		size := int64(len(ops)%8+1)*4<<10 - int64(len(ops)%3)*512
		base := make([]byte, size)
		top := make([]byte, size)
		// Each op is 4 bytes: where (2), how long (1), what (1).
		for i := 0; i+4 <= len(ops); i += 4 {
			off := int64(binary.LittleEndian.Uint16(ops[i:])) * 37 % size
			n := min(int64(ops[i+2])*37+1, size-off)
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
		opt := ConvertOptions{ClusterSize: cs, Compression: comp, Hash: sha256.New(), Workers: 1 + int(mode>>6&1)}
		if delta {
			opt.Base, opt.BackingFile, opt.BackingFormat = baseDisk, "base.raw", FormatRaw
		}
		w := out
		w.b = w.b[:0]
		st, err := Convert(t.Context(), w, src, opt)
		if err != nil {
			t.Fatal(err)
		}
		want := sha256.Sum256(top)
		if got := digest.NewDigest(digest.SHA256, opt.Hash); got != digest.NewDigestFromBytes(digest.SHA256, want[:]) {
			t.Fatalf("content hash %s", got)
		}
		fileSize := int64(len(w.b))
		if st.FileSize != fileSize {
			t.Fatalf("Convert says %d bytes, wrote %d", st.FileSize, fileSize)
		}
		res, err := Check(w, fileSize)
		if err != nil || !res.Clean() {
			t.Fatalf("check: %+v %v", res, err)
		}
		var ro []Option
		if delta {
			ro = append(ro, WithBacking(baseDisk))
		}
		img, err := Open(w, fileSize, ro...)
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

// memFile is a [File] in memory.
type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		n := len(m.b)
		m.b = slices.Grow(m.b, end-n)[:end]
		clear(m.b[n:]) // a hole reads as zeros, whatever the buffer held
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Sync() error { return nil }

// FuzzSetBacking rewrites the backing file name of arbitrary images. A
// refusal leaves the file as it was; a rewrite leaves a header that says
// what was asked, keeps the other header fields and the extensions canga
// does not know, and touches nothing past the first cluster. The guest
// content (without the backing file) stays as it was, unless the image
// has metadata or data over its header, which Check reports as a
// corruption (a snapshot table at offset 0 was the first find).
func FuzzSetBacking(f *testing.F) {
	for i, b := range fuzzImages(f, false) {
		f.Add(b, "base.qcow2", "qcow2")
		if i%2 == 0 {
			f.Add(b, "", "")
		} else {
			f.Add(b, strings.Repeat("long/", 100)+"x", "raw")
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, name, format string) {
		h, err := ReadHeader(bytes.NewReader(data), int64(len(data)))
		before := ""
		if res, cerr := Check(bytes.NewReader(data), int64(len(data))); cerr == nil && res.Corruptions == 0 {
			before = contentDigest(data)
		}
		m := &memFile{b: append([]byte(nil), data...)}
		serr := SetBacking(m, int64(len(data)), name, format)
		if err != nil || serr != nil {
			if serr == nil {
				t.Fatalf("SetBacking rewrote an image that ReadHeader refuses: %v", err)
			}
			if !bytes.Equal(m.b, data) {
				t.Fatalf("SetBacking failed (%v) and changed the file", serr)
			}
			return
		}
		nh, err := ReadHeader(bytes.NewReader(m.b), int64(len(m.b)))
		if err != nil {
			t.Fatalf("the new header does not parse: %v", err)
		}
		if nh.BackingFile != name || nh.BackingFormat != format {
			t.Fatalf("backing %q %q, want %q %q", nh.BackingFile, nh.BackingFormat, name, format)
		}
		// Only the backing fields and where the extensions end change.
		h.BackingFileOffset, h.BackingFileSize, h.BackingFile, h.BackingFormat = nh.BackingFileOffset, nh.BackingFileSize, nh.BackingFile, nh.BackingFormat
		h.ExtensionsEnd = nh.ExtensionsEnd
		if !reflect.DeepEqual(h, nh) {
			t.Fatalf("header changed:\n%+v\n%+v", h, nh)
		}
		cs := int(h.ClusterSize())
		if len(data) > cs && !bytes.Equal(m.b[cs:], data[cs:]) {
			t.Fatalf("bytes past the first cluster changed")
		}
		if after := contentDigest(m.b); before != "" && after != before {
			t.Fatalf("content %q, was %q", after, before)
		}
	})
}

// contentDigest is the digest of a small image's content read without its
// backing file, or the error that reading it gives.
func contentDigest(data []byte) string {
	img, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return "open: " + err.Error()
	}
	if img.Size() > 256<<10 {
		return "large"
	}
	buf := make([]byte, img.Size())
	if _, err := img.ReadAt(buf, 0); err != nil && err != io.EOF {
		return "read: " + err.Error()
	}
	sum := sha256.Sum256(buf)
	return string(sum[:])
}
