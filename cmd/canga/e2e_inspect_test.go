package main_test

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// digestImages makes one image of every shape digest must read, each with
// the content of the base ext4 disk or of small writes over it.
func digestImages(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	raw, q := baseRaw(t), baseQcow2(t)
	zlib := filepath.Join(dir, "zlib.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", raw, zlib)
	zstd := filepath.Join(dir, "zstd.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd,cluster_size=16k", raw, zstd)
	small := filepath.Join(dir, "cluster512.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=512", raw, small)

	// A chain of three: compressed base, an overlay with data, zero writes
	// and a discard, and an overlay on that with more data.
	copyFile(t, zlib, filepath.Join(dir, "chain0.qcow2"))
	data := dataClusters(t, raw)
	mid := filepath.Join(dir, "chain1.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "chain0.qcow2", "-F", "qcow2", mid)
	testkit.QemuIO(t, "qcow2", mid, "write -P 0x11 1M 300k", "write -z "+itoa(data[5])+" 128k", "discard "+itoa(data[9])+" 64k")
	top := filepath.Join(dir, "chain2.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "chain1.qcow2", "-F", "qcow2", top)
	testkit.QemuIO(t, "qcow2", top, "write -P 0x22 1100k 10k", "write -P 0x33 60M 4M")

	// A qcow2 on a raw backing file, larger than its backing file.
	onRaw := filepath.Join(dir, "on-raw.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", onRaw, "80M")
	testkit.QemuIO(t, "qcow2", onRaw, "write -P 0x44 70M 64k")

	// A raw file whose size is not a multiple of 512, and an empty one.
	odd := filepath.Join(dir, "odd.raw")
	b := make([]byte, 1000)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	if err := os.WriteFile(odd, b, 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.raw")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Subclusters: an extended-L2 image over the ext4 disk, with writes of
	// parts of clusters (the rest of each cluster shows the backing file)
	// and zeroed subclusters.
	copyFile(t, raw, filepath.Join(dir, "ext-base.raw"))
	ext := filepath.Join(dir, "extended-l2.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", "-b", "ext-base.raw", "-F", "raw", ext)
	testkit.QemuIO(t, "qcow2", ext, "write -P 0x51 "+itoa(data[2]+4096)+" 4k", "write -z "+itoa(data[3]+8192)+" 8k",
		"write -P 0x52 "+itoa(data[8])+" 200k", "discard "+itoa(data[12])+" 4k")
	// qcow2 v2, 1-bit refcounts, and a compressed image of 2 MiB clusters.
	v2 := filepath.Join(dir, "v2.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-O", "qcow2", "-o", "compat=0.10", mid, v2)
	rc1 := filepath.Join(dir, "refcount1.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-O", "qcow2", "-o", "refcount_bits=1", top, rc1)
	big := filepath.Join(dir, "zlib-2m.qcow2")
	testkit.Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=2M", top, big)
	return []string{raw, q, zlib, zstd, small, mid, top, onRaw, odd, empty, ext, v2, rc1, big}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// digest prints, for each file, what SPEC §1 says anyone can compute:
// sha256sum of qemu-img convert -O raw.
func TestDigestMatchesQemuRawOutput(t *testing.T) {
	files := digestImages(t)
	var want strings.Builder
	for _, f := range files {
		want.WriteString(testkit.RawDigest(t, f).String() + "  " + f + "\n")
	}
	r := canga(t, "", append([]string{"digest"}, files...)...)
	if r.code != 0 || r.stdout != want.String() {
		t.Errorf("digest of %d files\ngot:\n%s\nwant:\n%s\n%v", len(files), r.stdout, want.String(), r)
	}
	// Relative names are printed as given.
	r = cangaIn(t, "", filepath.Dir(files[2]), cangaTimeout, "digest", filepath.Base(files[2]))
	if want := testkit.RawDigest(t, files[2]).String() + "  " + filepath.Base(files[2]) + "\n"; r.code != 0 || r.stdout != want {
		t.Errorf("digest by relative name: %q, want %q\n%v", r.stdout, want, r)
	}
}

// One bad file among good ones: the good ones are still printed, the bad
// one is named on stderr, and the exit status is 1.
func TestDigestFailingFileAmongGood(t *testing.T) {
	dir := t.TempDir()
	good1, good2 := baseQcow2(t), otherRaw(t)
	missing := filepath.Join(dir, "missing.qcow2")
	broken := filepath.Join(dir, "broken.qcow2")
	junk := make([]byte, 8192)
	for i := range junk {
		junk[i] = byte(i*131 + i>>5)
	}
	copy(junk, "QFI\xfb") // the qcow2 magic, then nonsense
	if err := os.WriteFile(broken, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	r := canga(t, "", "digest", good1, missing, broken, good2)
	want := testkit.RawDigest(t, good1).String() + "  " + good1 + "\n" + testkit.RawDigest(t, good2).String() + "  " + good2 + "\n"
	if r.code != 1 || r.stdout != want {
		t.Errorf("exit %d, stdout:\n%s\nwant exit 1 and:\n%s\n%v", r.code, r.stdout, want, r)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "canga: ") || !strings.Contains(lines[0], missing) ||
		!strings.HasPrefix(lines[1], "canga: ") || !strings.Contains(lines[1], broken) {
		t.Errorf("stderr should have one canga: line naming each bad file\n%v", r)
	}
	requireNoPanic(t, r)
}

// info --json has qemu-img info --output=json's keys and values.
func TestInfoAgreesWithQemu(t *testing.T) {
	dir := t.TempDir()
	base := baseQcow2(t)
	copyFile(t, base, filepath.Join(dir, "base.qcow2"))
	copyFile(t, baseRaw(t), filepath.Join(dir, "base.raw"))
	if err := os.WriteFile(filepath.Join(dir, "odd.raw"), make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string // qemu-img create arguments before the file name; nil: the file is there
		size string
	}{
		{"raw", nil, ""},
		{"odd.raw", nil, ""},
		{"base.qcow2", nil, ""},
		{"default", []string{}, "1G"},
		{"cluster-4k", []string{"-o", "cluster_size=4k"}, "100M"},
		{"cluster-2m", []string{"-o", "cluster_size=2M"}, "3G"},
		{"cluster-512", []string{"-o", "cluster_size=512"}, "10M"},
		{"compat-0.10", []string{"-o", "compat=0.10"}, "1G"},
		{"zstd", []string{"-o", "compression_type=zstd"}, "1G"},
		{"extended-l2", []string{"-o", "extended_l2=on,cluster_size=128k"}, "1G"},
		{"refcount-1", []string{"-o", "refcount_bits=1"}, "1G"},
		{"refcount-64", []string{"-o", "refcount_bits=64"}, "1G"},
		{"lazy-refcounts", []string{"-o", "lazy_refcounts=on"}, "1G"},
		{"odd-size", []string{}, "1000000"},
		{"huge", []string{}, "16T"},
		{"backing-relative", []string{"-b", "base.qcow2", "-F", "qcow2"}, ""},
		{"backing-absolute", []string{"-b", filepath.Join(dir, "base.qcow2"), "-F", "qcow2"}, ""},
		{"backing-raw", []string{"-b", "base.raw", "-F", "raw"}, "100M"},
		{"backing-missing", []string{"-u", "-b", "missing.qcow2", "-F", "qcow2"}, "1G"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if tc.name == "raw" {
				p = filepath.Join(dir, "base.raw")
			}
			if tc.args != nil {
				args := append([]string{"create", "-q", "-f", "qcow2"}, tc.args...)
				args = append(args, p)
				if tc.size != "" {
					args = append(args, tc.size)
				}
				testkit.Run(t, "qemu-img", args...)
			}
			want := testkit.QemuInfo(t, p)
			out := ok(t, "", "info", "--json", p)
			var got testkit.ImageInfo
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("info --json: %v\n%s", err, out)
			}
			// Compare what both define; actual-size and the like depend on
			// the moment.
			if got.Format != want.Format || got.VirtualSize != want.VirtualSize || got.ClusterSize != want.ClusterSize ||
				got.BackingFilename != want.BackingFilename || got.BackingFormat != want.BackingFormat ||
				got.FullBackingFilename != want.FullBackingFilename || got.Filename != want.Filename {
				t.Errorf("canga info:\n%s\nqemu-img info:\n%+v", out, want)
			}
			if (got.FormatSpecific == nil) != (want.FormatSpecific == nil) {
				t.Fatalf("format-specific: canga %v, qemu %v\n%s", got.FormatSpecific, want.FormatSpecific, out)
			}
			if want.FormatSpecific != nil && (got.FormatSpecific.Type != want.FormatSpecific.Type || got.FormatSpecific.Data != want.FormatSpecific.Data) {
				t.Errorf("format-specific: canga %+v, qemu %+v", *got.FormatSpecific, *want.FormatSpecific)
			}
			// The text form says the same.
			text := ok(t, "", "info", p)
			for _, s := range []string{"image: " + p, "file format: " + want.Format, "(" + itoa(want.VirtualSize) + " bytes)"} {
				if !strings.Contains(text, s) {
					t.Errorf("canga info text lacks %q:\n%s", s, text)
				}
			}
		})
	}
}

// qcow2 header fields used to damage images on purpose.
func be64At(t *testing.T, b []byte, off uint64) uint64 {
	t.Helper()
	if off+8 > uint64(len(b)) {
		t.Fatalf("offset %#x past the end of a %d-byte image", off, len(b))
	}
	return binary.BigEndian.Uint64(b[off:])
}

// damage opens a qemu-made image of 16-bit refcounts and changes it.
func damage(t *testing.T, path string, fn func(b []byte, cs uint64, refblock uint64) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if order := binary.BigEndian.Uint32(b[96:]); order != 4 {
		t.Fatalf("refcount order %d, want 4", order)
	}
	cs := uint64(1) << binary.BigEndian.Uint32(b[20:])
	refblock := be64At(t, b, binary.BigEndian.Uint64(b[48:]))
	if err := os.WriteFile(path, fn(b, cs, refblock), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkImage is a small qcow2 image made by qemu-img, with data, a
// zeroed cluster and unallocated space.
func checkImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "i.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	testkit.QemuIO(t, "qcow2", p, "write -P 1 0 256k", "write -P 2 1M 64k", "write -z 2M 64k")
	return p
}

// leakedImage is checkImage with one leak and nothing else wrong: a
// cluster appended to the file with refcount 1 and no user.
func leakedImage(t *testing.T) string {
	t.Helper()
	p := checkImage(t)
	damage(t, p, func(b []byte, cs, refblock uint64) []byte {
		end := (uint64(len(b)) + cs - 1) &^ (cs - 1)
		b = append(b, make([]byte, end+cs-uint64(len(b)))...)
		binary.BigEndian.PutUint16(b[refblock+2*(end/cs):], 1)
		return b
	})
	return p
}

// corruptImage is checkImage with its first data cluster's refcount set
// to 0 while an L2 entry uses it.
func corruptImage(t *testing.T) string {
	t.Helper()
	p := checkImage(t)
	damage(t, p, func(b []byte, cs, refblock uint64) []byte {
		l1 := binary.BigEndian.Uint64(b[40:])
		l2 := be64At(t, b, l1) & 0x00fffffffffffe00
		data := be64At(t, b, l2) & 0x00fffffffffffe00
		binary.BigEndian.PutUint16(b[refblock+2*(data/cs):], 0)
		return b
	})
	return p
}

// check's exit status and counts are qemu-img check's.
func TestCheckAgreesWithQemu(t *testing.T) {
	mk := checkImage
	tests := []struct {
		name  string
		exit  int
		image func(t *testing.T) string
	}{
		{"clean", 0, mk},
		{"clean-ext4", 0, func(t *testing.T) string { return baseQcow2(t) }},
		{"clean-compressed", 0, func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "c.qcow2")
			testkit.Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", baseRaw(t), p)
			return p
		}},
		{"leaked-cluster", 3, leakedImage},
		{"corrupt", 2, corruptImage},
		{"raw", 63, func(t *testing.T) string { return baseRaw(t) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.image(t)
			qexit, want, qerr := testkit.QemuCheckReport(t, p)
			if qexit != tc.exit {
				t.Fatalf("qemu-img check exit %d, want %d: the damage is not what the case says\n%s", qexit, tc.exit, qerr)
			}
			r := canga(t, "", "check", "--json", p)
			requireNoPanic(t, r)
			if r.code != qexit {
				t.Errorf("canga check exit %d, qemu-img check %d\n%v\nqemu-img:\n%s", r.code, qexit, r, qerr)
			}
			if qexit == 63 {
				if !strings.HasPrefix(r.stderr, "canga: ") {
					t.Errorf("stderr should say why\n%v", r)
				}
				return
			}
			var got testkit.CheckCounts
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("check --json: %v\n%v", err, r)
			}
			if got != want {
				t.Errorf("counts: canga %+v\nqemu-img %+v", got, want)
			}
			// Without --json the same verdict, and a summary on stdout.
			r2 := canga(t, "", "check", p)
			if r2.code != qexit || r2.stdout == "" {
				t.Errorf("canga check (text): exit %d, want %d\n%v", r2.code, qexit, r2)
			}
			if qexit != 0 && r2.stderr == "" {
				t.Errorf("canga check found problems but said nothing on stderr\n%v", r2)
			}
		})
	}
}

// Hostile files through the command line: a clean "canga: " error, fast,
// in little memory, never a panic.
func TestHostileImagesViaCLI(t *testing.T) {
	dir := t.TempDir()
	cases, err := testkit.Hostile(dir)
	if err != nil {
		t.Fatal(err)
	}
	const maxRSS = 100 << 10 // KiB
	const limit = 10 * time.Second
	home := t.TempDir()
	ok(t, home, "list")
	var peak result
	defer func() { t.Logf("highest max RSS: %d KiB, canga %s", peak.maxRSS, strings.Join(peak.args, " ")) }()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			limits := func(r result) {
				t.Helper()
				if r.maxRSS > peak.maxRSS {
					peak = r
				}
				requireNoPanic(t, r)
				if r.maxRSS >= maxRSS {
					t.Errorf("canga %s: max RSS %d KiB, want < %d", r.args[0], r.maxRSS, maxRSS)
				}
				if r.elapsed > limit {
					t.Errorf("canga %s took %v", r.args[0], r.elapsed)
				}
			}

			// digest reads everything: it must fail, saying why.
			r := cangaMeasured(t, "", dir, limit, "digest", c.Path)
			limits(r)
			requireCleanFailure(t, r)
			if !strings.Contains(strings.ToLower(r.stderr), c.Want) {
				t.Errorf("digest: stderr lacks %q\n%v", c.Want, r)
			}
			if r.stdout != "" {
				t.Errorf("digest printed a digest for a hostile file\n%v", r)
			}

			// info reads the header only: it may describe a file whose
			// header qemu-img info accepts too, and must fail otherwise.
			_, qinfo, _ := testkit.RunCode(t, "qemu-img", "info", "--output=json", c.Path)
			r = cangaMeasured(t, "", dir, limit, "info", "--json", c.Path)
			limits(r)
			if r.code == 0 {
				if qinfo != 0 {
					t.Errorf("info succeeded where qemu-img info fails\n%v", r)
				} else if !json.Valid([]byte(r.stdout)) {
					t.Errorf("info --json: not JSON\n%v", r)
				}
			} else {
				requireCleanFailure(t, r)
			}

			// add and convert read everything too, and leave nothing.
			before := snapshot(t, home)
			r = cangaMeasured(t, home, dir, limit, "add", c.Path, "--tag", "hostile")
			limits(r)
			requireCleanFailure(t, r)
			requireUnchanged(t, home, before)
			if names := tmpEntries(t, home); len(names) != 0 {
				t.Errorf("add left .tmp/%v", names)
			}
			outDir := t.TempDir()
			r = cangaMeasured(t, home, dir, limit, "convert", c.Path, filepath.Join(outDir, "out.qcow2"))
			limits(r)
			requireCleanFailure(t, r)
			if names := dirNames(t, outDir); len(names) != 0 {
				t.Errorf("convert left %v", names)
			}

			// check reads the file's own metadata and opens the backing
			// chain, as qemu-img check does: cases whose metadata is sound
			// (they break only reading data) may pass, the rest must not.
			r = cangaMeasured(t, "", dir, limit, "check", c.Path)
			limits(r)
			switch r.code {
			case 0:
				if !soundMetadata[c.Name] {
					t.Errorf("check calls a broken file clean\n%v", r)
				}
			case 2, 3:
				if r.stderr == "" {
					t.Errorf("check exit %d without findings on stderr\n%v", r.code, r)
				}
			default:
				requireCleanFailure(t, r)
			}
		})
	}
}

