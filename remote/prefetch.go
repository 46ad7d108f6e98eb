package remote

import (
	"errors"
	"io"
	"sync"

	"github.com/cangallo/canga/internal/panics"
)

// prefetchChunk is the unit of read-ahead. It matches the chunks that cas
// writes and hashes, so that each of its Reads takes one whole chunk.
const prefetchChunk = 1 << 20

// prefetchDepth is how many chunks may wait, filled, for the consumer.
const prefetchDepth = 4

// prefetcher reads r ahead, in its own goroutine, so that receiving from
// the network overlaps writing and hashing, which cas does in the reading
// goroutine; it also lets TCP keep its window open while a disk stalls.
// Memory is bounded: prefetchDepth+1 chunks per download.
type prefetcher struct {
	r      io.Reader
	full   chan chunk
	free   chan []byte
	stop   chan struct{}
	wg     sync.WaitGroup
	cur    chunk
	curOff int
	err    error
	once   sync.Once
}

type chunk struct {
	b   []byte
	err error
}

func newPrefetcher(r io.Reader) *prefetcher {
	p := &prefetcher{
		r:    r,
		full: make(chan chunk, prefetchDepth),
		free: make(chan []byte, prefetchDepth+1),
		stop: make(chan struct{}),
	}
	for range prefetchDepth + 1 {
		p.free <- make([]byte, prefetchChunk)
	}
	p.wg.Add(1)
	go p.run()
	return p
}

func (p *prefetcher) run() {
	defer p.wg.Done()
	for {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.stop:
			return
		}
		n, err := p.fill(buf)
		select {
		case p.full <- chunk{b: buf[:n], err: err}:
		case <-p.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// fill reads one chunk ahead; a panic of the reader (a bug) ends the
// stream with an error instead of the process.
func (p *prefetcher) fill(buf []byte) (n int, err error) {
	defer panics.Recover(&err, ErrInternal, func() string { return "reading ahead" })
	n, err = io.ReadFull(p.r, buf)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (p *prefetcher) Read(b []byte) (int, error) {
	for p.curOff == len(p.cur.b) {
		if p.err != nil {
			return 0, p.err
		}
		if p.cur.b != nil {
			p.free <- p.cur.b[:cap(p.cur.b)]
			p.cur.b = nil
		}
		select {
		case c := <-p.full:
			p.cur, p.curOff, p.err = c, 0, c.err
		case <-p.stop:
			p.cur, p.curOff, p.err = chunk{}, 0, errClosed
		}
	}
	n := copy(b, p.cur.b[p.curOff:])
	p.curOff += n
	if p.curOff == len(p.cur.b) && p.err != nil {
		return n, p.err
	}
	return n, nil
}

// errClosed ends a Read that was waiting when Close was called.
var errClosed = errors.New("remote: stream closed")

// Close stops the read-ahead and waits for its goroutine. The caller
// closes the underlying body first, or at the same time, so that a Read
// blocked on the network returns.
func (p *prefetcher) Close() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}
