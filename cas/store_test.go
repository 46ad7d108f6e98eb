package cas

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/opencontainers/go-digest"
)

const hexA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestValidateDigest(t *testing.T) {
	tests := []struct {
		name string
		d    digest.Digest
		ok   bool
	}{
		{"valid", "sha256:" + hexA, true},
		{"valid empty-input digest", digest.FromBytes(nil), true},
		{"empty", "", false},
		{"prefix only", "sha256:", false},
		{"path traversal", "sha256:../../etc/passwd", false},
		{"path traversal of right length", digest.Digest("sha256:../../" + hexA[6:]), false},
		{"slash", digest.Digest("sha256:/" + hexA[1:]), false},
		{"uppercase hex", digest.Digest("sha256:" + strings.ToUpper(hexA)), false},
		{"uppercase algorithm", digest.Digest("SHA256:" + hexA), false},
		{"short", digest.Digest("sha256:" + hexA[:63]), false},
		{"long", digest.Digest("sha256:" + hexA + "0"), false},
		{"md5", "md5:d41d8cd98f00b204e9800998ecf8427e", false},
		{"sha512", digest.Digest("sha512:" + hexA + hexA), false},
		{"no algorithm", digest.Digest(hexA), false},
		{"not hex", digest.Digest("sha256:" + strings.Repeat("g", 64)), false},
		{"trailing newline", digest.Digest("sha256:" + hexA + "\n"), false},
		{"leading space", digest.Digest(" sha256:" + hexA), false},
		{"NUL", digest.Digest("sha256:" + hexA[:63] + "\x00"), false},
		{"huge", digest.Digest("sha256:" + strings.Repeat("a", 1<<20)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateDigest(tt.d)
			if tt.ok != (err == nil) {
				t.Fatalf("ValidateDigest(%.80q) = %v, want ok=%v", tt.d, err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidDigest) {
					t.Errorf("error %v does not match ErrInvalidDigest", err)
				}
				if len(err.Error()) > 200 {
					t.Errorf("error message of %d bytes", len(err.Error()))
				}
			}
		})
	}
}

// Every entry point refuses a bad digest before it touches the file system:
// the repository directory stays empty (not even .tmp/ appears).
func TestInvalidDigestTouchesNothing(t *testing.T) {
	bad := []digest.Digest{
		"", "sha256:../../etc/passwd", digest.Digest("sha256:" + strings.ToUpper(hexA)),
		digest.Digest("sha256:" + hexA[:10]), "md5:d41d8cd98f00b204e9800998ecf8427e",
		digest.Digest("sha256:../" + hexA[3:]),
	}
	ctx := context.Background()
	for _, d := range bad {
		dir := t.TempDir()
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		ops := map[string]func() error{
			"Path":        func() error { _, err := s.Path(d); return err },
			"Has":         func() error { _, err := s.Has(d); return err },
			"Stat":        func() error { _, err := s.Stat(d); return err },
			"Open":        func() error { _, err := s.Open(d); return err },
			"Verify":      func() error { return s.Verify(ctx, d, nil) },
			"Remove":      func() error { return s.Remove(d) },
			"OpenPartial": func() error { _, err := s.OpenPartial(ctx, d, 10); return err },
		}
		if d != "" { // an empty expected digest means "any" for Ingest
			ops["Ingest"] = func() error {
				_, err := s.Ingest(ctx, strings.NewReader("x"), d, -1, nil)
				return err
			}
		}
		for name, op := range ops {
			if err := op(); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("%s(%q) = %v, want ErrInvalidDigest", name, d, err)
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Errorf("digest %q: repository gained %v", d, entries)
		}
	}

	// CommitFile: the temp file is consumed, nothing is stored.
	s := newStore(t)
	tf, err := s.CreateTemp("x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitFile(ctx, tf, "sha256:../../etc/passwd", nil); !errors.Is(err, ErrInvalidDigest) {
		t.Errorf("CommitFile = %v, want ErrInvalidDigest", err)
	}
	assertTmpEmpty(t, s)
	assertNoBlobs(t, s)
}

