package cas

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func partialFile(s *Store, d digest.Digest) string {
	return filepath.Join(s.Dir(), ".tmp", "partial-"+string(d)[7:])
}

func partialSize(t *testing.T, s *Store, d digest.Digest) int64 {
	t.Helper()
	fi, err := os.Stat(partialFile(s, d))
	if errors.Is(err, os.ErrNotExist) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestPartial(t *testing.T) {
	ctx := context.Background()
	data := content(20, 3*bufSize+5)
	d := digest.FromBytes(data)
	size := int64(len(data))
	half := int64(3*bufSize/2 + 11)

	open := func(t *testing.T, s *Store, size int64) *Partial {
		t.Helper()
		p, err := s.OpenPartial(ctx, d, size)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	commit := func(t *testing.T, p *Partial, r io.Reader) {
		t.Helper()
		var last int64
		info, err := p.Commit(ctx, r, func(n int64) { last = n })
		if err != nil {
			t.Fatal(err)
		}
		if info.Digest != d || info.Size != size || (r != nil && last != size) {
			t.Errorf("info %+v, last progress %d", info, last)
		}
	}
	plant := func(t *testing.T, s *Store, b []byte) {
		t.Helper()
		if err := os.WriteFile(partialFile(s, d), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("resume after a network error", func(t *testing.T) {
		s := newStore(t)
		p := open(t, s, size)
		if p.Offset() != 0 || p.Digest() != d || p.Size() != size {
			t.Fatalf("fresh partial: offset %d digest %s size %d", p.Offset(), p.Digest(), p.Size())
		}
		_, err := p.Commit(ctx, failAfter(bytes.NewReader(data), half), nil)
		if !errors.Is(err, errNetwork) {
			t.Fatalf("err = %v", err)
		}
		if got := partialSize(t, s, d); got != half {
			t.Fatalf("partial kept %d bytes, want %d", got, half)
		}
		p2 := open(t, s, size)
		if p2.Offset() != half {
			t.Fatalf("Offset = %d, want %d", p2.Offset(), half)
		}
		commit(t, p2, bytes.NewReader(data[half:]))
		assertBlob(t, s, d, data)
		assertTmpEmpty(t, s)
	})

	t.Run("complete partial needs no more data", func(t *testing.T) {
		s := newStore(t)
		plant(t, s, data)
		p := open(t, s, size)
		if p.Offset() != size {
			t.Fatalf("Offset = %d", p.Offset())
		}
		commit(t, p, nil)
		assertBlob(t, s, d, data)
		assertTmpEmpty(t, s)
	})

	t.Run("unknown size", func(t *testing.T) {
		s := newStore(t)
		plant(t, s, data[:half])
		p := open(t, s, -1)
		if p.Offset() != half {
			t.Fatalf("Offset = %d", p.Offset())
		}
		commit(t, p, bytes.NewReader(data[half:]))
		assertBlob(t, s, d, data)
	})

	t.Run("partial longer than expected is discarded", func(t *testing.T) {
		s := newStore(t)
		plant(t, s, append(bytes.Clone(data), "trailing"...))
		p := open(t, s, size)
		if p.Offset() != 0 {
			t.Fatalf("Offset = %d, want 0", p.Offset())
		}
		commit(t, p, bytes.NewReader(data))
		assertBlob(t, s, d, data)
		assertTmpEmpty(t, s)
	})

	t.Run("stream longer than expected removes the partial", func(t *testing.T) {
		s := newStore(t)
		p := open(t, s, size)
		_, err := p.Commit(ctx, io.MultiReader(bytes.NewReader(data), endless{}), nil)
		var sm *SizeMismatchError
		if !errors.As(err, &sm) || !sm.Longer {
			t.Fatalf("err = %v", err)
		}
		assertNoBlobs(t, s)
		assertTmpEmpty(t, s)
	})

	t.Run("digest mismatch removes the partial", func(t *testing.T) {
		s := newStore(t)
		corrupt := bytes.Clone(data[:half])
		corrupt[7] ^= 0xff // a bad prefix from an earlier attempt
		plant(t, s, corrupt)
		p := open(t, s, size)
		_, err := p.Commit(ctx, bytes.NewReader(data[half:]), nil)
		var dm *DigestMismatchError
		if !errors.As(err, &dm) || dm.Expected != d {
			t.Fatalf("err = %v", err)
		}
		assertNoBlobs(t, s)
		assertTmpEmpty(t, s)
	})

	t.Run("short stream keeps the partial", func(t *testing.T) {
		s := newStore(t)
		p := open(t, s, size)
		_, err := p.Commit(ctx, bytes.NewReader(data[:half]), nil)
		var sm *SizeMismatchError
		if !errors.As(err, &sm) || sm.Actual != half {
			t.Fatalf("err = %v", err)
		}
		if got := partialSize(t, s, d); got != half {
			t.Errorf("partial has %d bytes, want %d", got, half)
		}
		assertNoBlobs(t, s)
	})

	t.Run("cancel keeps the partial", func(t *testing.T) {
		s := newStore(t)
		plant(t, s, data[:half])
		p := open(t, s, size)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := p.Commit(cctx, bytes.NewReader(data[half:]), nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if got := partialSize(t, s, d); got != half {
			t.Errorf("partial has %d bytes, want %d", got, half)
		}
	})

	t.Run("close keeps, discard removes", func(t *testing.T) {
		s := newStore(t)
		p := open(t, s, size)
		if _, err := p.Commit(ctx, failAfter(bytes.NewReader(data), 10), nil); !errors.Is(err, errNetwork) {
			t.Fatal(err)
		}
		p = open(t, s, size)
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := p.Commit(ctx, nil, nil); !errors.Is(err, ErrClosed) {
			t.Errorf("Commit after Close = %v", err)
		}
		if got := partialSize(t, s, d); got != 10 {
			t.Fatalf("partial has %d bytes after Close", got)
		}
		p = open(t, s, size)
		if err := p.Discard(); err != nil {
			t.Fatal(err)
		}
		if err := p.Discard(); err != nil {
			t.Errorf("second Discard: %v", err)
		}
		assertTmpEmpty(t, s)
	})

	t.Run("blob already stored", func(t *testing.T) {
		s := newStore(t)
		mustIngest(t, s, data)
		if _, err := s.OpenPartial(ctx, d, size); !errors.Is(err, ErrExists) {
			t.Errorf("err = %v, want ErrExists", err)
		}
		assertTmpEmpty(t, s)
	})

	t.Run("invalid size", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.OpenPartial(ctx, d, -2); err == nil {
			t.Errorf("OpenPartial with size -2 succeeded")
		}
	})

	t.Run("partial that is a directory", func(t *testing.T) {
		s := newStore(t)
		if err := os.Mkdir(partialFile(s, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := s.OpenPartial(ctx, d, size); err == nil {
			t.Errorf("OpenPartial over a directory succeeded")
		}
	})
}

// A second puller of the same blob waits for the first; when the first
// finishes, the second learns that there is nothing left to do.
func TestPartialConcurrentPullers(t *testing.T) {
	ctx := context.Background()
	data := content(21, bufSize+3)
	d := digest.FromBytes(data)
	s := newStore(t)

	p1, err := s.OpenPartial(ctx, d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = s.OpenPartial(short, d, int64(len(data)))
	if !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second puller = %v, want ErrBusy and DeadlineExceeded", err)
	}

	type result struct {
		p   *Partial
		err error
	}
	waiter := make(chan result, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		p, err := s.OpenPartial(wctx, d, int64(len(data)))
		waiter <- result{p, err}
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := p1.Commit(ctx, bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	r := <-waiter
	if !errors.Is(r.err, ErrExists) {
		t.Errorf("waiting puller = %v, want ErrExists", r.err)
		if r.p != nil {
			_ = r.p.Close()
		}
	}
	assertBlob(t, s, d, data)
	assertTmpEmpty(t, s)

	// A waiter whose holder gives up (Close) takes over the download.
	data2 := content(22, 1000)
	d2 := digest.FromBytes(data2)
	p1, err = s.OpenPartial(ctx, d2, -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p1.Commit(ctx, failAfter(bytes.NewReader(data2), 400), nil); !errors.Is(err, errNetwork) {
		t.Fatal(err)
	}
	p2, err := s.OpenPartial(ctx, d2, -1)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Offset() != 400 {
		t.Errorf("Offset = %d", p2.Offset())
	}
	if _, err := p2.Commit(ctx, bytes.NewReader(data2[400:]), nil); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, d2, data2)
}

// The partial of a puller that was killed mid-download is resumed from the
// offset it reached, and the result is verified.
func TestPartialResumeAfterCrash(t *testing.T) {
	s := newStore(t)
	const seed, size, half = 23, 5*bufSize + 99, 5 * bufSize / 2
	data := content(seed, size)
	d := digest.FromBytes(data)
	h := startHelper(t, "crash-partial", "CAS_REPO="+s.Dir(), "CAS_SEED="+strconv.Itoa(seed),
		"CAS_SIZE="+strconv.Itoa(size), "CAS_HALF="+strconv.Itoa(half))
	h.kill() // SIGKILL: no deferred cleanup runs, the flock dies with it

	p, err := s.OpenPartial(context.Background(), d, size)
	if err != nil {
		t.Fatal(err)
	}
	off := p.Offset()
	if off <= 0 || off > half {
		t.Fatalf("Offset after crash = %d, want in (0, %d]", off, half)
	}
	if _, err := p.Commit(context.Background(), bytes.NewReader(data[off:]), nil); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, d, data)
	assertTmpEmpty(t, s)
}

func TestPartialBusyAcrossProcesses(t *testing.T) {
	s := newStore(t)
	data := content(24, 5000)
	d := digest.FromBytes(data)
	h := startHelper(t, "hold-partial", "CAS_REPO="+s.Dir(), "CAS_DIGEST="+string(d), "CAS_SIZE=5000")

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err := s.OpenPartial(ctx, d, 5000)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "held by another puller") {
		t.Fatalf("err = %v, want ErrBusy", err)
	}
	h.kill()
	p, err := s.OpenPartial(context.Background(), d, 5000)
	if err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	if _, err := p.Commit(context.Background(), bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, d, data)
}

type panickingHash struct{}

func (panickingHash) Write([]byte) (int, error) { panic("a bug in a hash") }

// A panic in the goroutine that hashes is an error of the copy, not a
// crash, and the copy stops.
func TestCopyHashedHasherPanics(t *testing.T) {
	data := content(24, (pipelineDepth+3)*bufSize)
	n, err := copyHashed(context.Background(), io.Discard, bytes.NewReader(data), panickingHash{}, 0, -1, nil)
	if !errors.Is(err, errInternal) || !strings.Contains(err.Error(), "a bug in a hash") {
		t.Fatalf("got %v", err)
	}
	// The reader may be a pipeline's depth ahead of the hashers.
	if n > (pipelineDepth+1)*bufSize {
		t.Errorf("copied %d bytes after the hasher failed", n)
	}
}

// failingHash fails after some bytes, as a chunk list that does not match.
type failingHash struct{ left int }

func (f *failingHash) Write(p []byte) (int, error) {
	if f.left -= len(p); f.left < 0 {
		return 0, errors.New("chunk 3 does not match")
	}
	return len(p), nil
}

func TestCopyHashedHashError(t *testing.T) {
	data := content(25, (pipelineDepth+5)*bufSize)
	var w bytes.Buffer
	n, err := copyHashed(context.Background(), &w, bytes.NewReader(data), &failingHash{left: bufSize}, 0, -1, nil)
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("got %v", err)
	}
	if n > (pipelineDepth+2)*bufSize || int64(w.Len()) != n {
		t.Errorf("copied %d bytes (wrote %d) after the hash failed at %d", n, w.Len(), bufSize)
	}
}
