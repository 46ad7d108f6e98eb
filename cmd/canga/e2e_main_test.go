package main_test

// End-to-end tests of the canga command: the binary is built once and run
// as a subprocess, each test with its own CANGA_HOME. The oracles are
// qemu-img, qemu-io and sha256sum, never canga itself.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// Stamped into the test binary, to check that --version prints them.
const (
	e2eVersion = "1.2.3-e2e"
	e2eCommit  = "0123456789abcdef0123456789abcdef01234567"
)

var (
	cangaBin string // the canga binary under test
	fxDir    string // fixtures shared by every test: read them, never write
)

func TestMain(m *testing.M) {
	os.Exit(e2eMain(m))
}

func e2eMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "canga-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cangaBin = filepath.Join(dir, "canga")
	fxDir = filepath.Join(dir, "fixtures")
	if err := os.Mkdir(fxDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	build := exec.Command("go", "build", "-o", cangaBin,
		"-ldflags", "-X main.version="+e2eVersion+" -X main.commit="+e2eCommit, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	for _, tool := range []string{"qemu-img", "qemu-io", "sha256sum", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "%s not found: these tests need qemu-utils, coreutils and e2fsprogs\n", tool)
			return 1
		}
	}
	// The build tests boot libguestfs under emulation: KVM here may hang
	// the appliance for good (see guestfs/integration_test.go), and build's
	// launch watchdog, which recovers from that, would cost minutes a build.
	if os.Getenv("LIBGUESTFS_BACKEND_SETTINGS") == "" {
		os.Setenv("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
	}
	return m.Run()
}

