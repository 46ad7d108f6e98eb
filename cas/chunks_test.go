package cas

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

// sums is the chunk list of data, computed the obvious way.
func sums(data []byte, size int) []byte {
	var out []byte
	for off := 0; off < len(data); off += size {
		s := sha256.Sum256(data[off:min(off+size, len(data))])
		out = append(out, s[:]...)
	}
	return out
}

func TestWithChunks(t *testing.T) {
	ctx := context.Background()
	const cs = 64 << 10
	for _, n := range []int{0, 1, cs - 1, cs, cs + 1, 5*cs + 123} {
		data := content(uint64(n), n)
		d := digest.FromBytes(data)
		want := sums(data, cs)
		writers := map[string]func(s *Store) (BlobInfo, error){
			"ingest": func(s *Store) (BlobInfo, error) {
				return s.Ingest(ctx, bytes.NewReader(data), d, int64(n), nil, WithChunks(cs))
			},
			"commit file": func(s *Store) (BlobInfo, error) {
				tf, err := s.CreateTemp("x")
				if err != nil {
					return BlobInfo{}, err
				}
				tf.Write(data)
				return s.CommitFile(ctx, tf, d, nil, WithChunks(cs))
			},
			"copy": func(s *Store) (BlobInfo, error) {
				return s.CopyFile(ctx, writeSource(t, data), d, int64(n), nil, WithChunks(cs))
			},
			"partial": func(s *Store) (BlobInfo, error) {
				p, err := s.OpenPartial(ctx, d, int64(n), WithChunks(cs))
				if err != nil {
					return BlobInfo{}, err
				}
				// Resumed half way, as after a crash: the chunks of the
				// bytes already there count too.
				if _, err := p.Append(ctx, bytes.NewReader(data[:n/2]), nil); err != nil {
					return BlobInfo{}, err
				}
				p.Close()
				if p, err = s.OpenPartial(ctx, d, int64(n), WithChunks(cs)); err != nil {
					return BlobInfo{}, err
				}
				return p.Commit(ctx, bytes.NewReader(data[n/2:]), nil)
			},
		}
		for name, write := range writers {
			s := newStore(t)
			info, err := write(s)
			if err != nil {
				t.Fatalf("%s of %d bytes: %v", name, n, err)
			}
			if !bytes.Equal(info.Chunks, want) {
				t.Fatalf("%s of %d bytes: chunk list of %d bytes, want %d", name, n, len(info.Chunks), len(want))
			}
			// A blob already stored gets its list by a read.
			if info, ok, err := s.Existing(d, int64(n), WithChunks(cs)); !ok || err != nil || !bytes.Equal(info.Chunks, want) {
				t.Fatalf("%s: Existing: %v %v", name, ok, err)
			}
		}
	}
	if _, err := newStore(t).Ingest(ctx, bytes.NewReader(nil), "", -1, nil, WithChunks(1000)); err == nil {
		t.Fatal("a chunk size that is not a power of two was accepted")
	}
}