func TestOpenAndInit(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(missing) = %v, want ErrNotFound", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Open(file) = %v, want 'not a directory'", err)
	}
	if _, err := Init(filepath.Join(file, "sub")); err == nil {
		t.Errorf("Init under a file succeeded")
	}

	dir := filepath.Join(t.TempDir(), "a", "repo")
	s, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"blobs/sha256", ".tmp"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
			t.Errorf("Init did not create %s: %v", sub, err)
		}
	}
	if _, err := Init(dir); err != nil {
		t.Errorf("Init of an existing repository: %v", err)
	}

	// A layout entry that is a file is an error, not something to build on.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "blobs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(bad); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Init with a file named blobs = %v", err)
	}

	// Paths are absolute even for a relative repository name, so they work
	// as backing file names from anywhere.
	t.Chdir(filepath.Dir(dir))
	rel, err := Open("repo")
	if err != nil {
		t.Fatal(err)
	}
	p, err := rel.Path(digest.Digest("sha256:" + hexA))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "blobs", "sha256", hexA); p != want || rel.Dir() != dir || s.Dir() != dir {
		t.Errorf("Path = %s, Dir = %s; want %s, %s", p, rel.Dir(), want, dir)
	}

	// Open creates nothing; the first write lays out the repository.
	empty := t.TempDir()
	es, err := Open(empty)
	if err != nil {
		t.Fatal(err)
	}
	if blobs, junk, err := es.List(context.Background()); err != nil || blobs != nil || junk != nil {
		t.Errorf("List of an empty directory = %v, %v, %v", blobs, junk, err)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("Open created %v", entries)
	}
	assertBlob(t, es, mustIngest(t, es, []byte("first")).Digest, []byte("first"))

	// .tmp/ removed behind the store's back (an rsync --delete from a copy
	// without it) is made again.
	if err := os.Remove(filepath.Join(empty, ".tmp")); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, es, mustIngest(t, es, []byte("second")).Digest, []byte("second"))
	if err := os.Remove(filepath.Join(empty, ".tmp")); err != nil {
		t.Fatal(err)
	}
	p2, err := es.OpenPartial(context.Background(), digest.FromString("third"), 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Commit(context.Background(), strings.NewReader("third"), nil); err != nil {
		t.Fatal(err)
	}
}

func TestIngestReadBack(t *testing.T) {
	sizes := []int{0, 1, 4096, bufSize - 1, bufSize, bufSize + 1, 3*bufSize + 17}
	readers := map[string]func([]byte) io.Reader{
		"plain":   func(b []byte) io.Reader { return bytes.NewReader(b) },
		"half":    func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
		"dataerr": func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) },
	}
	ctx := context.Background()
	s := newStore(t)
	for _, size := range sizes {
		for rname, mk := range readers {
			for _, known := range []bool{true, false} {
				data := content(uint64(size)*7+uint64(len(rname)), size)
				if known {
					data = append(data, 1) // a different blob from the unknown case
				}
				want := digest.FromBytes(data)
				expected, expectedSize := digest.Digest(""), int64(-1)
				if known {
					expected, expectedSize = want, int64(len(data))
				}
				var seen []int64
				info, err := s.Ingest(ctx, mk(data), expected, expectedSize, func(n int64) { seen = append(seen, n) })
				if err != nil {
					t.Fatalf("size %d %s known=%v: %v", size, rname, known, err)
				}
				if info.Digest != want || info.Size != int64(len(data)) || info.Mode != blobPerm {
					t.Errorf("size %d %s: info %+v, want %s", size, rname, info, want)
				}
				for i := 1; i < len(seen); i++ {
					if seen[i] < seen[i-1] {
						t.Errorf("progress went back: %v", seen)
					}
				}
				if len(data) > 0 && (len(seen) == 0 || seen[len(seen)-1] != int64(len(data))) {
					t.Errorf("size %d %s: progress %v does not end at %d", size, rname, seen, len(data))
				}
				assertBlob(t, s, want, data)
				st, err := s.Stat(want)
				if err != nil || !reflect.DeepEqual(st, info) {
					t.Errorf("Stat = %+v, %v; want %+v", st, err, info)
				}
				if has, err := s.Has(want); !has || err != nil {
					t.Errorf("Has = %v, %v", has, err)
				}
			}
		}
	}
	assertTmpEmpty(t, s)
}

