package testkit

// Hostile and damaged disk images, made from images that qemu-img makes.
// The builders return errors rather than fail a test, so that they can
// also write fuzz seed corpora.

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// HostileCase is one hostile image file.
type HostileCase struct {
	Name string
	Path string // the image to open
	// Want is a piece of the error every reader must give, lower case.
	Want string
}

// qcow2 header field offsets (qemu docs/interop/qcow2.rst).
const (
	offVersion        = 4
	offBackingOffset  = 8
	offBackingSize    = 16
	offClusterBits    = 20
	offSize           = 24
	offCryptMethod    = 32
	offL1Size         = 36
	offL1Offset       = 40
	offRefcountOffset = 48
	offRefcountClust  = 56
	offIncompatible   = 72
	offHeaderLength   = 100
)

// patch rewrites bytes of a copy of src.
type patch func(b []byte) []byte

func be32(off int, v uint32) patch {
	return func(b []byte) []byte { binary.BigEndian.PutUint32(b[off:], v); return b }
}

func be64(off int, v uint64) patch {
	return func(b []byte) []byte { binary.BigEndian.PutUint64(b[off:], v); return b }
}

// Hostile writes every hostile case into dir and returns them. The cases
// cover what a malicious or broken image file can put in front of a
// reader; each must give a clear error quickly and in little memory.
func Hostile(dir string) ([]HostileCase, error) {
	plain := filepath.Join(dir, "plain.qcow2")
	if err := runErr(toolTimeout, "qemu-img", "create", "-q", "-f", "qcow2", plain, "64M"); err != nil {
		return nil, err
	}
	if err := runErr(toolTimeout, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 40M 1M", plain); err != nil {
		return nil, err
	}
	base, err := os.ReadFile(plain)
	if err != nil {
		return nil, err
	}
	l1Off := binary.BigEndian.Uint64(base[offL1Offset:])

	var cases []HostileCase
	add := func(name, want string, data []byte) error {
		p := filepath.Join(dir, name+".qcow2")
		cases = append(cases, HostileCase{Name: name, Path: p, Want: want})
		return os.WriteFile(p, data, 0o644)
	}
	patched := func(name, want string, ps ...patch) error {
		b := append([]byte(nil), base...)
		for _, p := range ps {
			b = p(b)
		}
		return add(name, want, b)
	}
	for _, c := range []struct {
		name, want string
		ps         []patch
	}{
		{"huge-l1-size", "l1_size", []patch{be32(offL1Size, 0xffffffff)}},
		{"l1-past-eof", "past the end", []patch{be64(offL1Offset, 1<<40)}},
		{"l1-unaligned", "not cluster aligned", []patch{be64(offL1Offset, l1Off+8)}},
		{"l2-past-eof", "past the end", []patch{be64(int(l1Off), 1<<63|1<<50)}},
		{"l2-unaligned", "not cluster aligned", []patch{be64(int(l1Off), 1<<63|0x10200)}},
		{"absurd-virtual-size", "virtual size", []patch{be64(offSize, 1<<63-1)}},
		{"large-virtual-size", "virtual size", []patch{be64(offSize, 1<<50)}},
		{"cluster-bits-8", "cluster_bits", []patch{be32(offClusterBits, 8)}},
		{"cluster-bits-22", "cluster_bits", []patch{be32(offClusterBits, 22)}},
		{"cluster-bits-huge", "cluster_bits", []patch{be32(offClusterBits, 0xffffffff)}},
		{"huge-header-length", "header_length", []patch{be32(offHeaderLength, 0xfffffff8)}},
		{"odd-header-length", "header_length", []patch{be32(offHeaderLength, 105)}},
		{"huge-refcount-table", "refcount table", []patch{be32(offRefcountClust, 0xffffffff)}},
		{"unknown-incompatible-bit", "unknown incompatible", []patch{be64(offIncompatible, 1<<5)}},
		{"unknown-incompatible-bit63", "unknown incompatible", []patch{be64(offIncompatible, 1<<63)}},
		{"external-data-file", "unsupported", []patch{be64(offIncompatible, 1<<2)}},
		{"encrypted", "encryption", []patch{be32(offCryptMethod, 2)}},
		{"version-1", "version", []patch{be32(offVersion, 1)}},
		{"version-4", "version", []patch{be32(offVersion, 4)}},
		{"huge-backing-name", "backing file name", []patch{be64(offBackingOffset, 512), be32(offBackingSize, 0xffffffff)}},
		{"backing-name-past-cluster", "backing file name", []patch{be64(offBackingOffset, 65500), be32(offBackingSize, 1000)}},
		{"huge-extension", "extension", []patch{func(b []byte) []byte {
			// The first extension after the header: give it a length
			// beyond the header cluster.
			binary.BigEndian.PutUint32(b[112:], 0x12345678)
			binary.BigEndian.PutUint32(b[116:], 0xfffffff0)
			return b
		}}},
		{"truncated-header-50", "truncated", []patch{func(b []byte) []byte { return b[:50] }}},
		{"truncated-header-100", "truncated", []patch{func(b []byte) []byte { return b[:100] }}},
		{"truncated-l1", "past the end", []patch{func(b []byte) []byte { return b[:l1Off+4] }}},
	} {
		if err := patched(c.name, c.want, c.ps...); err != nil {
			return nil, err
		}
	}

	// Junk after a valid magic, several shapes of it.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 4 {
		b := make([]byte, 4096<<i)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		copy(b, "QFI\xfb")
		if err := add(fmt.Sprintf("junk-after-magic-%d", i), "qcow2", b); err != nil {
			return nil, err
		}
	}

	// Garbage in compressed clusters.
	if err := garbageCompressed(dir, "zlib", &cases); err != nil {
		return nil, err
	}
	if err := garbageCompressed(dir, "zstd", &cases); err != nil {
		return nil, err
	}

	// A backing loop: a -> b -> a, and an image that is its own backing.
	a, b := filepath.Join(dir, "loop-a.qcow2"), filepath.Join(dir, "loop-b.qcow2")
	if err := runErr(toolTimeout, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "loop-b.qcow2", "-F", "qcow2", a, "1M"); err != nil {
		return nil, err
	}
	if err := runErr(toolTimeout, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "loop-a.qcow2", "-F", "qcow2", b, "1M"); err != nil {
		return nil, err
	}
	self := filepath.Join(dir, "loop-self.qcow2")
	if err := runErr(toolTimeout, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "loop-self.qcow2", "-F", "qcow2", self, "1M"); err != nil {
		return nil, err
	}
	cases = append(cases, HostileCase{Name: "backing-loop", Path: a, Want: "loop"}, HostileCase{Name: "backing-self", Path: self, Want: "loop"})

	// A deep chain, deeper than any reader should follow.
	deep := filepath.Join(dir, "deep")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		return nil, err
	}
	top, err := DeepChain(deep, 300)
	if err != nil {
		return nil, err
	}
	cases = append(cases, HostileCase{Name: "deep-chain", Path: top, Want: "deeper"})

	// Backing names that are not plain files.
	for i, name := range []string{"json:{\"file.filename\":\"/etc/passwd\"}", "nbd:localhost:10809", "http://example.com/x"} {
		p := filepath.Join(dir, fmt.Sprintf("backing-protocol-%d.qcow2", i))
		if err := runErr(toolTimeout, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "raw", p, "1M"); err != nil {
			return nil, err
		}
		cases = append(cases, HostileCase{Name: fmt.Sprintf("backing-protocol-%d", i), Path: p, Want: "not a plain file"})
	}
	return cases, nil
}

