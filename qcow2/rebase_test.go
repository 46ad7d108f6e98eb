package qcow2

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

func setBackingFile(t *testing.T, name, backing, format string) error {
	t.Helper()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	return SetBacking(f, fi.Size(), backing, format)
}

func TestSetBacking(t *testing.T) {
	dir := t.TempDir()
	converted(6<<20, "-c")(t, dir) // img.qcow2
	top := filepath.Join(dir, "top.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "img.qcow2", "-F", "qcow2", top)
	testkit.QemuIO(t, "qcow2", top, "write -P 0x61 1m 64k", "write -z 2m 64k")
	// A dirty bitmap and the feature name table must survive the rewrite.
	testkit.Run(t, "qemu-img", "bitmap", "--add", top, "b0")
	want := testkit.Sha256sum(t, testkit.QemuRaw(t, top)).String()

	// Rename the base, as canga does when a blob gets its final name.
	if err := os.Rename(filepath.Join(dir, "img.qcow2"), filepath.Join(dir, "0123abcd")); err != nil {
		t.Fatal(err)
	}
	if err := setBackingFile(t, top, "0123abcd", "qcow2"); err != nil {
		t.Fatal(err)
	}
	info := testkit.Run(t, "qemu-img", "info", "--output=json", top)
	for _, s := range []string{`"backing-filename": "0123abcd"`, `"backing-filename-format": "qcow2"`, `"name": "b0"`} {
		if !strings.Contains(info, s) {
			t.Errorf("qemu-img info lacks %s:\n%s", s, info)
		}
	}
	qemuCheckClean(t, top)
	if got := testkit.Sha256sum(t, testkit.QemuRaw(t, top)).String(); got != want {
		t.Fatalf("content changed: %s, want %s", got, want)
	}

	// A long name, then no format (probed), then a short name again:
	// stale bytes of the longer header must not linger.
	long := strings.Repeat("d/", 200) + "x"
	if err := setBackingFile(t, top, long, "raw"); err != nil {
		t.Fatal(err)
	}
	if err := setBackingFile(t, top, "0123abcd", ""); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(top)
	if err != nil {
		t.Fatal(err)
	}
	h := d.(*Image).Header()
	if h.BackingFile != "0123abcd" || h.BackingFormat != "" {
		t.Errorf("header says %q %q", h.BackingFile, h.BackingFormat)
	}
	d.Close()
	qemuCheckClean(t, top)
	if got := testkit.Sha256sum(t, testkit.QemuRaw(t, top)).String(); got != want {
		t.Fatalf("content changed: %s", got)
	}

	// Removing the backing file makes the top standalone.
	if err := setBackingFile(t, top, "", ""); err != nil {
		t.Fatal(err)
	}
	if info := testkit.Run(t, "qemu-img", "info", top); strings.Contains(info, "backing file") {
		t.Errorf("backing file left: %s", info)
	}
}

func TestSetBackingRefuses(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", small, "1M")
	before, _ := os.ReadFile(small)
	for _, c := range []struct{ name, format, want string }{
		{strings.Repeat("x", 400), "qcow2", "does not fit"},
		{strings.Repeat("x", 2000), "qcow2", "longer than 1023"},
		{"", "qcow2", "needs a backing file"},
		{"base", "a-very-long-format-name", "too long"},
	} {
		err := setBackingFile(t, small, c.name, c.format)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SetBacking(%.20q, %q) = %v, want %q", c.name, c.format, err, c.want)
		}
	}
	after, _ := os.ReadFile(small)
	if string(before) != string(after) {
		t.Error("a refused rewrite changed the file")
	}
	// Version 2 images work too.
	v2 := filepath.Join(dir, "v2.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "1M")
	if err := setBackingFile(t, v2, "small.qcow2", "qcow2"); err != nil {
		t.Fatal(err)
	}
	qemuCheckClean(t, v2)
	if info := testkit.Run(t, "qemu-img", "info", v2); !strings.Contains(info, "backing file: small.qcow2") {
		t.Errorf("v2: %s", info)
	}
}
