package testkit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Test images are made by qemu-img and qemu-io at test time, and qemu is
// the oracle every result is compared with. Whatever only reads an image
// passes -U (force share), so that a lock another process holds on it
// does not get in the way.

// QemuCreate makes a qcow2 image with `qemu-img create -q -f qcow2 ARGS
// IMAGE SIZE` and returns image. args come before the file (-o
// cluster_size=512, -b base.qcow2 -F qcow2, -u); size "" takes the
// backing file's.
func QemuCreate(t testing.TB, image, size string, args ...string) string {
	t.Helper()
	argv := append(append([]string{"create", "-q", "-f", "qcow2"}, args...), image)
	if size != "" {
		argv = append(argv, size)
	}
	Run(t, "qemu-img", argv...)
	return image
}

// QemuIO runs qemu-io commands on an image. The format is given so that a
// raw file is never probed.
func QemuIO(t testing.TB, format, image string, cmds ...string) {
	t.Helper()
	args := []string{"-f", format}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	Run(t, "qemu-io", append(args, image)...)
}

// QemuWrite fills length bytes at off of a qcow2 image with pattern, so
// that images differ and deltas hold data.
func QemuWrite(t testing.TB, image string, pattern byte, off, length int64) {
	t.Helper()
	QemuIO(t, "qcow2", image, fmt.Sprintf("write -P 0x%02x %d %d", pattern, off, length))
}

// QemuRaw converts an image (and its backing chain) to raw with qemu-img
// convert and returns the raw file, which is in a temporary directory of
// the test.
func QemuRaw(t testing.TB, image string) string {
	t.Helper()
	raw := filepath.Join(t.TempDir(), filepath.Base(image)+".raw")
	Run(t, "qemu-img", "convert", "-U", "-O", "raw", image, raw)
	return raw
}

// RawDigest is the image ID of SPEC §1 computed the way anyone can: the
// sha256sum of what qemu-img convert -O raw makes of the image.
func RawDigest(t testing.TB, image string) digest.Digest {
	t.Helper()
	raw := QemuRaw(t, image)
	// Disks are large; do not keep a copy until the test ends.
	defer os.Remove(raw)
	return Sha256sum(t, raw)
}

// QemuCompare requires qemu-img compare to find the contents of two images
// identical. It reports with t.Errorf, so that the test goes on to its
// other checks.
func QemuCompare(t testing.TB, a, b string) {
	t.Helper()
	out, code, stderr := RunCode(t, "qemu-img", "compare", "-U", a, b)
	if code != 0 {
		t.Errorf("qemu-img compare %s %s: exit %d\n%s%s", a, b, code, out, stderr)
	}
}

// CheckCounts are the numbers of qemu-img check --output=json (and of
// canga check --json, which gives the same).
type CheckCounts struct {
	CheckErrors        int64 `json:"check-errors"`
	Corruptions        int64 `json:"corruptions"`
	Leaks              int64 `json:"leaks"`
	ImageEndOffset     int64 `json:"image-end-offset"`
	TotalClusters      int64 `json:"total-clusters"`
	AllocatedClusters  int64 `json:"allocated-clusters"`
	FragmentedClusters int64 `json:"fragmented-clusters"`
	CompressedClusters int64 `json:"compressed-clusters"`
}

// QemuCheckReport runs qemu-img check and returns its exit code (0 clean,
// 2 corrupt, 3 leaks, 63 not checkable), its counts (zero when it printed
// none) and what it said on standard error.
func QemuCheckReport(t testing.TB, image string) (int, CheckCounts, string) {
	t.Helper()
	out, code, stderr := RunCode(t, "qemu-img", "check", "-U", "--output=json", image)
	var c CheckCounts
	if out != "" {
		if err := json.Unmarshal([]byte(out), &c); err != nil {
			t.Fatalf("qemu-img check %s: %v\n%s", image, err, out)
		}
	}
	return code, c, stderr
}

// QemuCheck requires qemu-img check to find the image clean: no
// corruption, no leak, no check error. It reports with t.Errorf.
func QemuCheck(t testing.TB, image string) {
	t.Helper()
	code, c, stderr := QemuCheckReport(t, image)
	if code != 0 || c.Corruptions != 0 || c.Leaks != 0 || c.CheckErrors != 0 {
		t.Errorf("qemu-img check %s: exit %d %+v\n%s", image, code, c, stderr)
	}
}

// ImageInfo is qemu-img info --output=json (and canga info --json, which
// gives the same fields).
type ImageInfo struct {
	Filename            string `json:"filename"`
	Format              string `json:"format"`
	VirtualSize         int64  `json:"virtual-size"`
	ClusterSize         int64  `json:"cluster-size"`
	BackingFilename     string `json:"backing-filename"`
	FullBackingFilename string `json:"full-backing-filename"`
	BackingFormat       string `json:"backing-filename-format"`
	FormatSpecific      *struct {
		Type string `json:"type"`
		Data struct {
			Compat          string `json:"compat"`
			CompressionType string `json:"compression-type"`
			LazyRefcounts   bool   `json:"lazy-refcounts"`
			RefcountBits    int    `json:"refcount-bits"`
			ExtendedL2      bool   `json:"extended-l2"`
			Corrupt         bool   `json:"corrupt"`
		} `json:"data"`
	} `json:"format-specific"`
}

// QemuInfo is qemu-img info --output=json of an image.
func QemuInfo(t testing.TB, image string) ImageInfo {
	t.Helper()
	var v ImageInfo
	out := Run(t, "qemu-img", "info", "-U", "--output=json", image)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("qemu-img info %s: %v\n%s", image, err, out)
	}
	return v
}

// QemuChain is qemu-img info --backing-chain --output=json of an image:
// the image first, then its backing files in order.
func QemuChain(t testing.TB, image string) []ImageInfo {
	t.Helper()
	var v []ImageInfo
	out := Run(t, "qemu-img", "info", "-U", "--backing-chain", "--output=json", image)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("qemu-img info --backing-chain %s: %v\n%s", image, err, out)
	}
	return v
}
