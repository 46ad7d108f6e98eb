package qcow2_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/qcow2"
)

// The oracle of these tests is qemu-img check (package qemu-utils): every
// image, clean or damaged on purpose, is checked by both, and the counts,
// the findings and the exit status must agree.

// chkCreate makes a qcow2 image with qemu-img create.
func chkCreate(t testing.TB, dir, name, size string, opts ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	args := []string{"create", "-q", "-f", "qcow2"}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	testkit.Run(t, "qemu-img", append(args, p, size)...)
	return p
}

// chkIO runs qemu-io commands on a qcow2 image.
func chkIO(t testing.TB, path string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	testkit.Run(t, "qemu-io", append(args, path)...)
}

// chkQemu is qemu-img check's verdict on an image.
type chkQemu struct {
	Report *struct {
		CheckErrors        int64 `json:"check-errors"`
		Corruptions        int64 `json:"corruptions"`
		Leaks              int64 `json:"leaks"`
		ImageEndOffset     int64 `json:"image-end-offset"`
		TotalClusters      int64 `json:"total-clusters"`
		AllocatedClusters  int64 `json:"allocated-clusters"`
		FragmentedClusters int64 `json:"fragmented-clusters"`
		CompressedClusters int64 `json:"compressed-clusters"`
	}
	Exit     int
	Findings []string
	Stderr   string
}

