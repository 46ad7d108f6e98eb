package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stream is a file of a remote repository read from some offset on: see
// [Client.Open]. It is not safe for concurrent Reads.
type Stream struct {
	r      *resumer
	cancel context.CancelFunc
	// size is the file's length as known when Open returned.
	size int64
	once sync.Once
}

// Open returns the file rel of the repository at baseURL from byte off on
// (off 0: the whole file), as a stream that outlives a bad network: a
// transfer that fails transiently (a connection reset, a 5xx, a stall, a
// body cut short) is asked for again from the byte where it stopped, with
// "Range: bytes=N-", after a back-off; a server that ignores Range and
// sends the whole file (200) has the bytes before the wanted offset
// skipped. Only MaxAttempts failures in a row, without an attempt that
// delivered StallBytes between them, end the stream with an error.
//
// size is the file's length when the caller knows it (an index gives a
// blob's), else -1. A server that says another length, or sends more
// bytes, is a permanent failure ([ErrProtocol]); one that sends fewer is
// asked for the rest. The first request is made before Open returns, so a
// missing file ([ErrNotFound]) or a refused one fails here. Nothing is
// checked but lengths: the caller hashes what it reads. Close releases
// the connection, and ends a Read that waits for the network.
func (c *Client) Open(ctx context.Context, baseURL, rel string, off, size int64) (*Stream, error) {
	u, err := resolve(baseURL, rel)
	if err != nil {
		return nil, err
	}
	if off < 0 || (size >= 0 && off > size) {
		return nil, fmt.Errorf("remote: GET %s: offset %d outside the file's %d bytes", Redact(u), off, size)
	}
	// Close cancels whatever the stream is doing: a request, a back-off.
	ctx, cancel := context.WithCancel(ctx)
	r := &resumer{c: c, ctx: ctx, url: u, pos: off, size: size}
	if size < 0 || off < size {
		if err := r.connect(); err != nil {
			cancel()
			return nil, err
		}
	}
	return &Stream{r: r, size: r.size, cancel: cancel}, nil
}

// Size is the file's length in bytes, -1 when neither the caller nor the
// server has said it.
func (s *Stream) Size() int64 { return s.size }

// Read reads the file's next bytes.
func (s *Stream) Read(p []byte) (int, error) { return s.r.Read(p) }

// Close ends the transfer. It is safe to call more than once.
func (s *Stream) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.r.closeBody() // unblocks a Read waiting on the network
	})
	return nil
}

// resumer reads a file over as many requests as the network needs.
type resumer struct {
	c        *Client
	ctx      context.Context
	url      string
	pos      int64 // offset of the next byte to deliver
	size     int64 // the file's length, -1 while unknown
	failures int   // transient failures since an attempt made progress
	got      int64 // bytes the current request delivered
	err      error // sticky

	mu   sync.Mutex
	body io.ReadCloser // the current response's body; nil between requests
}

func (r *resumer) setBody(b io.ReadCloser) {
	r.mu.Lock()
	r.body = b
	r.mu.Unlock()
}

func (r *resumer) closeBody() {
	r.mu.Lock()
	b := r.body
	r.body = nil
	r.mu.Unlock()
	if b != nil {
		_ = b.Close() // a read-only transfer has nothing to report on close
	}
}

func (r *resumer) currentBody() io.ReadCloser {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.body
}

// connect makes requests until one gives a body to read from pos on, or
// the failure is permanent, or too many transient ones came in a row.
func (r *resumer) connect() error {
	for {
		err := r.request()
		if err == nil {
			return nil
		}
		if err := r.failed(err); err != nil {
			return err
		}
	}
}

// failed counts a failure and waits before the next attempt; it returns
// the error to give up with, or nil to go on.
func (r *resumer) failed(err error) error {
	if r.ctx.Err() != nil {
		return errors.Join(err, r.ctx.Err())
	}
	if !isTransient(err) {
		return unwrapPermanent(err)
	}
	r.failures++
	if r.failures >= r.c.maxAttempts() {
		return fmt.Errorf("%w (gave up after %d attempts)", err, r.failures)
	}
	retryAfter := 0
	var se *StatusError
	if errors.As(err, &se) {
		retryAfter = se.RetryAfter
	}
	t := time.NewTimer(r.c.delay(r.failures, retryAfter))
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return errors.Join(err, r.ctx.Err())
	case <-t.C:
		return nil
	}
}

// request sends one GET from pos and checks its answer.
func (r *resumer) request() error {
	resp, err := r.c.get(r.ctx, r.url, r.pos, nil)
	if err != nil {
		return err
	}
	u := Redact(r.url)
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			if err := r.learnSize(resp.ContentLength, resp); err != nil {
				return err
			}
		}
		if r.pos > 0 {
			// The server ignored the Range (python's http.server does):
			// the whole file comes again, and the bytes before pos go.
			if _, err := io.CopyN(io.Discard, resp.Body, r.pos); err != nil {
				resp.Body.Close()
				return &transferError{fmt.Errorf("GET %s: skipping to byte %d: %w", u, r.pos, err)}
			}
		}
	case http.StatusPartialContent:
		first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err == nil && total >= 0 {
			err = r.learnSize(total, resp)
		}
		if err != nil || first != r.pos || (r.size >= 0 && last != r.size-1) {
			resp.Body.Close()
			return &permanent{fmt.Errorf("%w: GET %s: Content-Range %s for Range bytes=%d-", ErrProtocol, u, quote(resp.Header.Get("Content-Range")), r.pos)}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err == nil && total >= 0 {
			if err := r.learnSize(total, resp); err != nil {
				return err
			}
			if total == r.pos {
				r.setBody(http.NoBody) // we had it all
				return nil
			}
		}
		return &permanent{fmt.Errorf("%w: GET %s: 416 for bytes=%d- of a %d-byte file", ErrProtocol, u, r.pos, r.size)}
	default:
		return statusError(r.url, resp)
	}
	r.got = 0
	r.setBody(resp.Body)
	return nil
}

