package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzResponse is one answer of the fuzzed server.
type fuzzResponse struct {
	status int
	header [][2]string
	body   []byte
}

// fuzzServer answers the requests of one fuzz input with its responses,
// in order, then 404; it records the offset each request asked for.
type fuzzServer struct {
	mu        sync.Mutex
	responses []fuzzResponse
	served    []servedResponse
}

type servedResponse struct {
	reqOff int64 // the request's Range start, 0 without one
	fuzzResponse
}

func (s *fuzzServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	i := len(s.served)
	var resp fuzzResponse
	if i < len(s.responses) {
		resp = s.responses[i]
	} else {
		resp = fuzzResponse{status: http.StatusNotFound}
	}
	off := int64(0)
	if rng, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes="); ok {
		a, _, _ := strings.Cut(rng, "-")
		off, _ = strconv.ParseInt(a, 10, 64)
	}
	s.served = append(s.served, servedResponse{off, resp})
	s.mu.Unlock()
	for _, h := range resp.header {
		w.Header().Add(h[0], h[1])
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

// decodeResponses turns fuzz input into responses: each is a status byte
// pair, header lines ("Name: value", up to an empty line) and a body of
// the length a byte gives. Header names and values keep to the bytes HTTP
// allows, so that the server sends what the input says.
func decodeResponses(data []byte) []fuzzResponse {
	var out []fuzzResponse
	for len(data) >= 3 && len(out) < 4 {
		r := fuzzResponse{status: 200 + (int(data[0])<<8|int(data[1]))%400}
		data = data[2:]
		head, rest, _ := bytes.Cut(data, []byte("\n\n"))
		data = rest
		for _, line := range strings.Split(string(head), "\n") {
			k, v, ok := strings.Cut(line, ":")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if !ok || !token(k) || !fieldValue(v) {
				continue
			}
			r.header = append(r.header, [2]string{k, v})
		}
		n := 0
		if len(data) > 0 {
			n = min(int(data[0]), len(data)-1)
			data = data[1:]
		}
		r.body, data = data[:n], data[n:]
		out = append(out, r)
	}
	return out
}

func token(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

func fieldValue(s string) bool {
	for _, c := range []byte(s) {
		if c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzHTTPResponses answers the requests of Get, Open and ReadRange with
// fuzzed statuses, headers and bodies, through a real HTTP server in the
// process. Nothing may panic or hang; every error must say what went
// wrong in the package's terms; and every byte a caller receives must be
// one that a response put at that offset of the file (a 200 from 0, a 206
// from the offset asked for), never more bytes than the file's known size.
func FuzzHTTPResponses(f *testing.F) {
	for _, s := range []string{
		"\x00\x00Content-Length: 5\n\n\x05hello",
		"\x00\x06Content-Range: bytes 3-7/8\n\n\x05lo, w",
		"\x00\x00\n\n\x08abcdefgh\x00\x06Content-Range: bytes 4-7/8\n\n\x04efgh",
		"\x01\x2c\n\n\x00\x00\x00Content-Length: 3\n\n\x03abc",                                 // 500, then 200
		"\x00\xd0Content-Range: bytes */8\n\n\x00",                                             // 416
		"\x00\x00Content-Length: 9\n\n\x04abcd\x00\x06Content-Range: bytes 4-8/9\n\n\x05efghi", // cut short, resumed
		"\x00\x00Content-Encoding: gzip\n\n\x03abc",
		"\x00\xc9Retry-After: 1\n\n\x00",         // 429
		"\x00\x00Content-Length: 3\n\n\x05abcde", // more than it says
		"\x00\x06Content-Range: bytes 0-1/2\n\n\x02ab",
	} {
		for _, mode := range []uint8{0, 1, 2, 3, 4} {
			f.Add([]byte(s), mode, int64(8), int64(3), uint16(5))
		}
	}
	srv := &fuzzServer{}
	ts := httptest.NewServer(srv)
	f.Cleanup(ts.Close)
	base := ts.URL + "/"
	client := &Client{
		HTTP:         ts.Client(),
		UserAgent:    "fuzz",
		MaxAttempts:  3,
		BaseDelay:    time.Microsecond,
		MaxDelay:     time.Microsecond,
		StallTimeout: 2 * time.Second,
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint8, size, off int64, n uint16) {
		srv.mu.Lock()
		srv.responses, srv.served = decodeResponses(data), nil
		srv.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		size = size%(1<<16) - 1 // -1 (unknown) to 65534
		if size < -1 {
			size = -1
		}
		off = max(0, off%(1<<16))

		var got []byte // what the caller received, from offset start
		var start int64
		var err error
		switch mode % 5 {
		case 0:
			got, err = client.Get(ctx, base, "index.yaml", int64(n))
			if err == nil && int64(len(got)) > int64(n) {
				t.Fatalf("Get returned %d bytes, limit %d", len(got), n)
			}
		case 1, 2, 3:
			if mode%5 == 1 {
				off = 0
			}
			if size >= 0 {
				off = min(off, size)
			}
			start = off
			var s *Stream
			s, err = client.Open(ctx, base, "blob", off, size)
			if err == nil {
				// Read in small pieces, as a copy does, up to a bound.
				buf := make([]byte, 1+int(n%700))
				for len(got) < 1<<17 {
					var k int
					k, err = s.Read(buf)
					got = append(got, buf[:k]...)
					if err != nil {
						break
					}
				}
				s.Close()
				if errors.Is(err, io.EOF) {
					err = nil
					if size >= 0 && int64(len(got)) != size-off {
						t.Fatalf("Open(%d, size %d) ended after %d bytes", off, size, len(got))
					}
				}
				if size >= 0 && int64(len(got)) > size-off {
					t.Fatalf("Open(%d, size %d) gave %d bytes", off, size, len(got))
				}
			}
		case 4:
			if size >= 0 {
				off = min(off, size)
				n = uint16(min(int64(n), size-off))
			}
			start = off
			p := make([]byte, n)
			err = client.ReadRange(ctx, base, "blob", off, p, size)
			if err == nil {
				got = p
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("mode %d did not finish in time: %v", mode%5, err)
		}
		if err != nil {
			if !knownError(err) {
				t.Fatalf("mode %d: error in no known terms: %v (%T)", mode%5, err, err)
			}
			if mode%5 != 1 && mode%5 != 2 && mode%5 != 3 {
				return // Get and ReadRange give nothing on failure
			}
		}
		srv.mu.Lock()
		served := srv.served
		srv.mu.Unlock()
		if mode%5 == 0 {
			if err == nil {
				last := served[len(served)-1]
				if last.status != http.StatusOK || !bytes.Equal(got, last.body[:min(len(last.body), len(got))]) {
					t.Fatalf("Get returned %q, the last answer was %d %q", got, last.status, last.body)
				}
			}
			return
		}
		// Each byte received must be one that an answer put there.
		for i, b := range got {
			pos := start + int64(i)
			ok := false
			for _, s := range served {
				from := int64(0)
				switch s.status {
				case http.StatusOK:
				case http.StatusPartialContent:
					from = s.reqOff
				default:
					continue
				}
				if j := pos - from; j >= 0 && j < int64(len(s.body)) && s.body[j] == b {
					ok = true
					break
				}
			}
			if !ok {
				t.Fatalf("mode %d: byte %d (offset %d) = %#x was never served there", mode%5, i, pos, b)
			}
		}
	})
}

// knownError reports whether err is one that callers of the package can
// classify: a sentinel, a status, a transfer failure, a bad length, or an
// I/O error of the connection.
func knownError(err error) bool {
	for _, e := range []error{ErrNotFound, ErrHTTP, ErrTooLarge, ErrProtocol, ErrBadURL, errStalled, io.ErrUnexpectedEOF, io.EOF} {
		if errors.Is(err, e) {
			return true
		}
	}
	var te *transferError
	return errors.As(err, &te) || strings.Contains(err.Error(), "outside the file") || strings.HasPrefix(err.Error(), "remote: ")
}