func chkQemuCheck(t testing.TB, path string, args ...string) chkQemu {
	t.Helper()
	out, code, stderr := testkit.RunCode(t, "qemu-img", append(append([]string{"check", "--output=json"}, args...), path)...)
	q := chkQemu{Exit: code, Stderr: stderr}
	if out != "" {
		if err := json.Unmarshal([]byte(out), &q.Report); err != nil {
			t.Fatalf("qemu-img check %s: bad JSON: %v\n%s", path, err, out)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		if f, ok := chkFinding(sc.Text()); ok {
			q.Findings = append(q.Findings, f)
		}
	}
	return q
}

// chkFinding extracts a finding from a line of qemu-img check's stderr.
// A warning printed without a newline may precede it.
func chkFinding(line string) (string, bool) {
	for _, p := range []string{"ERROR", "Leaked cluster", "Can't get refcount", "Use qemu-img amend"} {
		if strings.HasPrefix(line, p) {
			return line, true
		}
	}
	for _, p := range []string{"fix.ERROR", "fix.Leaked cluster"} {
		if i := strings.Index(line, p); i >= 0 {
			return line[i+len("fix."):], true
		}
	}
	return "", false
}

// chkCheck runs Check on a file and returns the exit status canga check
// gives it, which follows qemu-img check's.
func chkCheck(t testing.TB, path string) (*qcow2.CheckResult, int, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	res, err := qcow2.Check(f, fi.Size())
	return res, chkExit(res, err), err
}

func chkExit(res *qcow2.CheckResult, err error) int {
	switch {
	case errors.Is(err, qcow2.ErrNotQcow2):
		return 63
	case err != nil, res.CheckErrors > 0:
		return 1
	case res.Corruptions > 0:
		return 2
	case res.Leaks > 0:
		return 3
	}
	return 0
}

// chkAgree checks path with both checkers and fails on any difference.
func chkAgree(t *testing.T, path string) (*qcow2.CheckResult, chkQemu) {
	t.Helper()
	q := chkQemuCheck(t, path, "-f", "qcow2")
	res, exit, err := chkCheck(t, path)
	if exit != q.Exit {
		t.Errorf("exit status: canga %d (err %v), qemu-img %d\nqemu stderr:\n%s", exit, err, q.Exit, q.Stderr)
	}
	if q.Report == nil {
		if err == nil {
			t.Errorf("qemu-img check failed without a report, canga reported %+v\nqemu stderr:\n%s", res, q.Stderr)
		}
		return res, q
	}
	if err != nil {
		t.Fatalf("canga: %v; qemu-img reported %+v\nqemu stderr:\n%s", err, *q.Report, q.Stderr)
	}
	r := q.Report
	got := [8]int64{res.CheckErrors, res.Corruptions, res.Leaks, res.ImageEndOffset,
		res.TotalClusters, res.AllocatedClusters, res.FragmentedClusters, res.CompressedClusters}
	want := [8]int64{r.CheckErrors, r.Corruptions, r.Leaks, r.ImageEndOffset,
		r.TotalClusters, r.AllocatedClusters, r.FragmentedClusters, r.CompressedClusters}
	if got != want {
		t.Errorf("[check-errors corruptions leaks image-end-offset total allocated fragmented compressed]\ncanga    %v\nqemu-img %v\nqemu stderr:\n%s\ncanga findings:\n%s",
			got, want, q.Stderr, strings.Join(res.Messages, "\n"))
	}
	if res.MessagesDropped == 0 && !slices.Equal(res.Messages, q.Findings) {
		t.Errorf("findings differ\ncanga:\n%s\nqemu-img:\n%s", strings.Join(res.Messages, "\n"), strings.Join(q.Findings, "\n"))
	}
	return res, q
}

// Clean images of every kind qemu makes: both must find no error and the
// same statistics.
func TestCheckCleanImages(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	writes := []string{"write -P 0x11 0 192k", "write -P 0x22 1M 4k", "write -P 0x33 5M 512", "write -z 6M 64k"}
	tests := []struct {
		name  string
		build func(t *testing.T, dir string) string
	}{
		{"empty", func(t *testing.T, dir string) string { return chkCreate(t, dir, "i.qcow2", "8M") }},
		{"cluster512", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "cluster_size=512")
			chkIO(t, p, writes...)
			return p
		}},
		{"cluster4k", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "cluster_size=4k")
			chkIO(t, p, writes...)
			return p
		}},
		{"cluster64k", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M")
			chkIO(t, p, writes...)
			return p
		}},
		{"cluster2M", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "64M", "cluster_size=2M")
			chkIO(t, p, "write -P 1 0 3M", "write -P 2 40M 4k")
			return p
		}},
		{"compat0.10", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "compat=0.10")
			chkIO(t, p, writes...)
			return p
		}},
		{"compat0.10-cluster512", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "compat=0.10", "cluster_size=512")
			chkIO(t, p, writes...)
			return p
		}},
		{"refcount1", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "refcount_bits=1", "cluster_size=4k")
			chkIO(t, p, writes...)
			return p
		}},
		{"refcount2", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "refcount_bits=2", "cluster_size=512")
			chkIO(t, p, writes...)
			return p
		}},
		{"refcount4", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "refcount_bits=4", "cluster_size=512")
			chkIO(t, p, writes...)
			return p
		}},
		{"refcount8", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "refcount_bits=8")
			chkIO(t, p, writes...)
			return p
		}},
		{"refcount32", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "refcount_bits=32")
			chkIO(t, p, writes...)
			return p
		}},
		{"refcount64", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "refcount_bits=64", "cluster_size=512")
			chkIO(t, p, writes...)
			return p
		}},
		{"preallocation-metadata", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "16M", "preallocation=metadata")
			chkIO(t, p, "write -P 7 64k 64k")
			return p
		}},
		{"preallocation-metadata-compat0.10", func(t *testing.T, dir string) string {
			return chkCreate(t, dir, "i.qcow2", "16M", "preallocation=metadata", "compat=0.10", "cluster_size=4k")
		}},
		{"lazy-refcounts-clean", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "lazy_refcounts=on")
			chkIO(t, p, writes...)
			return p
		}},
		{"extended-l2", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "extended_l2=on", "cluster_size=64k")
			chkIO(t, p, "write -P 1 0 4k", "write -P 2 70k 2k", "write -z 200k 8k", "write -P 3 1M 128k", "discard 1M 64k")
			return p
		}},
		{"extended-l2-cluster2M", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "64M", "extended_l2=on", "cluster_size=2M")
			chkIO(t, p, "write -P 1 0 64k", "write -P 2 5M 1M")
			return p
		}},
		{"zero-and-discard", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M")
			chkIO(t, p, "write -P 1 0 1M", "write -z 0 128k", "discard 256k 128k", "write -z -u 512k 64k")
			return p
		}},
		{"zlib", func(t *testing.T, dir string) string { return chkCompressed(t, dir, "zlib", "4k") }},
		{"zlib-cluster64k", func(t *testing.T, dir string) string { return chkCompressed(t, dir, "zlib", "64k") }},
		{"zlib-cluster512", func(t *testing.T, dir string) string { return chkCompressed(t, dir, "zlib", "512") }},
		{"zstd", func(t *testing.T, dir string) string { return chkCompressed(t, dir, "zstd", "64k") }},
		{"zstd-extended-l2", func(t *testing.T, dir string) string {
			src := chkRawSource(t, dir)
			p := filepath.Join(dir, "i.qcow2")
			testkit.Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd,extended_l2=on", src, p)
			return p
		}},
		{"snapshots", func(t *testing.T, dir string) string { return chkSnapshotImage(t, dir, "i.qcow2") }},
		{"snapshots-compat0.10", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "compat=0.10")
			chkIO(t, p, "write -P 1 0 256k")
			testkit.Run(t, "qemu-img", "snapshot", "-c", "s1", p)
			chkIO(t, p, "write -P 2 64k 64k")
			return p
		}},
		{"backing-chain-top", func(t *testing.T, dir string) string {
			base := chkCreate(t, dir, "base.qcow2", "8M")
			chkIO(t, base, "write -P 1 0 1M")
			top := filepath.Join(dir, "top.qcow2")
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
			chkIO(t, top, "write -P 2 64k 64k", "write -z 512k 64k", "write -P 3 3M 4k")
			return top
		}},
		{"bitmaps", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "64M")
			testkit.Run(t, "qemu-img", "bitmap", "--add", p, "b0")
			chkIO(t, p, "write 0 1M", "write 32M 64k")
			testkit.Run(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b1")
			chkIO(t, p, "write 2M 8M")
			return p
		}},
		{"large-sparse", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "4T")
			chkIO(t, p, "write -P 1 0 64k", "write -P 2 3T 64k")
			return p
		}},
		{"fragmented", func(t *testing.T, dir string) string {
			p := chkCreate(t, dir, "i.qcow2", "8M", "cluster_size=4k")
			chkIO(t, p, "write -P 1 1M 4k", "write -P 2 0 4k", "write -P 3 2M 4k", "write -P 4 4k 4k", "write -P 5 8k 16k")
			return p
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := tt.build(t, t.TempDir())
			res, q := chkAgree(t, p)
			if q.Exit != 0 || res == nil || !res.Clean() {
				t.Errorf("image is not clean: qemu-img exit %d\n%s", q.Exit, q.Stderr)
			}
		})
	}
}