// errReader fails the test if anything reads it.
type errReader struct{ t *testing.T }

func (r errReader) Read([]byte) (int, error) {
	r.t.Error("reader was read although the blob exists")
	return 0, io.ErrUnexpectedEOF
}

func TestIngestAlreadyExists(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := content(1, bufSize+5)
	first := mustIngest(t, s, data)
	p, _ := s.Path(first.Digest)
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}

	second, err := s.Ingest(ctx, bytes.NewReader(data), "", -1, nil)
	if err != nil || second.Digest != first.Digest || second.Size != first.Size {
		t.Fatalf("second ingest = %+v, %v; want %+v", second, err, first)
	}
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Errorf("an existing blob was replaced; it may be in use")
	}

	// Knowing the digest, Ingest does not even read the stream.
	var last int64
	third, err := s.Ingest(ctx, errReader{t}, first.Digest, first.Size, func(n int64) { last = n })
	if err != nil || third.Digest != first.Digest {
		t.Errorf("ingest of a known blob = %+v, %v", third, err)
	}
	if last != first.Size {
		t.Errorf("progress %d, want %d", last, first.Size)
	}
	// ... but a caller who believes in another size is told.
	_, err = s.Ingest(ctx, errReader{t}, first.Digest, first.Size+1, nil)
	var sm *SizeMismatchError
	if !errors.As(err, &sm) || sm.Actual != first.Size {
		t.Errorf("ingest of a known blob with a wrong size = %v", err)
	}
	assertTmpEmpty(t, s)
	assertBlob(t, s, first.Digest, data)
}

// countingReader counts what is read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// endless is an infinite stream of 'x'.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

var errNetwork = errors.New("connection reset")

// failAfter yields n bytes of r, then errNetwork.
func failAfter(r io.Reader, n int64) io.Reader {
	return io.MultiReader(io.LimitReader(r, n), iotest.ErrReader(errNetwork))
}

func TestIngestFailuresLeaveNothing(t *testing.T) {
	data := content(2, 2*bufSize+3)
	other := digest.FromString("other")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name         string
		ctx          context.Context
		r            io.Reader
		expected     digest.Digest
		expectedSize int64
		is           error
		check        func(t *testing.T, err error)
	}{
		{
			name: "digest mismatch", r: bytes.NewReader(data), expected: other, expectedSize: -1,
			is: ErrDigestMismatch,
			check: func(t *testing.T, err error) {
				var dm *DigestMismatchError
				if !errors.As(err, &dm) || dm.Expected != other || dm.Actual != digest.FromBytes(data) {
					t.Errorf("mismatch details: %#v", dm)
				}
				if !strings.Contains(err.Error(), "cas: ingest "+string(other)+": digest mismatch: expected") {
					t.Errorf("message %q", err)
				}
			},
		},
		{
			name: "digest mismatch with right size", r: bytes.NewReader(data), expected: other,
			expectedSize: int64(len(data)), is: ErrDigestMismatch,
		},
		{
			name: "shorter than expected", r: bytes.NewReader(data), expectedSize: int64(len(data)) + 1,
			is: ErrSizeMismatch,
			check: func(t *testing.T, err error) {
				var sm *SizeMismatchError
				if !errors.As(err, &sm) || sm.Actual != int64(len(data)) || sm.Longer {
					t.Errorf("size mismatch details: %#v", sm)
				}
			},
		},
		{
			name: "longer than expected", r: bytes.NewReader(data), expectedSize: int64(len(data)) - 1,
			is: ErrSizeMismatch,
			check: func(t *testing.T, err error) {
				var sm *SizeMismatchError
				if !errors.As(err, &sm) || !sm.Longer {
					t.Errorf("size mismatch details: %#v", sm)
				}
			},
		},
		{
			name: "empty stream, one byte expected", r: strings.NewReader(""), expectedSize: 1,
			is: ErrSizeMismatch,
		},
		{
			name: "reader error", r: failAfter(bytes.NewReader(data), bufSize+7), expectedSize: -1,
			is: errNetwork,
		},
		{
			name: "reader error at once", r: iotest.ErrReader(errNetwork), expected: digest.FromBytes(data),
			expectedSize: -1, is: errNetwork,
		},
		{
			name: "cancelled", ctx: cancelled, r: bytes.NewReader(data), expectedSize: -1,
			is: context.Canceled,
		},
		{
			name: "invalid expected size", r: bytes.NewReader(data), expectedSize: -2,
			check: func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "invalid expected size") {
					t.Errorf("err = %v", err)
				}
			},
		},
		{
			name: "nil reader", r: nil, expectedSize: -1,
			check: func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "nil reader") {
					t.Errorf("err = %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			info, err := s.Ingest(ctx, tt.r, tt.expected, tt.expectedSize, nil)
			if err == nil {
				t.Fatalf("Ingest succeeded: %+v", info)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v", err, tt.is)
			}
			if !strings.HasPrefix(err.Error(), "cas: ingest") {
				t.Errorf("message %q lacks context", err)
			}
			if tt.check != nil {
				tt.check(t, err)
			}
			assertNoBlobs(t, s)
			assertTmpEmpty(t, s)
		})
	}
}