// learnSize takes the length a server gives, which must be the one known.
func (r *resumer) learnSize(n int64, resp *http.Response) error {
	if r.size >= 0 && n != r.size {
		resp.Body.Close()
		return &permanent{fmt.Errorf("%w: GET %s: the server has %d bytes, want %d", ErrProtocol, Redact(r.url), n, r.size)}
	}
	r.size = n
	return nil
}

func (r *resumer) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		body := r.currentBody()
		if body == nil {
			if r.size >= 0 && r.pos == r.size {
				r.err = io.EOF
				continue
			}
			if err := r.connect(); err != nil {
				r.err = err
			}
			continue
		}
		n, err := body.Read(p)
		if r.size >= 0 && r.pos+int64(n) > r.size {
			n = int(r.size - r.pos)
			r.pos += int64(n)
			r.closeBody()
			r.err = &permanent{fmt.Errorf("%w: GET %s: more than the file's %d bytes", ErrProtocol, Redact(r.url), r.size)}
			return n, nil
		}
		r.pos += int64(n)
		r.got += int64(n)
		if r.got >= r.c.stallBytes() {
			r.failures = 0
		}
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, io.EOF) && (r.size < 0 || r.pos == r.size):
			r.closeBody()
			r.err = io.EOF
			return n, nil
		case errors.Is(err, io.EOF):
			err = &transferError{fmt.Errorf("GET %s: body ended at byte %d of %d", Redact(r.url), r.pos, r.size)}
		}
		r.closeBody()
		if ferr := r.failed(err); ferr != nil {
			r.err = ferr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// parseContentRange reads "bytes FIRST-LAST/TOTAL" or "bytes */TOTAL";
// first and last are -1 in the latter form, total is -1 for "*".
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("%w: Content-Range %s", ErrProtocol, quote(s))
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, 0, bad
		}
	}
	if rng == "*" {
		return -1, -1, total, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || (total >= 0 && last >= total) {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// ReadRange reads len(p) bytes of the file rel at off, with one request
// for exactly that range ("Range: bytes=OFF-END"): what a lazy reader
// asks for, one chunk at a time. size is the file's length when known
// (-1 if not). Transient failures are retried as for [Client.Open]. A
// server that ignores Range (200 and the whole file) is read up to the
// range and cut off: correct, if costly.
func (c *Client) ReadRange(ctx context.Context, baseURL, rel string, off int64, p []byte, size int64) error {
	u, err := resolve(baseURL, rel)
	if err != nil {
		return unwrapPermanent(err)
	}
	end := off + int64(len(p))
	if off < 0 || (size >= 0 && end > size) {
		return fmt.Errorf("remote: GET %s: bytes %d-%d outside the file's %d bytes", Redact(u), off, end, size)
	}
	if len(p) == 0 {
		return nil
	}
	got := 0
	return c.retry(ctx, func() (bool, error) {
		start := off + int64(got)
		resp, err := c.getRange(ctx, u, start, end-1)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body := io.Reader(resp.Body)
		switch resp.StatusCode {
		case http.StatusOK:
			if size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != size {
				return false, &permanent{fmt.Errorf("%w: GET %s: the server has %d bytes, want %d", ErrProtocol, Redact(u), resp.ContentLength, size)}
			}
			if _, err := io.CopyN(io.Discard, resp.Body, start); err != nil {
				return false, &transferError{fmt.Errorf("GET %s: skipping to byte %d: %w", Redact(u), start, err)}
			}
		case http.StatusPartialContent:
			first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
			if err != nil || first != start || last != end-1 || (size >= 0 && total >= 0 && total != size) {
				return false, &permanent{fmt.Errorf("%w: GET %s: Content-Range %s for Range bytes=%d-%d", ErrProtocol, Redact(u), quote(resp.Header.Get("Content-Range")), start, end-1)}
			}
		default:
			return false, statusError(u, resp)
		}
		n, err := io.ReadFull(body, p[got:])
		got += n
		if err != nil {
			return int64(n) >= c.stallBytes(), &transferError{err}
		}
		return true, nil
	})
}

// getRange sends one GET of u for bytes first-last.
func (c *Client) getRange(ctx context.Context, u string, first, last int64) (*http.Response, error) {
	return c.get(ctx, u, -1, http.Header{"Range": {"bytes=" + strconv.FormatInt(first, 10) + "-" + strconv.FormatInt(last, 10)}})
}