// chkRawSource writes a compressible raw image of 4 MiB with holes.
func chkRawSource(t testing.TB, dir string) string {
	t.Helper()
	var b bytes.Buffer
	for i := 0; b.Len() < 3<<20; i++ {
		fmt.Fprintf(&b, "line %d of a compressible disk image %x\n", i, i*i)
	}
	data := b.Bytes()[:3<<20]
	clear(data[1<<20 : 1<<20+200<<10]) // a hole
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, append(data, make([]byte, 1<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

func chkCompressed(t testing.TB, dir, typ, cluster string) string {
	t.Helper()
	src := chkRawSource(t, dir)
	p := filepath.Join(dir, "i.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type="+typ+",cluster_size="+cluster, src, p)
	// A normal cluster amid the compressed ones.
	chkIO(t, p, "write -P 9 64k 4k")
	return p
}

// chkSnapshotImage makes an image with two internal snapshots and writes
// after each, so that clusters are shared (refcount 2 and 3, COPIED
// clear) and some were copied on write.
func chkSnapshotImage(t testing.TB, dir, name string) string {
	t.Helper()
	p := chkCreate(t, dir, name, "8M")
	chkIO(t, p, "write -P 1 0 512k", "write -P 2 2M 64k")
	testkit.Run(t, "qemu-img", "snapshot", "-c", "s1", p)
	chkIO(t, p, "write -P 3 64k 64k", "write -P 4 4M 64k")
	testkit.Run(t, "qemu-img", "snapshot", "-c", "second snapshot", p)
	chkIO(t, p, "write -P 5 128k 64k")
	return p
}

// A dirty image with lazy refcounts: qemu-img check does not repair it
// (it opens the image for checking only), and both report the missing
// refcounts as corruptions.
func TestCheckDirtyLazyRefcounts(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	p := chkCreate(t, t.TempDir(), "i.qcow2", "8M", "lazy_refcounts=on")
	// qemu-io kills itself before it can flush the refcounts.
	cmd := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 128k", "-c", "sigraise 9", p)
	if err := cmd.Run(); err == nil {
		t.Fatal("qemu-io was expected to die of SIGKILL")
	}
	h := chkHeader(t, p)
	if h.IncompatibleFeatures&qcow2.IncompatDirty == 0 {
		t.Fatal("image is not dirty")
	}
	res, q := chkAgree(t, p)
	if q.Exit != 2 || res.Corruptions == 0 {
		t.Errorf("qemu-img exit %d, canga %d corruptions", q.Exit, res.Corruptions)
	}
}

// chkFile is an image under surgery.
type chkFile struct {
	t    *testing.T
	path string
	hdr  *qcow2.Header
}

func chkHeader(t testing.TB, path string) *qcow2.Header {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	h, err := qcow2.ReadHeader(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func chkOpen(t *testing.T, path string) *chkFile {
	return &chkFile{t: t, path: path, hdr: chkHeader(t, path)}
}

func (f *chkFile) read(off int64, n int) []byte {
	f.t.Helper()
	b := make([]byte, n)
	fd, err := os.Open(f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.ReadAt(b, off); err != nil {
		f.t.Fatalf("read %d bytes at %#x: %v", n, off, err)
	}
	return b
}

func (f *chkFile) write(off int64, b []byte) {
	f.t.Helper()
	fd, err := os.OpenFile(f.path, os.O_WRONLY, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.WriteAt(b, off); err != nil {
		f.t.Fatal(err)
	}
}

func (f *chkFile) u64(off int64) uint64 { return binary.BigEndian.Uint64(f.read(off, 8)) }

func (f *chkFile) putU64(off int64, v uint64) {
	f.write(off, binary.BigEndian.AppendUint64(nil, v))
}

func (f *chkFile) size() int64 {
	fi, err := os.Stat(f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	return fi.Size()
}

const chkOffsetMask = 0x00fffffffffffe00

// l1 returns the file offset of entry i of the active L1 table.
func (f *chkFile) l1(i int) int64 { return int64(f.hdr.L1TableOffset) + int64(i)*8 }

// l2 returns the file offset of entry i of the L2 table of L1 entry 0.
func (f *chkFile) l2(i int) int64 {
	l2 := int64(f.u64(f.l1(0)) & chkOffsetMask)
	if l2 == 0 {
		f.t.Fatal("L1 entry 0 has no L2 table")
	}
	return l2 + int64(i)*8
}

// data returns the host offset that L2 entry i of L1 entry 0 maps.
func (f *chkFile) data(i int) int64 { return int64(f.u64(f.l2(i)) & chkOffsetMask) }

// setRefcount stores a 16-bit refcount (the default width) for a cluster
// of the first refcount block.
func (f *chkFile) setRefcount(cluster int64, v uint16) {
	f.t.Helper()
	if f.hdr.RefcountOrder != 4 {
		f.t.Fatalf("setRefcount needs 16-bit refcounts, image has %d", f.hdr.RefcountBits())
	}
	block := int64(f.u64(int64(f.hdr.RefcountTableOffset)))
	if cluster >= f.hdr.ClusterSize()/2 {
		f.t.Fatalf("cluster %d is not in the first refcount block", cluster)
	}
	f.write(block+cluster*2, binary.BigEndian.AppendUint16(nil, v))
}

func (f *chkFile) cluster(off int64) int64 { return off >> f.hdr.ClusterBits }

// bitmapDir returns the offset of the bitmap directory, from the bitmaps
// header extension.
func (f *chkFile) bitmapDir() int64 {
	f.t.Helper()
	hdr := f.read(0, int(f.hdr.ClusterSize()))
	for off := int(f.hdr.HeaderLength); off+8 <= len(hdr); {
		typ, n := binary.BigEndian.Uint32(hdr[off:]), int(binary.BigEndian.Uint32(hdr[off+4:]))
		if typ == 0x23852875 {
			return int64(binary.BigEndian.Uint64(hdr[off+8+16:]))
		}
		if typ == 0 {
			break
		}
		off += 8 + (n+7)&^7
	}
	f.t.Fatal("no bitmaps extension")
	return 0
}

func chkBitmapImage(t *testing.T) *chkFile {
	p := chkCreate(t, t.TempDir(), "i.qcow2", "64M")
	testkit.Run(t, "qemu-img", "bitmap", "--add", p, "b0")
	chkIO(t, p, "write 0 1M", "write 32M 64k")
	return chkOpen(t, p)
}

// Damaged images: each is a clean image with a few bytes patched, located
// through the header and the tables. qemu-img check is the oracle for the
// counts, the findings and the exit status; want is the exit status both
// must give, to make sure that the damage is what the case says.
func TestCheckDamagedImages(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	base := func(t *testing.T, opts ...string) *chkFile {
		p := chkCreate(t, t.TempDir(), "i.qcow2", "8M", opts...)
		chkIO(t, p, "write -P 1 0 256k", "write -P 2 1M 64k")
		return chkOpen(t, p)
	}
	const copied = 1 << 63
	tests := []struct {
		name   string
		want   int // exit status
		damage func(t *testing.T) string
	}{
		{"leak-raised-refcount", 2, func(t *testing.T) string {
			// refcount 2 for a cluster with one reference: a leak, and a
			// COPIED flag that contradicts the refcount.
			f := base(t)
			f.setRefcount(f.cluster(f.data(0)), 2)
			return f.path
		}},
		{"leak-appended-cluster", 3, func(t *testing.T) string {
			f := base(t)
			end := f.size()
			f.write(end, make([]byte, f.hdr.ClusterSize()))
			f.setRefcount(f.cluster(end), 1)
			return f.path
		}},
		{"used-cluster-refcount-zero", 2, func(t *testing.T) string {
			f := base(t)
			f.setRefcount(f.cluster(f.data(1)), 0)
			return f.path
		}},
		{"l2-table-refcount-zero", 2, func(t *testing.T) string {
			f := base(t)
			f.setRefcount(f.cluster(int64(f.u64(f.l1(0))&chkOffsetMask)), 0)
			return f.path
		}},
		{"copied-cleared-l2", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l2(2), f.u64(f.l2(2))&^copied)
			return f.path
		}},
		{"copied-cleared-l1", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l1(0), f.u64(f.l1(0))&^copied)
			return f.path
		}},
		{"copied-set-unallocated", 0, func(t *testing.T) string {
			// COPIED on an unallocated entry means nothing to qemu.
			f := base(t)
			f.putU64(f.l2(100), copied)
			return f.path
		}},
		{"l2-entry-past-eof", 2, func(t *testing.T) string {
			f := base(t)
			far := (f.size()/f.hdr.ClusterSize() + 100) * f.hdr.ClusterSize()
			f.putU64(f.l2(1), copied|uint64(far))
			return f.path
		}},
		{"l2-entry-just-past-eof", 2, func(t *testing.T) string {
			f := base(t)
			end := (f.size() + f.hdr.ClusterSize() - 1) &^ (f.hdr.ClusterSize() - 1)
			f.putU64(f.l2(1), copied|uint64(end))
			return f.path
		}},
		{"l2-entry-2^55", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l2(3), copied|1<<55)
			return f.path
		}},
		{"two-l2-entries-one-cluster", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l2(1), f.u64(f.l2(0)))
			return f.path
		}},
		{"l2-entry-points-at-l1", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l2(1), copied|f.hdr.L1TableOffset)
			return f.path
		}},
		{"l2-entry-points-at-refcount-table", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l2(1), copied|f.hdr.RefcountTableOffset)
			return f.path
		}},
		{"l2-entry-points-at-header", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l2(10), copied|1<<9) // unaligned inside cluster 0
			return f.path
		}},
		{"l2-entry-unaligned", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l2(1), f.u64(f.l2(1))+4096)
			return f.path
		}},
		{"zero-alloc-unaligned", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l2(1), f.u64(f.l2(1))+4096|1)
			return f.path
		}},
		{"l2-entry-reserved-bits", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l2(1), f.u64(f.l2(1))|1<<57|2)
			return f.path
		}},
		{"l1-table-past-eof", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(40, 1<<30)
			return f.path
		}},
		{"l1-table-partly-past-eof", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(40, uint64(f.size()&^(f.hdr.ClusterSize()-1)))
			f.write(36, []byte{0, 0, 0x10, 0}) // l1_size
			return f.path
		}},
		{"l1-entry-unaligned", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l1(0), f.u64(f.l1(0))+512)
			return f.path
		}},
		{"l1-entry-reserved-bits", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l1(0), f.u64(f.l1(0))|1<<60)
			return f.path
		}},
		{"l1-entry-past-eof", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l1(0), copied|1<<50)
			return f.path
		}},
		{"l1-entry-flags-only", 2, func(t *testing.T) string {
			// qemu reads the header as an L2 table here.
			f := base(t)
			f.putU64(f.l1(0), copied)
			return f.path
		}},
		{"l1-entry-points-at-refcount-block", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(f.l1(0), copied|f.u64(int64(f.hdr.RefcountTableOffset)))
			return f.path
		}},
		{"refcount-block-unaligned", 1, func(t *testing.T) string {
			f := base(t)
			rt := int64(f.hdr.RefcountTableOffset)
			f.putU64(rt, f.u64(rt)+512)
			return f.path
		}},
		{"refcount-table-reserved-bits", 2, func(t *testing.T) string {
			f := base(t)
			rt := int64(f.hdr.RefcountTableOffset)
			f.putU64(rt, f.u64(rt)|3)
			return f.path
		}},
		{"refcount-block-unaddressable", 1, func(t *testing.T) string {
			f := base(t)
			f.putU64(int64(f.hdr.RefcountTableOffset), 0xffff_ffff_ffff_0000)
			return f.path
		}},
		{"refcount-block-outside-image", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(int64(f.hdr.RefcountTableOffset)+8, 1<<40)
			return f.path
		}},
		{"refcount-block-twice", 2, func(t *testing.T) string {
			f := base(t)
			rt := int64(f.hdr.RefcountTableOffset)
			f.putU64(rt+8, f.u64(rt))
			return f.path
		}},
		{"refcount-table-far-away", 2, func(t *testing.T) string {
			f := base(t)
			f.putU64(48, 1<<50) // refcount_table_offset
			return f.path
		}},
		{"refcount-table-past-eof", 2, func(t *testing.T) string {
			f := base(t)
			end := (f.size() + f.hdr.ClusterSize() - 1) &^ (f.hdr.ClusterSize() - 1)
			f.putU64(48, uint64(end))
			return f.path
		}},
		{"refcount-table-unaligned", 1, func(t *testing.T) string {
			f := base(t)
			f.putU64(48, 12345)
			return f.path
		}},
		{"refcount-table-empty", 2, func(t *testing.T) string {
			f := base(t)
			f.write(56, []byte{0, 0, 0, 0}) // refcount_table_clusters
			return f.path
		}},
		{"refcount-overflow-1bit", 2, func(t *testing.T) string {
			f := base(t, "refcount_bits=1")
			f.putU64(f.l2(1), f.u64(f.l2(0)))
			return f.path
		}},
		{"refcount-1bit-leak", 3, func(t *testing.T) string {
			f := base(t, "refcount_bits=1", "cluster_size=4k")
			f.putU64(f.l2(1), 0) // its cluster keeps refcount 1
			return f.path
		}},
		{"refcount-64bit-double", 2, func(t *testing.T) string {
			f := base(t, "refcount_bits=64")
			f.putU64(f.l2(5), f.u64(f.l2(0)))
			return f.path
		}},
		{"extended-l2-bad-bitmap", 2, func(t *testing.T) string {
			f := base(t, "extended_l2=on")
			// Entries are 16 bytes: entry 0 is at l2(0), its bitmap at l2(1).
			f.putU64(f.l2(1), f.u64(f.l2(1))|1<<32|1)
			f.putU64(f.l2(3), 0xff)    // entry 1's bitmap: allocated subclusters
			f.putU64(f.l2(40), copied) // an entry without offset
			f.putU64(f.l2(41), 1)      // ... but with an allocated subcluster
			return f.path
		}},
		{"snapshot-l1-unaligned", 2, func(t *testing.T) string {
			p := chkSnapshotImage(t, t.TempDir(), "i.qcow2")
			f := chkOpen(t, p)
			sn := int64(f.hdr.SnapshotsOffset)
			f.putU64(sn, f.u64(sn)+512)
			return p
		}},
		{"snapshot-l1-too-large", 2, func(t *testing.T) string {
			p := chkSnapshotImage(t, t.TempDir(), "i.qcow2")
			f := chkOpen(t, p)
			f.write(int64(f.hdr.SnapshotsOffset)+8, []byte{0x10, 0, 0, 0})
			return p
		}},
		{"snapshot-l1-past-eof", 2, func(t *testing.T) string {
			p := chkSnapshotImage(t, t.TempDir(), "i.qcow2")
			f := chkOpen(t, p)
			f.putU64(int64(f.hdr.SnapshotsOffset), 1<<45)
			return p
		}},
		{"snapshot-shared-refcount-lowered", 2, func(t *testing.T) string {
			p := chkSnapshotImage(t, t.TempDir(), "i.qcow2")
			f := chkOpen(t, p)
			f.setRefcount(f.cluster(f.data(0)), 1)
			return p
		}},
		{"snapshot-table-past-eof", 2, func(t *testing.T) string {
			f := base(t)
			f.write(60, []byte{0, 0, 0, 3}) // nb_snapshots
			f.putU64(64, 1<<40)
			return f.path
		}},
		{"snapshot-table-offset-unaligned-no-snapshots", 1, func(t *testing.T) string {
			f := base(t)
			f.putU64(64, 4097)
			return f.path
		}},
		{"snapshot-extra-data-too-large", 1, func(t *testing.T) string {
			p := chkSnapshotImage(t, t.TempDir(), "i.qcow2")
			f := chkOpen(t, p)
			f.write(int64(f.hdr.SnapshotsOffset)+36, []byte{0, 0, 0x10, 0})
			return p
		}},
		{"bitmap-directory-broken", 1, func(t *testing.T) string {
			f := chkBitmapImage(t)
			f.write(f.bitmapDir()+8, []byte{0, 0, 0, 0}) // bitmap_table_size
			return f.path
		}},
		{"bitmap-table-entry-reserved-bits", 1, func(t *testing.T) string {
			f := chkBitmapImage(t)
			table := int64(f.u64(f.bitmapDir()))
			f.putU64(table, f.u64(table)|2)
			return f.path
		}},
		{"bitmap-data-refcount-zero", 2, func(t *testing.T) string {
			f := chkBitmapImage(t)
			table := int64(f.u64(f.bitmapDir()))
			data := int64(f.u64(table) & chkOffsetMask)
			if data == 0 {
				t.Fatal("bitmap has no data cluster")
			}
			f.setRefcount(f.cluster(data), 0)
			f.setRefcount(f.cluster(table), 2)
			return f.path
		}},
		{"bitmap-ignored-without-autoclear-bit", 3, func(t *testing.T) string {
			// A program without bitmap support cleared the autoclear bit:
			// qemu ignores the bitmaps, whose clusters are then leaks.
			f := chkBitmapImage(t)
			f.write(88+7, []byte{0})
			return f.path
		}},
		{"compressed-copied-flag", 2, func(t *testing.T) string {
			f := chkOpen(t, chkCompressed(t, t.TempDir(), "zlib", "4k"))
			f.putU64(f.l2(0), f.u64(f.l2(0))|copied)
			return f.path
		}},
		{"compressed-past-eof", 2, func(t *testing.T) string {
			f := chkOpen(t, chkCompressed(t, t.TempDir(), "zlib", "4k"))
			e := f.u64(f.l2(0))
			f.putU64(f.l2(0), e&^(1<<(62-(12-8))-1)|1<<40)
			return f.path
		}},
		{"compressed-refcount-lowered", 2, func(t *testing.T) string {
			f := chkOpen(t, chkCompressed(t, t.TempDir(), "zstd", "64k"))
			coff := int64(f.u64(f.l2(0)) & (1<<(62-(16-8)) - 1))
			f.setRefcount(f.cluster(coff), 1)
			return f.path
		}},
		{"dirty-bit-set-clean-refcounts", 0, func(t *testing.T) string {
			f := base(t, "lazy_refcounts=on")
			f.write(72+7, []byte{1}) // incompatible_features: dirty
			return f.path
		}},
		{"corrupt-bit-set", 0, func(t *testing.T) string {
			f := base(t)
			f.write(72+7, []byte{2})
			return f.path
		}},
		{"truncated-file", 2, func(t *testing.T) string {
			f := base(t)
			if err := os.Truncate(f.path, f.size()-3*f.hdr.ClusterSize()-100); err != nil {
				t.Fatal(err)
			}
			return f.path
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := tt.damage(t)
			_, q := chkAgree(t, p)
			if q.Exit != tt.want {
				t.Errorf("qemu-img check exits %d, the case expects %d\n%s", q.Exit, tt.want, q.Stderr)
			}
		})
	}
}

