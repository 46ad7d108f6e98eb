package testkit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is what a FaultServer does with one request instead of serving
// it: data is the whole file the request asked for.
type Fault func(w http.ResponseWriter, r *http.Request, data []byte)

// FaultServer serves the files of Dir through Next (a correct static
// server), except that the requests numbered in Plan (from 1) get that
// Fault instead. It records every request's path and Range.
type FaultServer struct {
	Dir  string
	Next http.Handler
	Plan map[int]Fault

	mu   sync.Mutex
	n    int
	reqs []string
}

// Start serves s on a loopback port until the test ends and returns its
// base URL, with a trailing slash.
func (s *FaultServer) Start(t testing.TB) string {
	t.Helper()
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return hs.URL + "/"
}

func (s *FaultServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.n++
	act := s.Plan[s.n]
	s.reqs = append(s.reqs, r.URL.Path+" "+r.Header.Get("Range"))
	s.mu.Unlock()
	if act == nil {
		s.Next.ServeHTTP(w, r)
		return
	}
	data, err := os.ReadFile(filepath.Join(s.Dir, strings.TrimPrefix(r.URL.Path, "/")))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	act(w, r, data)
}

// Requests are the requests seen so far, each as "PATH RANGE".
func (s *FaultServer) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

// CutAt sends the whole length in Content-Length, then n(len) bytes of
// the file (from its start, whatever Range asked), then drops the
// connection, as a crash would.
func CutAt(n func(size int) int) Fault {
	return func(w http.ResponseWriter, r *http.Request, data []byte) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:n(len(data))])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // closes the connection
	}
}

// Half is half a file's size, for CutAt.
func Half(size int) int { return size / 2 }

// StallAt sends half the file and then nothing until the client gives up.
func StallAt(w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(http.StatusOK)
	w.Write(data[:len(data)/2])
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

// WholeIgnoringRange answers with 200 and the whole file, as python's
// http.server does with a Range request.
func WholeIgnoringRange(w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(http.StatusOK)
	w.Write(data)
}

// Drip sends the whole length in Content-Length, then one byte of the
// file every period until the client goes away.
func Drip(period time.Duration) Fault {
	return func(w http.ResponseWriter, r *http.Request, data []byte) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		t := time.NewTicker(period)
		defer t.Stop()
		for i := range data {
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
			if _, err := w.Write(data[i : i+1]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}
}

// RedirectTo answers 302 with Location target ("" the request's own URL:
// a loop).
func RedirectTo(target string) Fault {
	return func(w http.ResponseWriter, r *http.Request, _ []byte) {
		loc := target
		if loc == "" {
			loc = r.URL.String()
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusFound)
	}
}

// WrongRange answers any request with 206 and the bytes from offset 0,
// labelled as such in Content-Range, whatever Range asked for.
func WrongRange(w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(data)-1, len(data)))
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(http.StatusPartialContent)
	w.Write(data)
}

// LengthLie answers 200 with the file but a Content-Length off by delta:
// more than the file (the body then ends early, the connection closed)
// or less (the body is cut at the length said).
func LengthLie(delta int) Fault {
	return func(w http.ResponseWriter, r *http.Request, data []byte) {
		n := len(data) + delta
		w.Header().Set("Content-Length", fmt.Sprint(n))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:min(n, len(data))])
		if delta > 0 {
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
	}
}

// Always is a plan that gives every one of the first n requests f.
func Always(n int, f Fault) map[int]Fault {
	p := map[int]Fault{}
	for i := 1; i <= n; i++ {
		p[i] = f
	}
	return p
}