// result is what one canga run did.
type result struct {
	args    []string
	stdout  string
	stderr  string
	code    int
	maxRSS  int64 // KiB
	elapsed time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("canga %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// cangaTimeout bounds every run: a hung canga is a failure, not a hung test.
const cangaTimeout = 60 * time.Second

// canga runs the binary with CANGA_HOME=home and stderr not a terminal.
func canga(t testing.TB, home string, args ...string) result {
	t.Helper()
	return cangaIn(t, home, "", cangaTimeout, args...)
}

// cangaIn is canga with a working directory and a time limit; a run that
// outlives it is killed and reported with code -1.
func cangaIn(t testing.TB, home, dir string, timeout time.Duration, args ...string) result {
	t.Helper()
	return runCanga(t, home, dir, timeout, false, args...)
}

// cangaMeasured is cangaIn that also measures canga's peak memory.
//
// It runs canga under GNU time rather than reading the rusage of the
// child: Go starts children with vfork (CLONE_VM), and Linux records the
// parent's peak RSS at the child's exec, so Maxrss from
// cmd.ProcessState.SysUsage() is never below the peak RSS of the test
// process itself.
func cangaMeasured(t testing.TB, home, dir string, timeout time.Duration, args ...string) result {
	t.Helper()
	return runCanga(t, home, dir, timeout, true, args...)
}

func runCanga(t testing.TB, home, dir string, timeout time.Duration, measure bool, args ...string) result {
	t.Helper()
	return runCangaEnv(t, cangaEnv(home), dir, timeout, measure, args...)
}

// runCangaEnv is runCanga with the whole environment given.
func runCangaEnv(t testing.TB, env []string, dir string, timeout time.Duration, measure bool, args ...string) result {
	t.Helper()
	name, argv := cangaBin, args
	var rssFile string
	if measure {
		rssFile = filepath.Join(t.TempDir(), "maxrss")
		name, argv = "/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile, cangaBin}, args...)
	}
	cmd := exec.Command(name, argv...)
	cmd.Env = env
	cmd.Dir = dir
	// Its own process group, so that a timeout kills canga and not only
	// the time command in front of it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start canga: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	timedOut := false
	select {
	case err = <-done:
	case <-time.After(timeout):
		timedOut = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
	}
	r := result{args: args, stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	if measure && !timedOut {
		b, rerr := os.ReadFile(rssFile)
		if rerr != nil {
			t.Fatalf("time -o %s: %v", rssFile, rerr)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if _, serr := fmt.Sscan(lines[len(lines)-1], &r.maxRSS); serr != nil {
			t.Fatalf("time -o %s: %q: %v", rssFile, b, serr)
		}
	}
	var ee *exec.ExitError
	switch {
	case timedOut:
		r.code = -1
		t.Errorf("canga %s: still running after %v, killed", strings.Join(args, " "), timeout)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("canga %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// guestfsEnv is what every canga run of the tests gets of the test's own
// environment for libguestfs: how it starts its appliance (see e2eMain).
func guestfsEnv() []string {
	if v := os.Getenv("LIBGUESTFS_BACKEND_SETTINGS"); v != "" {
		return []string{"LIBGUESTFS_BACKEND_SETTINGS=" + v}
	}
	return nil
}

// dockerConfigDir is the DOCKER_CONFIG of the canga runs of home.
func dockerConfigDir(home string) string { return filepath.Join(home, "docker") }

func cangaEnv(home string) []string {
	env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LC_ALL=C"}, guestfsEnv()...)
	if home != "" {
		// Registry credentials (SPEC §8) are Docker's config.json: each
		// home has its own, and none reads or writes the user's.
		env = append(env, "CANGA_HOME="+home, "DOCKER_CONFIG="+dockerConfigDir(home))
	}
	return env
}

// ok runs canga and fails the test unless it exits 0; it returns stdout.
func ok(t testing.TB, home string, args ...string) string {
	t.Helper()
	r := canga(t, home, args...)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	return r.stdout
}

// fails runs canga and requires a clean failure: a non-zero exit, a
// "canga: " message on stderr, and no Go panic.
func fails(t testing.TB, home string, args ...string) result {
	t.Helper()
	r := canga(t, home, args...)
	requireCleanFailure(t, r)
	return r
}

func requireCleanFailure(t testing.TB, r result) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("want a failure, got success\n%v", r)
	}
	if !strings.HasPrefix(r.stderr, "canga: ") {
		t.Errorf("stderr does not start with \"canga: \"\n%v", r)
	}
	requireNoPanic(t, r)
}

func requireNoPanic(t testing.TB, r result) {
	t.Helper()
	for _, s := range []string{r.stdout, r.stderr} {
		if strings.Contains(s, "panic") || strings.Contains(s, "goroutine ") || strings.Contains(s, "internal error") {
			t.Errorf("panic trace or internal error in the output\n%v", r)
			return
		}
	}
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// ---- fixtures: real ext4 file systems over copies of system files ----

type fixture struct {
	once sync.Once
	val  any
	err  error
}

var fixtures sync.Map // name -> *fixture

// shared builds a fixture once for the whole test binary, in its own
// directory under fxDir. build fails the test it runs in when it fails;
// every later test that wants the fixture then fails too.
func shared[T any](t testing.TB, name string, build func(t testing.TB, dir string) T) T {
	t.Helper()
	v, _ := fixtures.LoadOrStore(name, &fixture{})
	f := v.(*fixture)
	f.once.Do(func() {
		// Stays set if build stops the test (Once is done all the same).
		f.err = fmt.Errorf("building it failed in %s", t.Name())
		dir := filepath.Join(fxDir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		f.val = build(t, dir)
		f.err = nil
	})
	if f.err != nil {
		t.Fatalf("fixture %s: %v", name, f.err)
	}
	return f.val.(T)
}

// mkExt4 makes a raw ext4 disk of size holding copies of the given trees.
func mkExt4(t testing.TB, dir, size string, trees ...string) string {
	t.Helper()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tr := range trees {
		testkit.Run(t, "cp", "-a", tr, root+"/")
	}
	disk := filepath.Join(dir, "disk.raw")
	testkit.Ext4Disk(t, disk, size, root, "-E", "root_owner=0:0", "-U", "6f1c5d2e-0b6a-4d7c-9a51-3c2f1e0d9b8a")
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	return disk
}

// baseRaw is a 64 MiB raw ext4 disk with /etc and Perl's library on it.
func baseRaw(t testing.TB) string {
	return shared(t, "base-raw", func(t testing.TB, dir string) string {
		return mkExt4(t, dir, "64M", "/etc", "/usr/share/perl")
	})
}

// baseQcow2 is baseRaw as an uncompressed qcow2 made by qemu-img.
func baseQcow2(t testing.TB) string {
	raw := baseRaw(t)
	return shared(t, "base-qcow2", func(t testing.TB, dir string) string {
		p := filepath.Join(dir, "base.qcow2")
		testkit.Run(t, "qemu-img", "convert", "-O", "qcow2", raw, p)
		return p
	})
}

// otherRaw is a second, different 32 MiB ext4 disk.
func otherRaw(t testing.TB) string {
	return shared(t, "other-raw", func(t testing.TB, dir string) string {
		return mkExt4(t, dir, "32M", "/usr/share/zoneinfo")
	})
}

// bigRaw is a 256 MiB ext4 disk full of documentation, for the tests that
// need an add that takes a while or a blob that does not fit.
func bigRaw(t testing.TB) string {
	return shared(t, "big-raw", func(t testing.TB, dir string) string {
		return mkExt4(t, dir, "256M", "/usr/share/doc")
	})
}

// dataClusters returns the offsets of the 64 KiB clusters of a raw disk
// that are not all zeros.
func dataClusters(t testing.TB, raw string) []int64 {
	t.Helper()
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	const cs = 64 << 10
	var offs []int64
	zero := make([]byte, cs)
	for off := 0; off+cs <= len(b); off += cs {
		if !bytes.Equal(b[off:off+cs], zero) {
			offs = append(offs, int64(off))
		}
	}
	return offs
}

// ---- repository helpers ----

func repoDir(home string) string { return filepath.Join(home, "default") }

func blobDir(home string) string { return filepath.Join(repoDir(home), "blobs", "sha256") }

// blobPath is the file of a blob digest in the default repository.
func blobPath(home, blob string) string {
	return filepath.Join(blobDir(home), strings.TrimPrefix(blob, "sha256:"))
}

// isChunkList reports whether the blob file p is a chunk list (SPEC §9)
// rather than a qcow2 file: everything canga stores in blobs/ is one or
// the other.
func isChunkList(t testing.TB, p string) bool {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil {
		return true // shorter than a qcow2 header
	}
	return string(magic) != "QFI\xfb"
}

// qcow2Blobs lists the qcow2 blobs of home's default repository, sorted,
// leaving out the chunk lists.
func qcow2Blobs(t testing.TB, home string) []string {
	t.Helper()
	return qcow2Only(t, blobDir(home), dirNames(t, blobDir(home)))
}

// qcow2Only keeps the names of dir that are not chunk lists.
func qcow2Only(t testing.TB, dir string, names []string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		if !isChunkList(t, filepath.Join(dir, n)) {
			out = append(out, n)
		}
	}
	return out
}

// repoState is what a failed command must leave unchanged.
type repoState struct {
	index []byte
	blobs map[string]string // file name -> sha256sum
}

func snapshot(t testing.TB, home string) repoState {
	t.Helper()
	st := repoState{blobs: map[string]string{}}
	b, err := os.ReadFile(filepath.Join(repoDir(home), "index.yaml"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	st.index = b
	entries, err := os.ReadDir(blobDir(home))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		st.blobs[e.Name()] = testkit.FileDigest(t, filepath.Join(blobDir(home), e.Name())).String()
	}
	return st
}

func requireUnchanged(t testing.TB, home string, before repoState) {
	t.Helper()
	after := snapshot(t, home)
	if !bytes.Equal(before.index, after.index) {
		t.Errorf("index.yaml changed\nbefore:\n%s\nafter:\n%s", before.index, after.index)
	}
	if !mapsEqual(before.blobs, after.blobs) {
		t.Errorf("blobs changed\nbefore: %v\nafter:  %v", before.blobs, after.blobs)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// tmpEntries lists the repository's .tmp/.
func tmpEntries(t testing.TB, home string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repoDir(home), ".tmp"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// listEntry is one item of canga list --json.
type listEntry struct {
	Repo        string   `json:"repo"`
	ID          string   `json:"id"`
	Tags        []string `json:"tags"`
	Parent      string   `json:"parent"`
	Blob        string   `json:"blob"`
	BlobSize    int64    `json:"blob-size"`
	VirtualSize int64    `json:"virtual-size"`
	Created     string   `json:"created"`
	Description string   `json:"description"`
	OS          string   `json:"os"`
	Present     bool     `json:"present"`
}

func listJSON(t testing.TB, home string) []listEntry {
	t.Helper()
	out := ok(t, home, "list", "--json")
	var doc struct {
		Version int         `json:"version"`
		Images  []listEntry `json:"images"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	if dec.More() {
		t.Fatalf("list --json: more than one JSON document\n%s", out)
	}
	if doc.Version != 1 || doc.Images == nil {
		t.Fatalf("list --json: version %d, images %v\n%s", doc.Version, doc.Images, out)
	}
	return doc.Images
}

func findItem(items []listEntry, id string) *listEntry {
	for i := range items {
		if items[i].ID == id {
			return &items[i]
		}
	}
	return nil
}

// addID runs canga add and returns the image ID it prints.
func addID(t testing.TB, home string, args ...string) string {
	t.Helper()
	out := strings.TrimSpace(ok(t, home, append([]string{"add"}, args...)...))
	if !strings.HasPrefix(out, "sha256:") || len(out) != 71 {
		t.Fatalf("canga add %v printed %q, want an image ID", args, out)
	}
	return out
}

// ---- small things ----

func goVersion() string { return runtime.Version() }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
