package qcow2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"sync"
	"testing"
)

// zlibOracle is real zlib, used as qemu uses it, in a Python process
// (testdata/zlib_oracle.py) that serves one request at a time. It is
// started once per process, so once per fuzz worker, and ends when the
// process does and its stdin closes.
type zlibOracle struct {
	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Reader
}

var oracle struct {
	once sync.Once
	z    *zlibOracle
	err  error
}

func zlibHelper(t testing.TB) *zlibOracle {
	t.Helper()
	oracle.once.Do(func() {
		cmd := exec.Command("python3", "testdata/zlib_oracle.py")
		in, err := cmd.StdinPipe()
		if err != nil {
			oracle.err = err
			return
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			oracle.err = err
			return
		}
		if err := cmd.Start(); err != nil {
			oracle.err = fmt.Errorf("start the zlib oracle: %w", err)
			return
		}
		oracle.z = &zlibOracle{in: in, out: bufio.NewReader(out)}
	})
	if oracle.err != nil {
		t.Fatal(oracle.err)
	}
	return oracle.z
}

func (z *zlibOracle) call(t testing.TB, op byte, arg uint32, payload []byte) (bool, []byte) {
	t.Helper()
	z.mu.Lock()
	defer z.mu.Unlock()
	req := make([]byte, 9, 9+len(payload))
	req[0] = op
	binary.BigEndian.PutUint32(req[1:], arg)
	binary.BigEndian.PutUint32(req[5:], uint32(len(payload)))
	if _, err := z.in.Write(append(req, payload...)); err != nil {
		t.Fatalf("zlib oracle: %v", err)
	}
	var head [5]byte
	if _, err := io.ReadFull(z.out, head[:]); err != nil {
		t.Fatalf("zlib oracle: %v", err)
	}
	out := make([]byte, binary.BigEndian.Uint32(head[1:]))
	if _, err := io.ReadFull(z.out, out); err != nil {
		t.Fatalf("zlib oracle: %v", err)
	}
	return head[0] == 1, out
}

// inflate decodes src into a cluster of n bytes as qemu does, and says
// whether qemu accepts it.
func (z *zlibOracle) inflate(t testing.TB, src []byte, n int) (bool, []byte) {
	return z.call(t, 'D', uint32(n), src)
}

// deflate compresses p as a raw deflate stream.
func (z *zlibOracle) deflate(t testing.TB, p []byte, level, windowBits, memLevel, strategy uint8) []byte {
	return z.compress(t, 'C', p, level, windowBits, memLevel, strategy)
}

// deflateSync compresses p as a raw deflate stream that does not end:
// the next block may follow.
func (z *zlibOracle) deflateSync(t testing.TB, p []byte, level, windowBits, memLevel, strategy uint8) []byte {
	return z.compress(t, 'S', p, level, windowBits, memLevel, strategy)
}

func (z *zlibOracle) compress(t testing.TB, op byte, p []byte, level, windowBits, memLevel, strategy uint8) []byte {
	ok, out := z.call(t, op, uint32(level)|uint32(windowBits)<<8|uint32(memLevel)<<16|uint32(strategy)<<24, p)
	if !ok {
		t.Fatalf("zlib oracle: compress: %s", out)
	}
	return out
}

// zlibSeeds adds streams of many kinds to a corpus of FuzzInflate.
func zlibSeeds(f *testing.F) {
	z := zlibHelper(f)
	for _, size := range []int{512, 4096} {
		for _, s := range clusterSamples(size) {
			for _, p := range [][4]uint8{{0, 12, 8, 0}, {1, 12, 9, 0}, {255, 12, 9, 0}, {9, 15, 9, 0}, {6, 12, 8, 2}, {6, 12, 8, 3}, {6, 9, 1, 4}} {
				zs := z.deflate(f, s, p[0], p[1], p[2], p[3])
				f.Add(zs, uint16(size))
				f.Add(zs[:len(zs)/2], uint16(size))
			}
		}
	}
	// A full cluster, then more blocks, which zlib reads on into.
	rng := rand.New(rand.NewPCG(3, 4))
	for _, s := range clusterSamples(512)[1:4] {
		sync := z.deflateSync(f, s, 255, 12, 9, 0)
		for _, next := range nextBlocks(rng)[:12] {
			f.Add(append(sync[:len(sync):len(sync)], next...), uint16(len(s)))
		}
	}
	f.Add([]byte{0x03, 0x00}, uint16(1))
	f.Add([]byte{0x02, 0x00}, uint16(1)) // a fixed block that is not the last
}

// FuzzInflate decodes arbitrary input into one cluster with canga's
// decoder and with zlib as qemu calls it: both must accept or refuse
// alike, and what they accept must decode to the same bytes.
func FuzzInflate(f *testing.F) {
	zlibSeeds(f)
	f.Fuzz(func(t *testing.T, src []byte, n uint16) {
		if n == 0 {
			return
		}
		z := zlibHelper(t)
		got := make([]byte, n)
		err := inflateCluster(got, src)
		ok, want := z.inflate(t, src, int(n))
		switch {
		case ok && err != nil:
			t.Fatalf("zlib decodes %d bytes, canga refuses: %v", n, err)
		case !ok && err == nil:
			t.Fatalf("zlib refuses, canga decodes %d bytes", n)
		case ok && !bytes.Equal(got, want):
			t.Fatalf("canga decodes %d bytes other than zlib's", n)
		}
	})
}

// FuzzInflateZlibStream compresses arbitrary data with zlib, with any of
// its levels, windows, memory levels and strategies, and decodes it with
// canga: the data must come back whole.
func FuzzInflateZlibStream(f *testing.F) {
	for _, s := range clusterSamples(512) {
		f.Add(s, uint8(255), uint8(12), uint8(9), uint8(0))
	}
	f.Add([]byte("a"), uint8(0), uint8(9), uint8(1), uint8(0))
	f.Add(bytes.Repeat([]byte("qcow2 "), 200), uint8(9), uint8(15), uint8(9), uint8(3))
	f.Fuzz(func(t *testing.T, p []byte, level, windowBits, memLevel, strategy uint8) {
		if len(p) == 0 || len(p) > 1<<18 {
			return // a cluster is what matters; beyond, zlib's speed
		}
		if level != 255 {
			level %= 10
		}
		windowBits = 9 + windowBits%7
		memLevel = 1 + memLevel%9
		strategy %= 5
		z := zlibHelper(t)
		zs := z.deflate(t, p, level, windowBits, memLevel, strategy)
		got := make([]byte, len(p))
		if err := inflateCluster(got, zs); err != nil {
			t.Fatalf("level %d window %d mem %d strategy %d: %v", level, windowBits, memLevel, strategy, err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("level %d window %d mem %d strategy %d: decoded bytes differ", level, windowBits, memLevel, strategy)
		}
		// A qcow2 cluster ends at a sector boundary: what follows the
		// stream is the next cluster's, and is ignored.
		if err := inflateCluster(got, append(zs, 0xff, 0x00, 0x13)); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("with bytes after the stream: %v", err)
		}
	})
}