// soundMetadata are the hostile cases whose qcow2 metadata is valid: what
// is wrong is their compressed data, which neither info nor check reads,
// or their backing chain, which info does not open (qemu-img check hangs
// on a backing loop, so it cannot be asked).
var soundMetadata = map[string]bool{
	"garbage-compressed-zlib": true, "garbage-compressed-zstd": true,
	"backing-loop": true, "backing-self": true, "deep-chain": true,
	"backing-protocol-0": true, "backing-protocol-1": true, "backing-protocol-2": true,
}

// A FIFO is not an image: canga must say so at once, not wait forever
// for a writer (and it must not hang when a FIFO is a backing file).
func TestFIFOIsNotAnImage(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	onFifo := filepath.Join(dir, "on-fifo.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "fifo", "-F", "raw", onFifo, "1M")
	home := t.TempDir()
	for _, args := range [][]string{
		{"digest", fifo},
		{"info", fifo},
		{"check", fifo},
		{"convert", fifo, filepath.Join(dir, "out.qcow2")},
		{"add", fifo},
		{"digest", onFifo},
	} {
		r := cangaIn(t, home, dir, 2*time.Second, args...)
		if r.code == -1 {
			continue // reported by cangaIn
		}
		requireCleanFailure(t, r)
	}
}

// A directory is not an image either.
func TestDirectoryIsNotAnImage(t *testing.T) {
	dir := t.TempDir()
	home := t.TempDir()
	for _, args := range [][]string{
		{"digest", dir},
		{"info", dir},
		{"check", dir},
		{"convert", dir, filepath.Join(t.TempDir(), "out.qcow2")},
		{"create", filepath.Join(t.TempDir(), "x.qcow2"), "--backing", dir},
	} {
		r := fails(t, home, args...)
		if !strings.Contains(r.stderr, "not a regular file") && !strings.Contains(r.stderr, "is a directory") {
			t.Errorf("stderr should say why\n%v", r)
		}
	}
}

func TestVersion(t *testing.T) {
	r := canga(t, "", "--version")
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	for _, s := range []string{"canga " + e2eVersion, e2eCommit, goVersion()} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("--version lacks %q\n%v", s, r)
		}
	}
}

