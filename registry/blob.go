package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// OpenBlob streams the blob desc describes from byte off to its end:
// GET /v2/NAME/blobs/DIGEST with "Range: bytes=OFF-END" when off > 0,
// following the registry's redirect to its storage (credentials are not
// sent to another origin).
//
// It checks lengths only: the reader returns exactly desc.Size-off bytes,
// then io.EOF; a body that ends early is io.ErrUnexpectedEOF, a body that
// is longer or a Content-Range that does not start at off is
// [ErrCorrupt]. It neither buffers nor hashes: the caller hashes what it
// keeps. A server that ignores the range and answers 200 with the whole
// blob is handled by reading past the first off bytes, so a resumed pull
// stays correct (it only costs the bytes again).
//
// Closing the reader early is fine; it closes the connection.
func (r *Repository) OpenBlob(ctx context.Context, desc ocispec.Descriptor, off int64) (io.ReadCloser, error) {
	ref := r.Reference("", desc.Digest)
	fail := func(err error) (io.ReadCloser, error) {
		return nil, fmt.Errorf("open blob %s at offset %d: %w", ref, off, err)
	}
	if err := desc.Digest.Validate(); err != nil {
		return fail(fmt.Errorf("%w: descriptor: %w", ErrInvalidReference, err))
	}
	if desc.Size < 0 || off < 0 || off > desc.Size {
		return fail(fmt.Errorf("offset outside the blob's %d bytes", desc.Size))
	}
	rep, err := r.oras(ctx)
	if err != nil {
		return fail(err)
	}
	if off == desc.Size {
		return io.NopCloser(strings.NewReader("")), nil
	}
	scheme := "https"
	if rep.PlainHTTP {
		scheme = "http"
	}
	u := scheme + "://" + rep.Reference.Host() + "/v2/" + r.name + "/blobs/" + desc.Digest.String()
	ctx = auth.AppendRepositoryScope(ctx, rep.Reference, auth.ActionPull)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fail(err)
	}
	// The bytes as stored: no transparent gzip that would hide lengths.
	req.Header.Set("Accept-Encoding", "identity")
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, desc.Size-1))
	}
	resp, err := r.client.auth.Do(req)
	if err != nil {
		return fail(classify(err))
	}
	body := resp.Body
	ok := false
	defer func() {
		if !ok {
			body.Close()
		}
	}()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		// Without a Range header a 206 is odd but fine if it covers
		// everything.
		if err := checkContentRange(resp.Header.Get("Content-Range"), off, desc.Size); err != nil {
			return fail(err)
		}
		if cl := resp.ContentLength; cl >= 0 && cl != desc.Size-off {
			return fail(fmt.Errorf("%w: Content-Length %d for the %d bytes from offset %d", ErrCorrupt, cl, desc.Size-off, off))
		}
	case http.StatusOK:
		if cl := resp.ContentLength; cl >= 0 && cl != desc.Size {
			return fail(fmt.Errorf("%w: Content-Length %d, the descriptor says %d", ErrCorrupt, cl, desc.Size))
		}
		if d := resp.Header.Get("Docker-Content-Digest"); d != "" && d != desc.Digest.String() {
			return fail(fmt.Errorf("%w: Docker-Content-Digest %s", ErrCorrupt, d))
		}
		if off > 0 {
			// The range was ignored: skip what the caller has.
			if n, err := io.CopyN(io.Discard, body, off); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return fail(fmt.Errorf("skipping the %d bytes the server sent again: body ended after %d: %w", off, n, err))
			}
		}
	case http.StatusNotFound:
		return fail(fmt.Errorf("%w: %w", ErrNotFound, errorResponse(resp)))
	case http.StatusRequestedRangeNotSatisfiable:
		return fail(fmt.Errorf("%w: range not satisfiable: the registry's blob is shorter than the descriptor says", ErrCorrupt))
	default:
		return fail(classify(errorResponse(resp)))
	}
	ok = true
	return &blobReader{body: body, ref: ref, off: off, left: desc.Size - off}, nil
}

// checkContentRange checks "bytes START-END/TOTAL" against the range
// asked for: START = off, END = size-1, TOTAL = size or *.
func checkContentRange(h string, off, size int64) error {
	bad := func() error {
		return fmt.Errorf("%w: Content-Range %q for bytes %d-%d/%d", ErrCorrupt, h, off, size-1, size)
	}
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return bad()
	}
	rng, total, ok := strings.Cut(spec, "/")
	if !ok {
		return bad()
	}
	first, last, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || start != off || end != size-1 {
		return bad()
	}
	if total != "*" {
		if n, err := strconv.ParseInt(total, 10, 64); err != nil || n != size {
			return bad()
		}
	}
	return nil
}

// errorResponse reads a registry's error answer (at most 8 KiB of it) the
// way oras-go does, so that callers see one error type.
func errorResponse(resp *http.Response) error {
	e := &errcode.ErrorResponse{Method: resp.Request.Method, URL: resp.Request.URL, StatusCode: resp.StatusCode}
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<10)).Decode(&body); err == nil {
		e.Errors = body.Errors
	}
	// Never show a storage URL's signature.
	e.URL = redact(e.URL)
	return e
}

func redact(u *url.URL) *url.URL {
	if u == nil || u.RawQuery == "" {
		return u
	}
	c := *u
	c.RawQuery = ""
	return &c
}

// blobReader returns exactly left bytes and checks the body agrees.
type blobReader struct {
	body io.ReadCloser
	ref  Reference
	off  int64 // offset in the blob of the next byte
	left int64
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, b.end()
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.body.Read(p)
	b.off += int64(n)
	b.left -= int64(n)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF):
		if b.left > 0 {
			return n, fmt.Errorf("blob %s: body ended at offset %d, %d bytes short: %w", b.ref, b.off, b.left, io.ErrUnexpectedEOF)
		}
		return n, io.EOF
	default:
		return n, fmt.Errorf("blob %s at offset %d: %w", b.ref, b.off, err)
	}
}

// end checks that the body ends where the blob does.
func (b *blobReader) end() error {
	var one [1]byte
	n, err := b.body.Read(one[:])
	if n > 0 {
		return fmt.Errorf("blob %s: %w: the body goes on past the descriptor's size %d", b.ref, ErrCorrupt, b.off)
	}
	if err == nil || errors.Is(err, io.EOF) {
		return io.EOF
	}
	return fmt.Errorf("blob %s at offset %d: %w", b.ref, b.off, err)
}

func (b *blobReader) Close() error { return b.body.Close() }