// DeepChain makes a chain of n tiny qcow2 images in dir and returns the top.
func DeepChain(dir string, n int) (string, error) {
	prev := ""
	for i := range n {
		name := fmt.Sprintf("layer%03d.qcow2", i)
		args := []string{"create", "-q", "-f", "qcow2"}
		if prev != "" {
			args = append(args, "-u", "-b", prev, "-F", "qcow2")
		}
		if err := runErr(toolTimeout, "qemu-img", append(args, filepath.Join(dir, name), "1M")...); err != nil {
			return "", err
		}
		prev = name
	}
	return filepath.Join(dir, prev), nil
}

// garbageCompressed makes a compressed image and overwrites the compressed
// bytes of its data clusters with random bytes.
func garbageCompressed(dir, typ string, cases *[]HostileCase) error {
	src := filepath.Join(dir, "garbage-src-"+typ+".qcow2")
	if err := runErr(toolTimeout, "qemu-img", "create", "-q", "-f", "qcow2", src, "4M"); err != nil {
		return err
	}
	if err := runErr(toolTimeout, "qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 4M", src); err != nil {
		return err
	}
	out := filepath.Join(dir, "garbage-"+typ+".qcow2")
	if err := runErr(toolTimeout, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type="+typ, src, out); err != nil {
		return err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	// Compressed clusters of a freshly converted image sit after the
	// metadata; with 4 MiB of one byte they are a few hundred bytes each
	// and are the only non-zero bytes between the refcount block and the
	// L2 table. Scrambling every non-zero byte past the fourth cluster
	// that is not a table entry would be fragile, so scramble the whole
	// area the L2 entries point at instead.
	l1Off := binary.BigEndian.Uint64(b[offL1Offset:])
	l2Off := binary.BigEndian.Uint64(b[l1Off:]) & 0x00fffffffffffe00
	entry := binary.BigEndian.Uint64(b[l2Off:])
	const csizeShift = 62 - (16 - 8)
	coff := entry & (1<<csizeShift - 1)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := coff + 2; i < coff+200 && i < uint64(len(b)); i++ {
		b[i] = byte(rng.Uint32())
	}
	p := filepath.Join(dir, "garbage-"+typ+"-bad.qcow2")
	*cases = append(*cases, HostileCase{Name: "garbage-compressed-" + typ, Path: p, Want: "decompress"})
	return os.WriteFile(p, b, 0o644)
}