// specCommands are the commands of SPEC §5 that these tests cover.
var specCommands = []string{"create", "info", "check", "digest", "convert", "add", "list", "show", "tag", "deltag", "del", "export", "overlay", "fsck", "gc"}

// helpCommands reads the command names from canga --help: the indented
// first words under the group headings.
func helpCommands(help string) []string {
	var cmds []string
	in := false
	for _, line := range strings.Split(help, "\n") {
		switch {
		case line == "":
		case !strings.HasPrefix(line, " "):
			in = !strings.HasPrefix(line, "Usage:") && !strings.HasPrefix(line, "Flags:") && !strings.HasPrefix(line, "Run ") && !strings.HasPrefix(line, "Keep ")
		case in && strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   "):
			cmds = append(cmds, strings.Fields(line)[0])
		}
	}
	return cmds
}

func TestHelp(t *testing.T) {
	home := t.TempDir()
	r := canga(t, home, "--help")
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	cmds := helpCommands(r.stdout)
	for _, c := range specCommands {
		if !slices.Contains(cmds, c) {
			t.Errorf("--help does not list %s (it lists %v)\n%s", c, cmds, r.stdout)
		}
	}
	for _, c := range cmds {
		for _, args := range [][]string{{c, "--help"}, {c, "-h"}} {
			r := canga(t, home, args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage: canga "+c) {
				t.Errorf("%v", r)
			}
			requireNoPanic(t, r)
		}
	}
	// Asking for help touches nothing.
	if names := dirNames(t, home); len(names) != 0 {
		t.Errorf("--help wrote into CANGA_HOME: %v", names)
	}
}

