package qcow2

import (
	"context"
	"fmt"
	"sync"

	"github.com/cangallo/canga/internal/panics"

	"golang.org/x/sync/errgroup"
)

// runOrdered runs work for jobs 0..n-1 on workers goroutines and calls
// deliver with the results in job order, from a single goroutine. At most
// queueDepth(workers) jobs wait for delivery, so memory stays bounded
// however many jobs there are. work gets the index of its goroutine, for
// per-goroutine state such as a compressor.
//
// A panic in work or deliver (a bug, which a hostile image may reach)
// does not take the process down: it becomes an error that wraps
// [ErrInternal] and says, through job, what job i was doing.
func runOrdered[J any](ctx context.Context, n int64, workers int, job func(i int64) string, work func(ctx context.Context, worker int, i int64) (J, error), deliver func(i int64, j J) error) error {
	type slot struct {
		i    int64
		j    J
		err  error
		done chan struct{}
	}
	g, ctx := errgroup.WithContext(ctx)
	jobs := make(chan *slot)
	ordered := make(chan *slot, queueDepth(workers))
	g.Go(func() (err error) {
		defer panics.Recover(&err, ErrInternal, func() string { return "the job queue" })
		defer close(jobs)
		defer close(ordered)
		for i := range n {
			s := &slot{i: i, done: make(chan struct{})}
			select {
			case ordered <- s:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case jobs <- s:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	safeWork := func(w int, i int64) (j J, err error) {
		defer panics.Recover(&err, ErrInternal, func() string { return job(i) })
		return work(ctx, w, i)
	}
	safeDeliver := func(i int64, j J) (err error) {
		defer panics.Recover(&err, ErrInternal, func() string { return job(i) })
		return deliver(i, j)
	}
	for w := range workers {
		g.Go(func() error {
			for s := range jobs {
				s.j, s.err = safeWork(w, s.i)
				close(s.done)
			}
			return nil
		})
	}
	g.Go(func() error {
		for s := range ordered {
			select {
			case <-s.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if s.err != nil {
				return s.err
			}
			if err := safeDeliver(s.i, s.j); err != nil {
				return err
			}
		}
		return nil
	})
	return g.Wait()
}

// diskName names d for errors: its file name if it has one.
func diskName(d Disk) string {
	if n, ok := d.(interface{ Name() string }); ok && n.Name() != "" {
		return n.Name()
	}
	return "the disk"
}

// chunkJob describes, for errors, job i of a run over d in chunks.
func chunkJob(verb string, d Disk, chunk int64) func(i int64) string {
	return func(i int64) string {
		off := i * chunk
		return fmt.Sprintf("%s guest bytes %#x-%#x of %s", verb, off, min(off+chunk, d.Size()), diskName(d))
	}
}

// queueDepth is how many jobs runOrdered lets wait for delivery: enough
// to keep the workers busy while deliver catches up.
func queueDepth(workers int) int { return max(2, workers) }

// jobBuffers is how many buffers a pool needs so that every job runOrdered
// can hold (running or waiting) has one; then get never waits on a job
// that cannot finish.
func jobBuffers(workers int) int { return workers + queueDepth(workers) }

// bufferPool hands out at most a fixed number of equal buffers; get
// blocks until one is free. Buffers are made on first use and reused last
// in, first out, so a pool allocates only as many as were ever in use at
// once: a convert whose workers hand their input back at once needs one
// input buffer per worker, not one per job.
type bufferPool struct {
	slots chan struct{} // a token per buffer that may be out
	size  int
	mu    sync.Mutex
	free  [][]byte
}

func newBufferPool(count, size int) *bufferPool {
	return &bufferPool{slots: make(chan struct{}, count), size: size}
}

func (p *bufferPool) get(ctx context.Context) ([]byte, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b, nil
	}
	return make([]byte, p.size), nil
}

func (p *bufferPool) put(b []byte) {
	p.mu.Lock()
	p.free = append(p.free, b)
	p.mu.Unlock()
	<-p.slots
}