// Headers qemu-img cannot even open: canga must fail the same way (status
// 1), not report.
func TestCheckUnopenable(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	tests := []struct {
		name   string
		damage func(f *chkFile)
	}{
		{"bad-magic-version", func(f *chkFile) { f.write(4, []byte{0, 0, 0, 9}) }},
		{"cluster-bits-30", func(f *chkFile) { f.write(20, []byte{0, 0, 0, 30}) }},
		{"l1-unaligned", func(f *chkFile) { f.putU64(40, f.hdr.L1TableOffset+8) }},
		{"refcount-order-7", func(f *chkFile) { f.write(96, []byte{0, 0, 0, 7}) }},
		{"refcount-table-huge", func(f *chkFile) { f.write(56, []byte{0xff, 0xff, 0xff, 0xff}) }},
		{"snapshots-too-many", func(f *chkFile) { f.write(60, []byte{0xff, 0xff, 0xff, 0xff}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := chkCreate(t, t.TempDir(), "i.qcow2", "8M")
			f := chkOpen(t, p)
			tt.damage(f)
			chkAgree(t, p)
		})
	}
}

// A raw file has no checks: qemu-img exits 63, and Check says it is not
// qcow2, which canga check turns into 63 too.
func TestCheckRaw(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, bytes.Repeat([]byte("raw!"), 1024), 0o644); err != nil {
		t.Fatal(err)
	}
	q := chkQemuCheck(t, p)
	_, exit, err := chkCheck(t, p)
	if !errors.Is(err, qcow2.ErrNotQcow2) {
		t.Errorf("Check of a raw file: %v, want ErrNotQcow2", err)
	}
	if exit != q.Exit || exit != 63 {
		t.Errorf("exit status: canga %d, qemu-img %d, want 63", exit, q.Exit)
	}
}

