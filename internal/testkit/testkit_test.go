package testkit

import (
	"bytes"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Only tests may import testkit: a file of the module that is not a test
// and imports it fails this test.
func TestOnlyTestsImport(t *testing.T) {
	const self = `"github.com/cangallo/canga/internal/testkit"`
	root := filepath.Join("..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	files := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		files++
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if imp.Path.Value == self {
				t.Errorf("%s imports testkit; only tests may", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 20 {
		t.Fatalf("read only %d Go files under %s: not the module", files, root)
	}
}

func TestDigests(t *testing.T) {
	dir := t.TempDir()
	img := QemuCreate(t, filepath.Join(dir, "a.qcow2"), "4M")
	QemuWrite(t, img, 0x5a, 1<<20, 64<<10)
	raw := QemuRaw(t, img)
	b := ReadFile(t, raw)
	want := append(append(make([]byte, 1<<20), bytes.Repeat([]byte{0x5a}, 64<<10)...), make([]byte, 3<<20-64<<10)...)
	if !bytes.Equal(b, want) {
		t.Fatalf("qemu-img convert -O raw of the image: %d bytes, not the ones written", len(b))
	}
	if fd, sum := FileDigest(t, raw), Sha256sum(t, raw); fd != sum || fd.Validate() != nil {
		t.Errorf("FileDigest %s, Sha256sum %s", fd, sum)
	}
	if id, fd := RawDigest(t, img), FileDigest(t, raw); id != fd {
		t.Errorf("RawDigest %s, digest of the raw file %s", id, fd)
	}
	QemuCheck(t, img)
	QemuCompare(t, img, raw)
	if info := QemuInfo(t, img); info.Format != "qcow2" || info.VirtualSize != 4<<20 {
		t.Errorf("QemuInfo: %+v", info)
	}
}

func TestFlipByte(t *testing.T) {
	p := WriteFile(t, filepath.Join(t.TempDir(), "blob"), []byte{1, 2, 3}, 0o444)
	FlipByte(t, p, 1)
	if b := ReadFile(t, p); !bytes.Equal(b, []byte{1, ^byte(2), 3}) {
		t.Errorf("after FlipByte: %v", b)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("mode after FlipByte: %v, %v; want 0444", fi.Mode(), err)
	}
}

func TestPythonHTTPServer(t *testing.T) {
	dir := t.TempDir()
	WriteFile(t, filepath.Join(dir, "f"), []byte("served"), 0o644)
	url := PythonHTTPServer(t, dir)
	resp, err := http.Get(url + "f")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil || resp.StatusCode != 200 || b.String() != "served" {
		t.Errorf("GET %sf: %d %q %v", url, resp.StatusCode, b.String(), err)
	}
	if port, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(url, "http://127.0.0.1:"), "/")); err != nil || port <= 0 {
		t.Errorf("URL %s", url)
	}
}

func TestSSH(t *testing.T) {
	dir := t.TempDir()
	key := Keygen(t, dir, "k", "", "-t", "ed25519")
	msg := WriteFile(t, filepath.Join(dir, "msg"), []byte("hello"), 0o644)
	sig := SSHSign(t, key, "test", msg)
	allowed := WriteFile(t, filepath.Join(dir, "allowed"), []byte("p@x "+string(ReadFile(t, key+".pub"))), 0o644)
	if out, ok := SSHVerify(t, allowed, "p@x", "test", msg, sig); !ok {
		t.Errorf("SSHVerify of a good signature: %s", out)
	}
	if out, ok := SSHVerify(t, allowed, "p@x", "other", msg, sig); ok {
		t.Errorf("SSHVerify accepts another namespace: %s", out)
	}
	if fp := Fingerprint(t, key+".pub"); !strings.HasPrefix(fp, "SHA256:") {
		t.Errorf("Fingerprint %q", fp)
	}
}

func TestHostile(t *testing.T) {
	cases, err := Hostile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.Name] || c.Want == "" {
			t.Errorf("case %+v: duplicate name or nothing wanted", c)
		}
		seen[c.Name] = true
		if _, err := os.Stat(c.Path); err != nil {
			t.Errorf("case %s: %v", c.Name, err)
		}
	}
	if len(cases) < 30 {
		t.Errorf("%d cases", len(cases))
	}
}

// The libguestfs tests that read disks with Ext4 run only with
// CANGA_GUESTFS_TEST=1; this checks the reader on a disk made here.
func TestExt4(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	WriteFile(t, filepath.Join(root, "etc", "motd"), []byte("hello ☃\n"), 0o644)
	d := Ext4{Raw: filepath.Join(dir, "disk.raw")}
	Ext4Disk(t, d.Raw, "8M", root, "-L", "testkit")
	if got, ok := d.Read(t, "/etc/motd"); !ok || got != "hello ☃\n" {
		t.Errorf("Read /etc/motd = %q, %v", got, ok)
	}
	if _, ok := d.Read(t, "/etc/none"); ok {
		t.Error("Read of a missing file succeeds")
	}
	if !d.Exists(t, "/etc") || d.Exists(t, "/nope") {
		t.Error("Exists is wrong about /etc or /nope")
	}
	d.File(t, "/etc/motd", "hello ☃\n")
	d.Absent(t, "/etc/shadow")
}

func TestCryptMatches(t *testing.T) {
	const hash = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/" // crypt("password", "$6$saltsalt$")
	if !CryptMatches(t, "password", hash) {
		t.Error("the password does not match its hash")
	}
	if CryptMatches(t, "other", hash) {
		t.Error("another password matches")
	}
}
