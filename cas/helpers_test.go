package cas

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// The test binary doubles as the helper process of the multi-process tests:
// run with CAS_TEST_HELPER set, it plays that role instead of testing.
func TestMain(m *testing.M) {
	if role := os.Getenv("CAS_TEST_HELPER"); role != "" {
		if err := runHelper(role); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runHelper(role string) error {
	s, err := Open(os.Getenv("CAS_REPO"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch role {
	case "writer":
		rounds, err := strconv.Atoi(os.Getenv("CAS_ROUNDS"))
		if err != nil {
			return err
		}
		return runWriter(ctx, s, os.Getenv("CAS_ID"), rounds)
	case "hold-lock":
		lk, err := s.Lock(ctx)
		if err != nil {
			return err
		}
		fmt.Println("ready")
		waitStdin()
		return lk.Unlock()
	case "hold-temp":
		tf, err := s.CreateTemp("held-*")
		if err != nil {
			return err
		}
		if _, err := tf.Write(make([]byte, 1000)); err != nil {
			return err
		}
		fmt.Println("ready", filepath.Base(tf.Name()))
		waitStdin()
		return tf.Discard()
	case "hold-partial":
		size, err := strconv.ParseInt(os.Getenv("CAS_SIZE"), 10, 64)
		if err != nil {
			return err
		}
		p, err := s.OpenPartial(ctx, digest.Digest(os.Getenv("CAS_DIGEST")), size)
		if err != nil {
			return err
		}
		fmt.Println("ready")
		waitStdin()
		return p.Close()
	case "crash-partial":
		// Downloads the first half of a blob, then stalls until killed.
		seed, _ := strconv.ParseUint(os.Getenv("CAS_SEED"), 10, 64)
		size, _ := strconv.Atoi(os.Getenv("CAS_SIZE"))
		half, _ := strconv.Atoi(os.Getenv("CAS_HALF"))
		data := content(seed, size)
		p, err := s.OpenPartial(ctx, digest.FromBytes(data), int64(size))
		if err != nil {
			return err
		}
		_, err = p.Commit(ctx, io.MultiReader(bytes.NewReader(data[:half]), stallReader{}), nil)
		return err
	default:
		return fmt.Errorf("unknown role %q", role)
	}
}

// stallReader announces that everything before it was consumed and blocks
// until the parent kills the process (or goes away, closing stdin).
type stallReader struct{}

func (stallReader) Read([]byte) (int, error) {
	fmt.Println("ready")
	waitStdin()
	return 0, errors.New("parent went away")
}

func waitStdin() { _, _ = io.Copy(io.Discard, os.Stdin) }

// runWriter is one writer of the concurrency test, in a goroutine or in a
// helper process: ingest blobs (one shared by everybody, one of its own) and
// record each in log.txt by read-modify-write under the repository lock.
func runWriter(ctx context.Context, s *Store, id string, rounds int) error {
	shared := bytes.Repeat([]byte("shared blob\n"), 50000)
	for i := range rounds {
		if _, err := s.Ingest(ctx, bytes.NewReader(shared), "", -1, nil); err != nil {
			return err
		}
		own := bytes.Repeat([]byte(fmt.Sprintf("%s round %d\n", id, i)), 3000)
		info, err := s.Ingest(ctx, bytes.NewReader(own), "", int64(len(own)), nil)
		if err != nil {
			return err
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		lk, err := s.Lock(lctx)
		cancel()
		if err != nil {
			return err
		}
		old, err := os.ReadFile(filepath.Join(s.Dir(), "log.txt"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			_ = lk.Unlock()
			return err
		}
		line := fmt.Sprintf("%s %d %s\n", id, i, info.Digest)
		err = s.WriteFileAtomic("log.txt", append(old, line...), 0o644)
		if uerr := lk.Unlock(); err == nil {
			err = uerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	line  string // its "ready ..." line
}

// startHelper runs the test binary in role and waits for its ready line.
func startHelper(t *testing.T, role string, env ...string) *helper {
	t.Helper()
	h := spawn(t, role, env...)
	line, err := h.out.ReadString('\n')
	if err != nil {
		_ = h.cmd.Process.Kill()
		_ = h.cmd.Wait()
		t.Fatalf("helper %s did not get ready: %v; stderr: %s", role, err, h.cmd.Stderr)
	}
	h.line = strings.TrimSpace(line)
	if !strings.HasPrefix(h.line, "ready") {
		t.Fatalf("helper %s said %q", role, h.line)
	}
	return h
}

func spawn(t *testing.T, role string, env ...string) *helper {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "CAS_TEST_HELPER="+role), env...)
	cmd.Stderr = new(bytes.Buffer)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(h.kill)
	return h
}

// kill ends the helper the way a crash would: SIGKILL, no cleanup of its own.
func (h *helper) kill() {
	if h.cmd.ProcessState != nil {
		return
	}
	_ = h.cmd.Process.Kill()
	_ = h.stdin.Close()
	_ = h.cmd.Wait()
}

// content is deterministic pseudo-random data, so a helper and the test
// agree on bytes without passing them around.
func content(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	_, _ = r.Read(b)
	return b
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustIngest(t *testing.T, s *Store, data []byte) BlobInfo {
	t.Helper()
	info, err := s.Ingest(context.Background(), bytes.NewReader(data), "", -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// tmpEntries lists .tmp/; the tests want it empty after every operation.
func tmpEntries(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir(), tmpDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func assertTmpEmpty(t *testing.T, s *Store) {
	t.Helper()
	if names := tmpEntries(t, s); len(names) != 0 {
		t.Errorf(".tmp/ not empty: %v", names)
	}
}

func assertNoBlobs(t *testing.T, s *Store) {
	t.Helper()
	blobs, junk, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 0 || len(junk) != 0 {
		t.Errorf("blobs: %v, junk: %v; want none", blobs, junk)
	}
}

// assertBlob checks a stored blob the way a reader would see it.
func assertBlob(t *testing.T, s *Store, d digest.Digest, want []byte) {
	t.Helper()
	f, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("blob %s: read %d bytes that differ from the %d written", d, len(got), len(want))
	}
	p, err := s.Path(d)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != blobPerm {
		t.Errorf("blob %s mode %v, want -r--r--r--", d, fi.Mode())
	}
	if err := s.Verify(context.Background(), d, nil); err != nil {
		t.Errorf("verify: %v", err)
	}
}