// Hostile metadata: whatever the numbers say, Check returns fast, without
// panicking and without allocating in proportion to them.
func TestCheckHostile(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	tests := []struct {
		name   string
		qemu   bool // qemu-img copes too: compare
		damage func(f *chkFile)
	}{
		{"refcount-table-offset-garbage", true, func(f *chkFile) { f.putU64(48, 0x7fff_ffff_0000_0000) }},
		{"refcount-table-offset-max", true, func(f *chkFile) { f.putU64(48, 0xffff_ffff_ffff_0000) }},
		{"refcount-table-past-eof-max-size", true, func(f *chkFile) {
			f.putU64(48, 1<<40)
			f.write(56, []byte{0, 0, 0, 128}) // 128 clusters: 8 MiB, qemu's limit
		}},
		{"refcount-blocks-everywhere", true, func(f *chkFile) {
			rt := int64(f.hdr.RefcountTableOffset)
			for i := range int64(100) {
				f.putU64(rt+i*8, uint64(i)<<50)
			}
		}},
		{"l2-entries-2^55", true, func(f *chkFile) {
			for i := range 64 {
				f.putU64(f.l2(i), 1<<63|1<<55|uint64(i)<<20)
			}
		}},
		{"compressed-entries-max", true, func(f *chkFile) {
			for i := range 64 {
				f.putU64(f.l2(i), 1<<62|(1<<62-1))
			}
		}},
		{"l1-entries-everywhere", true, func(f *chkFile) {
			for i := range 4 {
				f.putU64(f.l1(i), 1<<63|uint64(i+1)<<54)
			}
		}},
		{"refcounts-of-clusters-past-eof", true, func(f *chkFile) {
			// Refcount blocks for far clusters, all the same block, and
			// L2 entries that point there: each lookup is one small read.
			rt := int64(f.hdr.RefcountTableOffset)
			block := f.u64(rt)
			perBlock := uint64(f.hdr.ClusterSize()) * 8 >> f.hdr.RefcountOrder
			for i := range int64(200) {
				f.putU64(rt+(i+1)*8, block)
				f.putU64(f.l2(int(i)), 1<<63|uint64(i+1)*perBlock*uint64(f.hdr.ClusterSize())+uint64(i%7)<<f.hdr.ClusterBits)
			}
		}},
		{"snapshots-sharing-one-huge-l1", false, func(f *chkFile) {
			// 1000 snapshots whose L1 tables all cover the whole file.
			end := (f.size() + f.hdr.ClusterSize() - 1) &^ (f.hdr.ClusterSize() - 1)
			var tab []byte
			for i := range 1000 {
				h := make([]byte, 40+16)
				binary.BigEndian.PutUint64(h[0:], f.hdr.L1TableOffset)
				binary.BigEndian.PutUint32(h[8:], uint32(end/8))
				binary.BigEndian.PutUint32(h[36:], 16)
				h = append(h, []byte(fmt.Sprint(i))...)
				binary.BigEndian.PutUint16(h[12:], uint16(len(h)-56))
				for len(h)%8 != 0 {
					h = append(h, 0)
				}
				tab = append(tab, h...)
			}
			f.write(end, tab)
			f.write(60, binary.BigEndian.AppendUint32(nil, 1000))
			f.putU64(64, uint64(end))
		}},
		{"l1-size-max", true, func(f *chkFile) { f.write(36, []byte{0, 0x40, 0, 0}) }},
		{"snapshots-max-far", false, func(f *chkFile) {
			f.write(60, []byte{0, 1, 0, 0}) // 65536 snapshots
			f.putU64(64, 1<<50)
		}},
		{"snapshot-l1-offset-max", true, func(f *chkFile) {
			f.write(60, []byte{0, 0, 0, 1})
			f.putU64(64, uint64(f.hdr.ClusterSize())*3)
			off := int64(f.hdr.ClusterSize()) * 3
			f.putU64(off, 0xffff_ffff_ffff_0000)
			f.write(off+8, []byte{0, 0x40, 0, 0})
		}},
		{"snapshot-l1-max-past-eof", true, func(f *chkFile) {
			f.write(60, []byte{0, 0, 0, 1})
			off := int64(f.hdr.ClusterSize()) * 3
			f.putU64(64, uint64(off))
			f.putU64(off, 1<<48)
			f.write(off+8, []byte{0, 0x40, 0, 0})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := chkCreate(t, t.TempDir(), "i.qcow2", "8M", "cluster_size=4k")
			chkIO(t, p, "write -P 1 0 512k")
			f := chkOpen(t, p)
			tt.damage(f)

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			res, _, err := chkCheck(t, p)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if elapsed > 2*time.Second {
				t.Errorf("Check took %v", elapsed)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
				t.Errorf("Check allocated %d bytes", alloc)
			}
			if err == nil && res.Clean() {
				t.Errorf("hostile image reported clean")
			}
			if tt.qemu {
				chkAgree(t, p)
			}
			t.Logf("err=%v alloc=%d elapsed=%v", err, after.TotalAlloc-before.TotalAlloc, elapsed)
			if res != nil {
				t.Logf("corruptions=%d leaks=%d check-errors=%d findings=%d (+%d)",
					res.Corruptions, res.Leaks, res.CheckErrors, len(res.Messages), res.MessagesDropped)
			}
		})
	}
}