// An endless (or lying) source costs at most one buffer past the expected
// size, not the disk.
func TestIngestStopsReadingPastExpectedSize(t *testing.T) {
	s := newStore(t)
	cr := &countingReader{r: endless{}}
	_, err := s.Ingest(context.Background(), cr, "", 10, nil)
	if !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("err = %v", err)
	}
	if cr.n > 10+bufSize {
		t.Errorf("read %d bytes of a stream expected to hold 10", cr.n)
	}
	assertNoBlobs(t, s)
	assertTmpEmpty(t, s)
}

func TestCommitFile(t *testing.T) {
	ctx := context.Background()
	data := content(3, 3*bufSize+100)

	// writeRandomly fills tf the way a qcow2 writer would: out of order,
	// leaving the file offset somewhere in the middle.
	writeRandomly := func(t *testing.T, tf *TempFile, data []byte) {
		t.Helper()
		mid := len(data) / 2
		if _, err := tf.WriteAt(data[mid:], int64(mid)); err != nil {
			t.Fatal(err)
		}
		if _, err := tf.WriteAt(data[:mid], 0); err != nil {
			t.Fatal(err)
		}
		if _, err := tf.Seek(int64(mid/3), io.SeekStart); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("expected digest", func(t *testing.T) {
		s := newStore(t)
		tf, err := s.CreateTemp("qcow2-*")
		if err != nil {
			t.Fatal(err)
		}
		defer tf.Discard()
		if !strings.HasPrefix(filepath.Base(tf.Name()), "tmp-qcow2-") || filepath.Dir(tf.Name()) != filepath.Join(s.Dir(), ".tmp") {
			t.Errorf("temp file %s", tf.Name())
		}
		writeRandomly(t, tf, data)
		var last int64
		info, err := s.CommitFile(ctx, tf, digest.FromBytes(data), func(n int64) { last = n })
		if err != nil {
			t.Fatal(err)
		}
		if info.Digest != digest.FromBytes(data) || info.Size != int64(len(data)) || last != info.Size {
			t.Errorf("info %+v, progress %d", info, last)
		}
		assertBlob(t, s, info.Digest, data)
		assertTmpEmpty(t, s)
		if err := tf.Discard(); err != nil {
			t.Errorf("Discard after commit: %v", err)
		}
		if _, err := s.CommitFile(ctx, tf, "", nil); !errors.Is(err, ErrClosed) {
			t.Errorf("second CommitFile = %v, want ErrClosed", err)
		}
		assertBlob(t, s, info.Digest, data)
	})

	t.Run("no expected digest", func(t *testing.T) {
		s := newStore(t)
		tf, err := s.CreateTemp("x")
		if err != nil {
			t.Fatal(err)
		}
		writeRandomly(t, tf, data)
		info, err := s.CommitFile(ctx, tf, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		assertBlob(t, s, info.Digest, data)
		assertTmpEmpty(t, s)
	})

	t.Run("empty file", func(t *testing.T) {
		s := newStore(t)
		tf, err := s.CreateTemp("x")
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.CommitFile(ctx, tf, digest.FromBytes(nil), nil)
		if err != nil || info.Size != 0 {
			t.Fatalf("%+v, %v", info, err)
		}
		assertBlob(t, s, info.Digest, nil)
	})

	t.Run("mismatch stores nothing", func(t *testing.T) {
		s := newStore(t)
		tf, err := s.CreateTemp("x")
		if err != nil {
			t.Fatal(err)
		}
		writeRandomly(t, tf, data)
		_, err = s.CommitFile(ctx, tf, digest.FromString("else"), nil)
		var dm *DigestMismatchError
		if !errors.As(err, &dm) || dm.Actual != digest.FromBytes(data) || !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("err = %v", err)
		}
		assertNoBlobs(t, s)
		assertTmpEmpty(t, s)
		if err := tf.Discard(); err != nil {
			t.Errorf("Discard after a failed commit: %v", err)
		}
	})

	t.Run("already exists", func(t *testing.T) {
		s := newStore(t)
		first := mustIngest(t, s, data)
		tf, err := s.CreateTemp("x")
		if err != nil {
			t.Fatal(err)
		}
		writeRandomly(t, tf, data)
		info, err := s.CommitFile(ctx, tf, first.Digest, nil)
		if err != nil || info.Digest != first.Digest || info.Size != first.Size {
			t.Fatalf("%+v, %v", info, err)
		}
		assertTmpEmpty(t, s)
		assertBlob(t, s, first.Digest, data)
	})

	t.Run("cancelled", func(t *testing.T) {
		s := newStore(t)
		tf, err := s.CreateTemp("x")
		if err != nil {
			t.Fatal(err)
		}
		writeRandomly(t, tf, data)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.CommitFile(cctx, tf, "", nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		assertNoBlobs(t, s)
		assertTmpEmpty(t, s)
	})

	t.Run("discard", func(t *testing.T) {
		s := newStore(t)
		tf, err := s.CreateTemp("x")
		if err != nil {
			t.Fatal(err)
		}
		writeRandomly(t, tf, data)
		if err := tf.Discard(); err != nil {
			t.Fatal(err)
		}
		if err := tf.Discard(); err != nil {
			t.Errorf("second Discard: %v", err)
		}
		if _, err := s.CommitFile(ctx, tf, "", nil); !errors.Is(err, ErrClosed) {
			t.Errorf("CommitFile after Discard = %v", err)
		}
		assertTmpEmpty(t, s)
		assertNoBlobs(t, s)
		var nilTemp *TempFile
		if err := nilTemp.Discard(); err != nil {
			t.Errorf("nil Discard: %v", err)
		}
	})

	t.Run("bad arguments", func(t *testing.T) {
		s := newStore(t)
		for _, pattern := range []string{"a/b", "../x", "x\x00"} {
			if tf, err := s.CreateTemp(pattern); err == nil {
				_ = tf.Discard()
				t.Errorf("CreateTemp(%q) succeeded", pattern)
			}
		}
		if _, err := s.CommitFile(ctx, nil, "", nil); err == nil {
			t.Errorf("CommitFile(nil) succeeded")
		}
		other := newStore(t)
		tf, err := other.CreateTemp("x")
		if err != nil {
			t.Fatal(err)
		}
		defer tf.Discard()
		if _, err := s.CommitFile(ctx, tf, "", nil); err == nil {
			t.Errorf("CommitFile of another store's temp file succeeded")
		}
		assertTmpEmpty(t, s)
	})
}

func TestListAndJunk(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var want []digest.Digest
	for i := range 3 {
		want = append(want, mustIngest(t, s, content(uint64(10+i), 100*i)).Digest)
	}
	blobDir := filepath.Join(s.Dir(), "blobs", "sha256")
	mustWrite := func(p string) {
		if err := os.WriteFile(p, []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(filepath.Join(blobDir, "notes.txt"))
	mustWrite(filepath.Join(blobDir, strings.ToUpper(hexA)))
	mustWrite(filepath.Join(s.Dir(), "blobs", "stray"))
	if err := os.Mkdir(filepath.Join(blobDir, hexA), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.Dir(), "blobs", "sha512"), 0o755); err != nil {
		t.Fatal(err)
	}
	linkName := strings.Replace(hexA, "0", "f", 1)
	if err := os.Symlink(filepath.Join(blobDir, string(want[0])[7:]), filepath.Join(blobDir, linkName)); err != nil {
		t.Fatal(err)
	}

	blobs, junk, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []digest.Digest
	for _, b := range blobs {
		got = append(got, b.Digest)
		if b.Mode != blobPerm {
			t.Errorf("blob %s mode %v", b.Digest, b.Mode)
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
	wantJunk := map[string]string{
		"blobs/stray":                           "unexpected entry",
		"blobs/sha512":                          "unexpected entry",
		"blobs/sha256/notes.txt":                "not a lowercase sha256 hex name",
		"blobs/sha256/" + strings.ToUpper(hexA): "not a lowercase sha256 hex name",
		"blobs/sha256/" + hexA:                  "not a regular file",
		"blobs/sha256/" + linkName:              "not a regular file",
	}
	if len(junk) != len(wantJunk) {
		t.Errorf("junk = %v", junk)
	}
	for _, j := range junk {
		if wantJunk[j.Path] != j.Reason {
			t.Errorf("junk %+v, want reason %q", j, wantJunk[j.Path])
		}
	}
	// Digests, without a stat of each blob, says the same.
	digests, djunk, err := s.Digests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(digests, want) || !slices.Equal(djunk, junk) {
		t.Errorf("Digests = %v, %v; List = %v, %v", digests, djunk, got, junk)
	}

	// Junk under a blob name is not a blob to any entry point.
	for _, d := range []digest.Digest{digest.Digest("sha256:" + hexA), digest.Digest("sha256:" + linkName)} {
		if has, err := s.Has(d); has || err != nil {
			t.Errorf("Has(%s) = %v, %v", d, has, err)
		}
		if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%s) = %v", d, err)
		}
		if f, err := s.Open(d); !errors.Is(err, ErrNotFound) {
			if f != nil {
				f.Close()
			}
			t.Errorf("Open(%s) = %v", d, err)
		}
		if err := s.Remove(d); !errors.Is(err, ErrNotFound) {
			t.Errorf("Remove(%s) = %v", d, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(blobDir, hexA)); err != nil {
		t.Errorf("junk was removed: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.List(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("List with cancelled ctx = %v", err)
	}
}

// A FIFO planted under a blob name must not hang a reader.
func TestOpenFIFOBlob(t *testing.T) {
	s := newStore(t)
	d := digest.Digest("sha256:" + hexA)
	p, _ := s.Path(d)
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(FIFO) = %v", err)
	}
	if err := s.Verify(context.Background(), d, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify(FIFO) = %v", err)
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := content(4, bufSize*2+1)
	info := mustIngest(t, s, data)
	var last int64
	if err := s.Verify(ctx, info.Digest, func(n int64) { last = n }); err != nil || last != info.Size {
		t.Fatalf("Verify = %v, progress %d", err, last)
	}

	p, _ := s.Path(info.Digest)
	testkit.FlipByte(t, p, bufSize)
	err := s.Verify(ctx, info.Digest, nil)
	var dm *DigestMismatchError
	if !errors.As(err, &dm) || dm.Expected != info.Digest || dm.Actual == info.Digest {
		t.Errorf("Verify of a corrupt blob = %v", err)
	}
	if !strings.HasPrefix(err.Error(), "cas: verify "+string(info.Digest)+": digest mismatch") {
		t.Errorf("message %q", err)
	}

	missing := digest.FromString("missing")
	if err := s.Verify(ctx, missing, nil); !errors.Is(err, ErrNotFound) || err.Error() != "cas: verify "+string(missing)+": not found" {
		t.Errorf("Verify(missing) = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Verify(cctx, info.Digest, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with cancelled ctx = %v", err)
	}
}

func TestRemove(t *testing.T) {
	s := newStore(t)
	info := mustIngest(t, s, []byte("to be removed"))
	if err := s.Remove(info.Digest); err != nil {
		t.Fatal(err)
	}
	if has, err := s.Has(info.Digest); has || err != nil {
		t.Errorf("Has after Remove = %v, %v", has, err)
	}
	err := s.Remove(info.Digest)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v", err)
	}
	if want := "cas: remove " + string(info.Digest) + ": not found"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if _, err := s.Stat(info.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after Remove = %v", err)
	}
	if _, err := s.Open(info.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open after Remove = %v", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	s := newStore(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(s.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if err := s.WriteFileAtomic("index.yaml", []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFileAtomic("index.yaml", []byte("version: 1\nimages: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := read("index.yaml"); got != "version: 1\nimages: {}\n" {
		t.Errorf("content %q", got)
	}
	fi, err := os.Stat(filepath.Join(s.Dir(), "index.yaml"))
	if err != nil || fi.Mode() != 0o600 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	old := syscall.Umask(0o077)
	err = s.WriteFileAtomic("index.yaml.sig", []byte("sig"), 0o644)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(s.Dir(), "index.yaml.sig")); err != nil || fi.Mode() != 0o644 {
		t.Errorf("mode under umask 077: %v, %v", fi.Mode(), err)
	}
	if err := os.Mkdir(filepath.Join(s.Dir(), "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFileAtomic("sub/file", nil, 0o644); err != nil {
		t.Errorf("write into a subdirectory: %v", err)
	}
	if err := s.WriteFileAtomic("missing/file", []byte("x"), 0o644); err == nil {
		t.Errorf("write into a missing directory succeeded")
	}
	assertTmpEmpty(t, s)

	for _, name := range []string{
		"", ".", "..", "../index.yaml", "/etc/passwd", "a/../index.yaml", "a//b", "index.yaml/",
		".tmp/x", "blobs/sha256/" + hexA, ".lock", "blobs", "x\x00y",
	} {
		err := s.WriteFileAtomic(name, []byte("evil"), 0o644)
		if err == nil {
			t.Errorf("WriteFileAtomic(%q) succeeded", name)
		} else if !strings.HasPrefix(err.Error(), "cas: write") {
			t.Errorf("message %q", err)
		}
	}
	if got := read("index.yaml"); got != "version: 1\nimages: {}\n" {
		t.Errorf("content changed to %q", got)
	}
	assertTmpEmpty(t, s)
	assertNoBlobs(t, s)
}

// VerifyChunkList gives the chunk list of a blob it verified, in the same
// pass, and nothing for a blob whose bytes do not match its name.
func TestVerifyChunkList(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := content(5, 3*bufSize+12345)
	info := mustIngest(t, s, data)
	want, err := ChunkList(bytes.NewReader(data), MinChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.VerifyChunkList(ctx, info.Digest, MinChunkSize, nil)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("VerifyChunkList = %d bytes, %v; want the %d-byte list", len(got), err, len(want))
	}
	if _, err := s.VerifyChunkList(ctx, info.Digest, 3000, nil); err == nil {
		t.Error("a chunk size that is no power of two was accepted")
	}
	p, _ := s.Path(info.Digest)
	testkit.FlipByte(t, p, 2*bufSize)
	var dm *DigestMismatchError
	if got, err := s.VerifyChunkList(ctx, info.Digest, MinChunkSize, nil); !errors.As(err, &dm) || got != nil {
		t.Errorf("VerifyChunkList of a corrupt blob = %d bytes, %v", len(got), err)
	}
}
