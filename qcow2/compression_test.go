package qcow2

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

func TestParseCompression(t *testing.T) {
	for _, c := range []Compression{CompressionNone, CompressionZlib, CompressionZstd} {
		got, err := ParseCompression(string(c))
		if err != nil || got != c || !c.Valid() {
			t.Errorf("ParseCompression(%q) = %q, %v", c, got, err)
		}
	}
	for _, s := range []string{"", "lz4", "ZLIB", "zlib "} {
		if c, err := ParseCompression(s); err == nil || Compression(s).Valid() {
			t.Errorf("ParseCompression(%q) = %q, accepted", s, c)
		}
	}
}

// TestHeaderCompression reads the compression type of images qemu made,
// and of images canga made, which qemu-img info reads the same way.
func TestHeaderCompression(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		opts string
		want Compression
	}{{"compression_type=zlib", CompressionZlib}, {"compression_type=zstd", CompressionZstd}, {"compat=0.10", CompressionZlib}} {
		name := filepath.Join(dir, "q.qcow2")
		testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", c.opts, name, "1M")
		if got := readHeader(t, name).Compression(); got != c.want {
			t.Errorf("%s: %q, want %q", c.opts, got, c.want)
		}
	}
	for _, c := range []struct{ opt, want Compression }{{"", CompressionZlib}, {CompressionNone, CompressionZlib}, {CompressionZlib, CompressionZlib}, {CompressionZstd, CompressionZstd}} {
		name := filepath.Join(dir, "c.qcow2")
		f, err := os.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := Create(f, 1<<20, ConvertOptions{Compression: c.opt}); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if got := readHeader(t, name).Compression(); got != c.want {
			t.Errorf("written with %q: %q, want %q", c.opt, got, c.want)
		}
		testkit.Run(t, "qemu-img", "check", "-q", name)
	}
	f, err := os.Create(filepath.Join(dir, "lz4.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Create(f, 1<<20, ConvertOptions{Compression: "lz4"}); err == nil || !strings.Contains(err.Error(), `"lz4"`) {
		t.Errorf("Create with compression lz4: %v", err)
	}
}

func readHeader(t *testing.T, name string) *Header {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return h
}