// Bad inputs that are not qcow2 files at all.
func TestCheckBadInput(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, qcow2.ErrNotQcow2},
		// Like qemu, Check reads past the end of the file as zeros.
		{"magic-only", []byte(qcow2.Magic), qcow2.ErrUnsupported},
		{"header-truncated", append([]byte(qcow2.Magic), 0, 0, 0, 3, 0, 0, 0, 0), qcow2.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := qcow2.Check(bytes.NewReader(tt.data), int64(len(tt.data)))
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := qcow2.Check(bytes.NewReader(nil), -1); err == nil {
		t.Error("negative size accepted")
	}
}

// The report reads like qemu-img check's.
func TestCheckReport(t *testing.T) {
	tests := []struct {
		name string
		res  qcow2.CheckResult
		want string
	}{
		{"clean", qcow2.CheckResult{ImageEndOffset: 1376256, TotalClusters: 1024, AllocatedClusters: 16},
			"No errors were found on the image.\n16/1024 = 1.56% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 1376256\n"},
		{"empty", qcow2.CheckResult{ImageEndOffset: 262144, TotalClusters: 128},
			"No errors were found on the image.\nImage end offset: 262144\n"},
		{"everything", qcow2.CheckResult{CheckErrors: 1, Corruptions: 2, Leaks: 3, ImageEndOffset: 512, TotalClusters: 3, AllocatedClusters: 3, FragmentedClusters: 1, CompressedClusters: 2,
			Messages: []string{"ERROR cluster 5 refcount=0 reference=1", "Leaked cluster 6 refcount=1 reference=0"}, MessagesDropped: 7},
			"ERROR cluster 5 refcount=0 reference=1\nLeaked cluster 6 refcount=1 reference=0\n(7 more findings not shown)\n" +
				"\n2 errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n" +
				"\n3 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n" +
				"\n1 internal errors have occurred during the check.\n" +
				"3/3 = 100.00% allocated, 33.33% fragmented, 66.67% compressed clusters\nImage end offset: 512\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := tt.res.WriteReport(&b); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("report:\n%s\nwant:\n%s", b.String(), tt.want)
			}
		})
	}
}