// A command line canga cannot parse exits 1 with a "canga: " message
// (SPEC §5, as qemu-img does), whatever is wrong with it, and touches
// nothing.
func TestUsageErrors(t *testing.T) {
	home := t.TempDir()
	for _, args := range [][]string{
		{"frobnicate"},
		{"--frobnicate"},
		{"list", "--frobnicate"},
		{"check"},
		{"check", "a", "b"},
		{"digest"},
		{"info"},
		{"info", "a", "b"},
		{"convert", "a"},
		{"convert", "a", "b", "-O", "vmdk"},
		{"convert", "a", "b", "--compression", "lz4"},
		{"add", "x", "--compression", "gzip"},
		{"create", "x.qcow2", "1G", "--cluster-size"},
		{"tag", "onlyone"},
	} {
		r := canga(t, home, args...)
		requireCleanFailure(t, r)
		if r.code != 1 {
			t.Errorf("usage error: exit %d, want 1\n%v", r.code, r)
		}
	}
	if names := dirNames(t, home); len(names) != 0 {
		t.Errorf("a usage error wrote into CANGA_HOME: %v", names)
	}
}

// Exit statuses (SPEC §5): 1 for any error, usage errors included; 2 and
// 3 only from check, for a corrupt image and for one with leaks only.
// qemu-img check gives the images their verdicts.
func TestExitStatus(t *testing.T) {
	home := t.TempDir()
	corrupt, leaked := corruptImage(t), leakedImage(t)
	for p, want := range map[string]int{corrupt: 2, leaked: 3} {
		if code, _, stderr := testkit.QemuCheckReport(t, p); code != want {
			t.Fatalf("qemu-img check %s: exit %d, want %d\n%s", p, code, want, stderr)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"no arguments: the command list, as Cangallo", nil, 0},
		{"unknown command", []string{"frobnicate"}, 1},
		{"unknown flag", []string{"--frobnicate"}, 1},
		{"unknown flag of a command", []string{"check", "--frobnicate", leaked}, 1},
		{"check without FILE", []string{"check"}, 1},
		{"check of a missing file", []string{"check", filepath.Join(t.TempDir(), "missing.qcow2")}, 1},
		{"check of a corrupt image", []string{"check", corrupt}, 2},
		{"check of an image with leaks only", []string{"check", leaked}, 3},
	} {
		r := canga(t, home, tc.args...)
		requireNoPanic(t, r)
		if r.code != tc.want {
			t.Errorf("%s: exit %d, want %d\n%v", tc.name, r.code, tc.want, r)
		}
		if tc.want == 1 && !strings.HasPrefix(r.stderr, "canga: ") {
			t.Errorf("%s: stderr does not start with \"canga: \"\n%v", tc.name, r)
		}
	}
}

