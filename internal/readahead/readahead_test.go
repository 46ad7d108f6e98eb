package readahead

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReader(t *testing.T) {
	data := make([]byte, 5*Chunk+123)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(data)
	for _, src := range []io.Reader{
		bytes.NewReader(data),
		iotest.OneByteReader(bytes.NewReader(data[:Chunk+7])),
		iotest.HalfReader(bytes.NewReader(data)),
	} {
		ra := New(src)
		got, err := io.ReadAll(ra)
		ra.Close()
		if err != nil || !bytes.Equal(got, data[:len(got)]) || (len(got) != len(data) && len(got) != Chunk+7) {
			t.Fatalf("read %d bytes, err %v", len(got), err)
		}
	}
	errBoom := errors.New("boom")
	ra := New(io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(errBoom)))
	defer ra.Close()
	got, err := io.ReadAll(ra)
	if !errors.Is(err, errBoom) || !bytes.Equal(got, data[:100]) {
		t.Fatalf("got %d bytes, %v: the bytes before an error, then the error", len(got), err)
	}
}

type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("a bug in a reader") }

// TestPanic: a panic in the read-ahead goroutine ends the stream with an
// error, not the process.
func TestPanic(t *testing.T) {
	ra := New(panicReader{})
	defer ra.Close()
	_, err := io.ReadAll(ra)
	if !errors.Is(err, ErrInternal) || !strings.Contains(err.Error(), "a bug in a reader") {
		t.Fatalf("got %v", err)
	}
}

// TestCloseWhileWaiting: Close ends a Read that waits for data.
func TestCloseWhileWaiting(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	ra := New(pr)
	done := make(chan error, 1)
	go func() {
		_, err := ra.Read(make([]byte, 10))
		done <- err
	}()
	pr.Close() // the underlying reader's Close comes first, as documented
	ra.Close()
	if err := <-done; err == nil {
		t.Fatal("Read returned no error after Close")
	}
}