// The human summary matches qemu-img check's stdout byte for byte.
func TestCheckSummaryMatchesQemu(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	clean := chkCreate(t, dir, "clean.qcow2", "8M")
	chkIO(t, clean, "write -P 1 0 300k", "write -P 2 4M 64k")
	leaky := chkCreate(t, dir, "leaky.qcow2", "8M")
	chkIO(t, leaky, "write -P 1 0 300k")
	f := chkOpen(t, leaky)
	f.setRefcount(f.cluster(f.data(0)), 3)
	for _, p := range []string{clean, leaky, chkCompressed(t, t.TempDir(), "zlib", "4k")} {
		cmd := exec.Command("qemu-img", "check", "-f", "qcow2", p)
		out, _ := cmd.Output()
		res, _, err := chkCheck(t, p)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := res.WriteSummary(&b); err != nil {
			t.Fatal(err)
		}
		if b.String() != string(out) {
			t.Errorf("%s: summary\n%s\nqemu-img:\n%s", filepath.Base(p), b.String(), out)
		}
	}
}

// Check reads through an io.ReaderAt that is not a file.
func TestCheckReaderAt(t *testing.T) {
	testkit.Need(t, "qemu-img", "qemu-io")
	p := chkSnapshotImage(t, t.TempDir(), "i.qcow2")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qcow2.Check(bytes.NewReader(data), int64(len(data)))
	if err != nil || !res.Clean() {
		t.Fatalf("Check: %v %+v", err, res)
	}
	// A reader that fails is an error, not a report.
	_, err = qcow2.Check(chkFailingReader{bytes.NewReader(data), 5 << 16}, int64(len(data)))
	if err == nil {
		t.Fatal("read error not reported")
	}
}

