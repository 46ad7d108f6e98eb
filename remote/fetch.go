package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Get downloads the file rel of the repository at baseURL whole: a small
// file that changes, such as index.yaml or its signature. It holds at most
// limit bytes (more is [ErrTooLarge], without reading them all), and it is
// asked for with "Cache-Control: no-cache", so that a proxy or CDN asks
// the origin and a new index is seen. A missing file (404 or 410) is an
// error matching [ErrNotFound]. Transient failures are retried as for
// [Client.Open].
func (c *Client) Get(ctx context.Context, baseURL, rel string, limit int64) ([]byte, error) {
	f, err := c.GetIf(ctx, baseURL, rel, limit, Validators{})
	if err != nil {
		return nil, err
	}
	return f.Data, nil
}

// Validators identify the version of a file that a client holds, as the
// server described it: its ETag and its Last-Modified, as sent. Empty
// fields are unknown.
type Validators struct {
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last-modified,omitempty"`
}

// Zero reports whether v holds nothing to send.
func (v Validators) Zero() bool { return v.ETag == "" && v.LastModified == "" }

// File is what [Client.GetIf] got.
type File struct {
	// NotModified: the server answered 304, the caller's copy is current
	// and Data is nil.
	NotModified bool
	// Data is the file, from GetIf; Size its length.
	Data []byte
	Size int64
	// Validators of the version got (or the caller's, when not
	// modified), to send the next time. A Last-Modified that could not
	// tell two versions apart is left out (see GetIf).
	Validators Validators
}

// GetIf is [Client.Get] conditional on have, the validators of the copy
// the caller holds: with them it sends If-None-Match and
// If-Modified-Since, and a server that finds the file unchanged answers
// 304 Not Modified, which GetIf reports instead of the bytes. An ETag is
// the better validator ([Handler] sends the SHA-256 of the content);
// Last-Modified is all python's http.server has, and it counts seconds: a
// file replaced within the second of its previous version would look
// unchanged. So a Last-Modified is only kept when it is at least one
// second older than the response's Date (RFC 9110 §8.8.2.2: otherwise it
// is a weak validator), which leaves the next request unconditional
// rather than wrong.
func (c *Client) GetIf(ctx context.Context, baseURL, rel string, limit int64, have Validators) (*File, error) {
	var data []byte
	f, err := c.getIf(ctx, baseURL, rel, limit, have, func(body io.Reader, length int64) (int64, error) {
		// One allocation when the server says the length.
		data = make([]byte, 0, max(0, min(length, limit)))
		buf := bytes.NewBuffer(data)
		n, err := buf.ReadFrom(body)
		data = buf.Bytes()
		return n, err
	})
	if err != nil {
		return nil, err
	}
	if !f.NotModified {
		f.Data = data
	}
	return f, nil
}

// Sink is where [Client.GetIfTo] writes: a file, rewound and truncated
// before each attempt.
type Sink interface {
	io.Writer
	io.Seeker
	Truncate(size int64) error
}

// GetIfTo is [Client.GetIf] that writes the file to w instead of memory
// (File.Data stays nil): an index.yaml of 100,000 images is 40 MB. Nothing
// is written when the file is not modified.
func (c *Client) GetIfTo(ctx context.Context, baseURL, rel string, limit int64, have Validators, w Sink) (*File, error) {
	return c.getIf(ctx, baseURL, rel, limit, have, func(body io.Reader, _ int64) (int64, error) {
		if _, err := w.Seek(0, io.SeekStart); err != nil {
			return 0, &permanent{err}
		}
		if err := w.Truncate(0); err != nil {
			return 0, &permanent{err}
		}
		return io.Copy(w, body)
	})
}

// getIf makes the request of GetIf and gives a 200's body, at most limit+1
// bytes of it, to read.
func (c *Client) getIf(ctx context.Context, baseURL, rel string, limit int64, have Validators, read func(body io.Reader, length int64) (int64, error)) (*File, error) {
	u, err := resolve(baseURL, rel)
	if err != nil {
		return nil, unwrapPermanent(err)
	}
	h := http.Header{"Cache-Control": {"no-cache"}}
	if have.ETag != "" {
		h.Set("If-None-Match", have.ETag)
	}
	if have.LastModified != "" {
		h.Set("If-Modified-Since", have.LastModified)
	}
	var out *File
	err = c.retry(ctx, func() (bool, error) {
		resp, err := c.get(ctx, u, 0, h)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotModified && !have.Zero():
			out = &File{NotModified: true, Validators: have}
			return false, nil
		case resp.StatusCode != http.StatusOK:
			return false, statusError(u, resp)
		}
		tooLarge := &permanent{fmt.Errorf("%w: %s holds more than %d bytes", ErrTooLarge, Redact(u), limit)}
		if resp.ContentLength > limit {
			return false, tooLarge
		}
		n, err := read(io.LimitReader(resp.Body, limit+1), resp.ContentLength)
		if err != nil {
			var p *permanent
			if errors.As(err, &p) {
				return false, err
			}
			return false, fmt.Errorf("remote: GET %s: %w", Redact(u), err)
		}
		if n > limit {
			return false, tooLarge
		}
		out = &File{Size: n, Validators: validators(resp.Header)}
		return false, nil
	})
	return out, err
}

// validators are those of a 200 response worth sending back.
func validators(h http.Header) Validators {
	v := Validators{ETag: h.Get("ETag")}
	lm, err := http.ParseTime(h.Get("Last-Modified"))
	if err != nil {
		return v
	}
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		date = time.Now()
	}
	if !lm.After(date.Add(-time.Second)) {
		v.LastModified = h.Get("Last-Modified")
	}
	return v
}
