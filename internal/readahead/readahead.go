// Package readahead reads a stream ahead in a goroutine of its own, so
// that receiving from the network overlaps what the reader does with the
// bytes (writing and hashing them): a download runs at the speed of the
// slower of the two, not of their sum, and TCP keeps its window open
// while a disk stalls. Memory is bounded: Depth+1 chunks per stream.
package readahead

import (
	"errors"
	"io"
	"sync"

	"github.com/cangallo/canga/internal/panics"
)

// Chunk is the unit of read-ahead. It matches the chunks that cas writes
// and hashes, so that each of its Reads takes one whole chunk.
const Chunk = 1 << 20

// Depth is how many chunks may wait, filled, for the consumer.
const Depth = 4

// ErrInternal: a panic of the reader (a bug) ended the stream.
var ErrInternal = errors.New("readahead: internal error")

// Reader reads r ahead. Close it, with or after the underlying reader's
// own Close, to stop its goroutine.
type Reader struct {
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

// New starts reading r ahead.
func New(r io.Reader) *Reader {
	p := &Reader{
		r:    r,
		full: make(chan chunk, Depth),
		free: make(chan []byte, Depth+1),
		stop: make(chan struct{}),
	}
	for range Depth + 1 {
		p.free <- make([]byte, Chunk)
	}
	p.wg.Add(1)
	go p.run()
	return p
}

func (p *Reader) run() {
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
func (p *Reader) fill(buf []byte) (n int, err error) {
	defer panics.Recover(&err, ErrInternal, func() string { return "reading ahead" })
	n, err = io.ReadFull(p.r, buf)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (p *Reader) Read(b []byte) (int, error) {
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
var errClosed = errors.New("readahead: closed")

// Close stops the read-ahead and waits for its goroutine. The caller
// closes the underlying body first, or at the same time, so that a Read
// blocked on the network returns.
func (p *Reader) Close() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}