type chkFailingReader struct {
	r     *bytes.Reader
	after int64
}

func (f chkFailingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.after {
		return 0, errors.New("chk: injected read error")
	}
	return f.r.ReadAt(p, off)
}

func FuzzCheck(f *testing.F) {
	testkit.Need(f, "qemu-img", "qemu-io")
	dir := f.TempDir()
	// Seeds of a few KiB: 512-byte clusters, a little data.
	seeds := []string{
		chkCreate(f, dir, "a.qcow2", "64K", "cluster_size=512"),
		chkCreate(f, dir, "b.qcow2", "64K", "cluster_size=512", "compat=0.10", "refcount_bits=16"),
		chkCreate(f, dir, "c.qcow2", "64K", "cluster_size=512", "refcount_bits=1"),
		chkCreate(f, dir, "d.qcow2", "64K", "cluster_size=512", "lazy_refcounts=on"),
	}
	chkIO(f, seeds[0], "write -P 1 0 4k", "write -z 8k 1k")
	chkIO(f, seeds[1], "write -P 2 4k 2k")
	testkit.Run(f, "qemu-img", "snapshot", "-c", "s", seeds[1])
	chkIO(f, seeds[1], "write -P 3 4k 512")
	chkIO(f, seeds[2], "write -P 4 0 1k")
	testkit.Run(f, "qemu-img", "bitmap", "--add", seeds[3], "b0")
	chkIO(f, seeds[3], "write -P 5 0 2k")
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := qcow2.Check(bytes.NewReader(data), int64(len(data)))
		if err == nil {
			var b bytes.Buffer
			if err := res.WriteReport(&b); err != nil {
				t.Fatal(err)
			}
			if res.ImageEndOffset <= 0 {
				t.Fatalf("image end offset %d", res.ImageEndOffset)
			}
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	testkit.Need(b, "qemu-img", "qemu-io")
	p := chkCreate(b, b.TempDir(), "i.qcow2", "1G")
	// ~25% of the disk: a 1 MiB write every 4 MiB.
	var cmds []string
	for off := 0; off < 1<<30; off += 4 << 20 {
		cmds = append(cmds, fmt.Sprintf("write -P %d %d 1M", off>>20&0xff, off))
	}
	chkIO(b, p, cmds...)
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	size := fi.Size()
	res, err := qcow2.Check(f, size)
	if err != nil || !res.Clean() || res.AllocatedClusters != 4096 {
		b.Fatalf("Check: %v %+v", err, res)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := qcow2.Check(f, size); err != nil {
			b.Fatal(err)
		}
	}
}