func TestPartialChunks(t *testing.T) {
	ctx := context.Background()
	const cs = 16 << 10
	data := content(77, 10*cs+500) // 11 chunks, the last short
	d := digest.FromBytes(data)
	list := sums(data, cs)
	chunk := func(i int) []byte { return data[i*cs : min((i+1)*cs, len(data))] }
	open := func(t *testing.T, s *Store) *Partial {
		t.Helper()
		p, err := s.OpenPartial(ctx, d, int64(len(data)), WithChunkList(cs, list))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("out of order, then a pull finishes", func(t *testing.T) {
		s := newStore(t)
		p := open(t, s)
		for _, i := range []int{7, 3, 10} {
			if err := p.WriteChunk(int64(i), chunk(i)); err != nil {
				t.Fatal(err)
			}
		}
		if !p.Has(7) || p.Has(6) || p.Offset() != 0 {
			t.Fatalf("Has(7)=%v Has(6)=%v Offset=%d", p.Has(7), p.Has(6), p.Offset())
		}
		b := make([]byte, 100)
		if _, err := p.ReadAt(b, 7*cs+5); err != nil || !bytes.Equal(b, data[7*cs+5:7*cs+105]) {
			t.Fatalf("ReadAt of a held chunk: %v", err)
		}
		if _, err := p.ReadAt(b, 6*cs+5); err == nil {
			t.Fatal("ReadAt of a missing chunk succeeded")
		}
		// A bad chunk is refused and not written.
		bad := bytes.Clone(chunk(5))
		bad[0] ^= 1
		if err := p.WriteChunk(5, bad); !errors.Is(err, ErrChunkMismatch) || p.Has(5) {
			t.Fatalf("bad chunk: %v", err)
		}
		// Chunk 0 extends the offset; then the chunks before 3.
		for _, i := range []int{0, 2, 1} {
			if err := p.WriteChunk(int64(i), chunk(i)); err != nil {
				t.Fatal(err)
			}
		}
		if p.Offset() != 4*cs {
			t.Fatalf("Offset %d, want %d (chunks 0-3 held)", p.Offset(), 4*cs)
		}
		// Kept, and found again by the next process.
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		p = open(t, s)
		if p.Offset() != 4*cs || !p.Has(7) || !p.Has(10) || p.Has(5) {
			t.Fatalf("after reopening: Offset %d, Has(7) %v, Has(10) %v", p.Offset(), p.Has(7), p.Has(10))
		}
		// A sequential pull from the offset finishes the blob.
		info, err := p.Commit(ctx, bytes.NewReader(data[p.Offset():]), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(info.Chunks, list) {
			t.Fatal("the chunk list of the commit is not the blob's")
		}
		assertBlob(t, s, d, data)
		assertTmpEmpty(t, s)
	})

	t.Run("every chunk out of order commits without a stream", func(t *testing.T) {
		s := newStore(t)
		p := open(t, s)
		for i := 10; i >= 0; i-- {
			if err := p.WriteChunk(int64(i), chunk(i)); err != nil {
				t.Fatal(err)
			}
		}
		if p.Offset() != int64(len(data)) {
			t.Fatalf("Offset %d", p.Offset())
		}
		if _, err := p.Commit(ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		assertBlob(t, s, d, data)
	})

	// SIGKILL can cut a chunk write between pages: the file then holds
	// the chunk's first bytes and a hole. The next open checks every
	// chunk against the list, so the torn one is not held and is fetched
	// again; the chunks around it stay.
	t.Run("a torn chunk write is not held after reopening", func(t *testing.T) {
		s := newStore(t)
		p := open(t, s)
		for _, i := range []int{3, 7, 8} {
			if err := p.WriteChunk(int64(i), chunk(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(s.partialPath(d), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(make([]byte, cs/2), 7*cs+cs/2); err != nil {
			t.Fatal(err)
		}
		f.Close()
		p = open(t, s)
		if p.Has(7) || !p.Has(3) || !p.Has(8) {
			t.Fatalf("after a torn write of chunk 7: Has(3)=%v Has(7)=%v Has(8)=%v", p.Has(3), p.Has(7), p.Has(8))
		}
		if _, err := p.ReadAt(make([]byte, 10), 7*cs+cs/2); err == nil {
			t.Fatal("ReadAt of the torn chunk succeeded")
		}
		for i := range 11 {
			if !p.Has(int64(i)) {
				if err := p.WriteChunk(int64(i), chunk(i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := p.Commit(ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		assertBlob(t, s, d, data)
	})

	t.Run("a stream with a bad chunk", func(t *testing.T) {
		s := newStore(t)
		p := open(t, s)
		bad := bytes.Clone(data)
		bad[3*cs+10] ^= 1
		_, err := p.Append(ctx, bytes.NewReader(bad), nil)
		if !errors.Is(err, ErrChunkMismatch) || !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("got %v", err)
		}
		assertTmpEmpty(t, s)
		assertNoBlobs(t, s)
	})

	t.Run("wrong list shapes", func(t *testing.T) {
		s := newStore(t)
		for _, l := range [][]byte{list[:len(list)-1], append(bytes.Clone(list), list[:32]...), nil} {
			if l == nil {
				continue
			}
			if _, err := s.OpenPartial(ctx, d, int64(len(data)), WithChunkList(cs, l)); err == nil {
				t.Errorf("a chunk list of %d bytes was accepted", len(l))
			}
		}
		if _, err := s.OpenPartial(ctx, d, -1, WithChunkList(cs, list)); err == nil {
			t.Error("a chunk list without a size was accepted")
		}
		if err := (&Partial{}).WriteChunk(0, nil); err == nil {
			t.Error("WriteChunk without a list")
		}
	})
}

func TestChunkList(t *testing.T) {
	data := content(9, 3*MinChunkSize+1)
	got, err := ChunkList(bytes.NewReader(data), MinChunkSize)
	if err != nil || !bytes.Equal(got, sums(data, MinChunkSize)) {
		t.Fatalf("%v", err)
	}
	if err := CheckChunkList(got, int64(len(data)), MinChunkSize); err != nil {
		t.Fatal(err)
	}
	if err := CheckChunkList(got, int64(len(data))+MinChunkSize, MinChunkSize); err == nil {
		t.Fatal("a list for another size passed")
	}
	if _, err := ChunkList(io.LimitReader(bytes.NewReader(data), 10), 3); err == nil {
		t.Fatal("chunk size 3 accepted")
	}
}

func TestChunkListSize(t *testing.T) {
	for _, tc := range []struct {
		size, chunk, want int64
		ok                bool
	}{
		{0, 1 << 20, 0, true},
		{1, 1 << 20, 32, true},
		{1<<20 + 1, 1 << 20, 64, true},
		{2<<40 - 1, 1 << 20, MaxChunkListSize, true},
		{2 << 40, 1 << 20, 0, false},
		{1 << 62, MinChunkSize, 0, false},
		{1<<63 - 1, MaxChunkSize, 0, false},
		{-1, 1 << 20, 0, false},
		{1, 3000, 0, false},
	} {
		got, err := ChunkListSize(tc.size, tc.chunk)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ChunkListSize(%d, %d) = %d, %v", tc.size, tc.chunk, got, err)
		}
	}
}