// A qcow2 file cut short (an interrupted copy or download) has data
// clusters past its end. qemu reads them as zeros, but qemu-img check
// calls the file corrupt; canga must not give it an image ID, convert it
// or store it as if nothing were missing.
func TestTruncatedQcow2(t *testing.T) {
	dir := t.TempDir()
	full := baseQcow2(t)
	cut := filepath.Join(dir, "cut.qcow2")
	b, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cut, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := testkit.QemuCheckReport(t, cut); code != 2 {
		t.Fatalf("qemu-img check of the truncated file: exit %d, want 2 (corrupt)", code)
	}
	home := t.TempDir()
	fails(t, home, "digest", cut)
	fails(t, home, "convert", cut, filepath.Join(dir, "out.qcow2"))
	fails(t, home, "add", cut)
	if _, err := os.Stat(filepath.Join(dir, "out.qcow2")); err == nil {
		t.Errorf("convert of a truncated file left its output")
	}
	if items := listJSON(t, home); len(items) != 0 {
		t.Errorf("add of a truncated file stored %+v", items)
	}
}

// check opens the backing chain as qemu-img check does, in qemu's check
// mode (a backing file is opened with the checks of qemu-img check's
// opening, not all those of a plain open), and exits as qemu-img check
// does: with -U too, which changes nothing here; with --no-backing as
// qemu-img check of 'json:{..., "backing": null}'.
func TestCheckOpensBackingChainLikeQemu(t *testing.T) {
	qcow2At := func(t *testing.T, dir, name string, args ...string) string {
		p := filepath.Join(dir, name)
		testkit.Run(t, "qemu-img", append(append([]string{"create", "-q", "-f", "qcow2"}, args...), p, "1M")...)
		return p
	}
	// top makes top.qcow2 over the backing file name in format fmt.
	top := func(t *testing.T, dir, name, fmt string) string {
		return qcow2At(t, dir, "top.qcow2", "-u", "-b", name, "-F", fmt)
	}
	poke := func(t *testing.T, p string, off int64, b []byte) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	tests := []struct {
		name  string
		exit  int // qemu-img check's, to make sure the case is what it says
		image func(t *testing.T, dir string) string
	}{
		{"clean-chain", 0, func(t *testing.T, dir string) string {
			b := qcow2At(t, dir, "base.qcow2")
			testkit.QemuIO(t, "qcow2", b, "write -P 1 0 64k")
			return top(t, dir, "base.qcow2", "qcow2")
		}},
		{"raw-backing", 0, func(t *testing.T, dir string) string {
			if err := os.WriteFile(filepath.Join(dir, "base.raw"), make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			return top(t, dir, "base.raw", "raw")
		}},
		{"backing-missing", 1, func(t *testing.T, dir string) string {
			return top(t, dir, "missing.qcow2", "qcow2")
		}},
		{"backing-missing-deeper", 1, func(t *testing.T, dir string) string {
			qcow2At(t, dir, "mid.qcow2", "-u", "-b", "missing.qcow2", "-F", "qcow2")
			return top(t, dir, "mid.qcow2", "qcow2")
		}},
		{"backing-format-foo", 1, func(t *testing.T, dir string) string {
			qcow2At(t, dir, "base.qcow2")
			p := top(t, dir, "base.qcow2", "qcow2")
			// The backing format extension follows the 112-byte header;
			// "qcow2" becomes "foo".
			poke(t, p, 112, append(append(u32(0xe2792aca), u32(3)...), 'f', 'o', 'o', 0, 0, 0, 0, 0))
			return p
		}},
		{"backing-a-directory", 1, func(t *testing.T, dir string) string {
			if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
				t.Fatal(err)
			}
			return top(t, dir, "d", "raw")
		}},
		{"backing-qcow2-as-raw", 0, func(t *testing.T, dir string) string {
			qcow2At(t, dir, "base.qcow2")
			return top(t, dir, "base.qcow2", "raw")
		}},
		{"backing-header-broken", 1, func(t *testing.T, dir string) string {
			poke(t, qcow2At(t, dir, "base.qcow2"), 20, u32(30)) // cluster_bits
			return top(t, dir, "base.qcow2", "qcow2")
		}},
		{"backing-refcount-table-size-0", 0, func(t *testing.T, dir string) string {
			// Refused by a plain open, accepted by check's.
			poke(t, qcow2At(t, dir, "base.qcow2"), 56, u32(0))
			return top(t, dir, "base.qcow2", "qcow2")
		}},
		{"backing-snapshot-extra-data-too-large", 0, func(t *testing.T, dir string) string {
			// Check's opening does not read the snapshot table.
			b := qcow2At(t, dir, "base.qcow2")
			testkit.Run(t, "qemu-img", "snapshot", "-c", "s", b)
			f, err := os.ReadFile(b)
			if err != nil {
				t.Fatal(err)
			}
			poke(t, b, int64(binary.BigEndian.Uint64(f[64:]))+36, u32(1025))
			return top(t, dir, "base.qcow2", "qcow2")
		}},
		{"backing-bitmaps-extension-zero-bitmaps", 1, func(t *testing.T, dir string) string {
			b := qcow2At(t, dir, "base.qcow2")
			testkit.Run(t, "qemu-img", "bitmap", "--add", b, "b0")
			f, err := os.ReadFile(b)
			if err != nil {
				t.Fatal(err)
			}
			i := strings.Index(string(f[:65536]), "\x23\x85\x28\x75\x00\x00\x00\x18")
			if i < 0 {
				t.Fatal("no bitmaps extension")
			}
			poke(t, b, int64(i)+8, u32(0)) // nb_bitmaps
			return top(t, dir, "base.qcow2", "qcow2")
		}},
		{"corrupt-top-backing-missing", 1, func(t *testing.T, dir string) string {
			p := corruptImage(t)
			f, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			q := filepath.Join(dir, "top.qcow2")
			if err := os.WriteFile(q, f, 0o644); err != nil {
				t.Fatal(err)
			}
			testkit.Run(t, "qemu-img", "rebase", "-u", "-b", "missing.qcow2", "-F", "qcow2", q)
			return q
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := tc.image(t, dir)
			for _, args := range [][]string{nil, {"-U"}, {"--output=json"}} {
				_, qexit, qerr := testkit.RunCode(t, "qemu-img", append(append([]string{"check"}, args...), p)...)
				if qexit != tc.exit {
					t.Fatalf("qemu-img check %v: exit %d, want %d: the case is not what it says\n%s", args, qexit, tc.exit, qerr)
				}
				cargs := args
				if len(args) > 0 && args[0] == "--output=json" {
					cargs = []string{"--json"}
				}
				r := canga(t, "", append(append([]string{"check"}, cargs...), p)...)
				requireNoPanic(t, r)
				if r.code != qexit {
					t.Errorf("canga check %v: exit %d, qemu-img check %d\n%v\nqemu-img: %s", cargs, r.code, qexit, r, qerr)
				}
				if qexit == 1 {
					requireCleanFailure(t, r)
					if !strings.Contains(r.stderr, "backing file") && !strings.Contains(r.stderr, "check failed") {
						t.Errorf("canga check should say why\n%v", r)
					}
					if r.stdout != "" {
						t.Errorf("a failed check printed a report\n%v", r)
					}
				}
			}
			// Without the backing chain: qemu-img check of the image
			// with "backing": null.
			spec := `json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"` + p + `"}}`
			_, qexit, qerr := testkit.RunCode(t, "qemu-img", "check", spec)
			r := canga(t, "", "check", "--no-backing", p)
			requireNoPanic(t, r)
			if r.code != qexit {
				t.Errorf("canga check --no-backing: exit %d, qemu-img check without backing %d\n%v\nqemu-img: %s", r.code, qexit, r, qerr)
			}
		})
	}
}
