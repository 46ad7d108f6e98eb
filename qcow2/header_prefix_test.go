package qcow2

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testkit"
)

// TestReadHeaderPastPrefix: ReadHeader reads the first kilobytes of the
// first cluster and the rest only when the header needs it. A backing
// file name moved far into a 64 KiB first cluster is still read, as qemu
// reads it.
func TestReadHeaderPastPrefix(t *testing.T) {
	dir := t.TempDir()
	base := testkit.QemuCreate(t, filepath.Join(dir, "base.qcow2"), "1M")
	top := testkit.QemuCreate(t, filepath.Join(dir, "top.qcow2"), "", "-o", "cluster_size=65536", "-b", filepath.Base(base), "-F", "qcow2")
	data := testkit.ReadFile(t, top)
	be := binary.BigEndian
	off, size := be.Uint64(data[8:]), be.Uint32(data[16:])
	name := append([]byte(nil), data[off:off+uint64(size)]...)
	const moved = 3*headPrefix + 100
	clear(data[off : off+uint64(size)])
	copy(data[moved:], name)
	be.PutUint64(data[8:], moved)
	if err := os.WriteFile(top, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := testkit.Run(t, "qemu-img", "info", "-U", "--output=json", top)
	if !strings.Contains(out, `"backing-filename": "base.qcow2"`) {
		t.Fatalf("qemu-img does not read the moved name:\n%s", out)
	}
	h, err := ReadHeader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if h.BackingFile != "base.qcow2" || h.BackingFormat != FormatQcow2 {
		t.Fatalf("backing file %q (%s)", h.BackingFile, h.BackingFormat)
	}
	// And one cut short inside the name: corrupt, as before.
	cut := data[:moved+2]
	if _, err := ReadHeader(bytes.NewReader(cut), int64(len(cut))); err == nil {
		t.Fatal("a name past the end of the file is accepted")
	}
}
