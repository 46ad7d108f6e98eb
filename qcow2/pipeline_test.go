package qcow2

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A pool makes only as many buffers as were out at once, and reuses the
// one handed back last: a convert whose workers return their input at once
// must not grow to one buffer per queued job.
func TestBufferPoolReusesLastIn(t *testing.T) {
	ctx := context.Background()
	p := newBufferPool(4, 16)
	seen := map[*byte]bool{}
	for range 10 {
		a, err := p.get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := p.get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen[&a[0]], seen[&b[0]] = true, true
		p.put(b)
		p.put(a)
	}
	if len(seen) != 2 {
		t.Fatalf("pool made %d buffers for 2 in use at once, want 2", len(seen))
	}
}

// get waits while every buffer is out, and gives up with the context.
func TestBufferPoolBounded(t *testing.T) {
	p := newBufferPool(2, 16)
	ctx := context.Background()
	a, _ := p.get(ctx)
	if _, err := p.get(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := p.get(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third get of a pool of 2: %v, want deadline exceeded", err)
	}
	got := make(chan []byte)
	go func() {
		b, _ := p.get(ctx)
		got <- b
	}()
	p.put(a)
	select {
	case b := <-got:
		if &b[0] != &a[0] {
			t.Fatal("a waiting get did not get the buffer put back")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting get was not woken by put")
	}
}
