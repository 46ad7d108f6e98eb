package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// TestMaliciousServers: servers that drip, redirect in a loop or to
// another scheme, answer the wrong range, lie in Content-Length, or
// ignore Range. Each read ends with the file's exact bytes or a clear
// error, and leaves no goroutine nor file descriptor behind. Not
// parallel: the counts are the whole process's.
func TestMaliciousServers(t *testing.T) {
	dir, blobHex, blob, idx := staticRepo(t, 1<<20+7)
	size := int64(len(blob))
	cut := testkit.CutAt(testkit.Half)
	cases := []struct {
		name string
		plan plan
		want error  // nil: the read succeeds
		msg  string // in the error
	}{
		// A byte a second passes a timeout on silence; StallBytes in
		// StallTimeout catches it, and the drip is no progress.
		{"drips a byte a second", testkit.Always(10, testkit.Drip(time.Second)), errStalled, "gave up after 3 attempts"},
		{"redirect loop", testkit.Always(20, testkit.RedirectTo("")), ErrProtocol, "more than 10 redirects"},
		{"redirect to file://", plan{1: testkit.RedirectTo("file:///etc/passwd")}, ErrProtocol, `redirect to "file:///etc/passwd"`},
		{"redirect to ftp://", plan{1: testkit.RedirectTo("ftp://127.0.0.1/x")}, ErrProtocol, `redirect to "ftp://127.0.0.1/x"`},
		{"redirect then fine", plan{1: testkit.RedirectTo("/" + BlobPath(blobHex) + "?again")}, nil, ""},
		{"Range answered from byte 0", plan{1: cut, 2: testkit.WrongRange}, ErrProtocol, "Content-Range"},
		{"Content-Length longer than the file", plan{1: testkit.LengthLie(100)}, ErrProtocol, "the server has"},
		{"Content-Length shorter than the file", plan{1: testkit.LengthLie(-100)}, ErrProtocol, "the server has"},
		{"Content-Length longer after a cut", plan{1: cut, 2: testkit.LengthLie(100)}, ErrProtocol, "the server has"},
		{"200 and the whole file to a Range", plan{1: cut, 2: testkit.WholeIgnoringRange}, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leaks := testkit.CountLeaks(t)
			srv := faults(dir, tc.plan)
			hs := httptest.NewServer(srv)
			c := testClient()
			c.HTTP = NewHTTPClient()
			c.StallTimeout = 1500 * time.Millisecond
			got, err := readAll(t, c, hs.URL+"/", blobHex, 0, size)
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("%v", err)
			case tc.want == nil && !bytes.Equal(got, blob):
				t.Errorf("read %d bytes that differ from the file's %d", len(got), len(blob))
			case tc.want != nil:
				testkit.WantErr(t, err, []error{tc.want}, tc.msg)
			}
			t.Logf("%v; requests %d", err, len(srv.Requests()))
			c.HTTP.CloseIdleConnections()
			hs.Close()
			leaks.Check(t, tc.name)
		})
	}

	// The index, read whole: a lying length, a loop, a drip.
	idxCases := []struct {
		name string
		plan plan
		want error
	}{
		{"index drips", testkit.Always(10, testkit.Drip(time.Second)), errStalled},
		{"index redirect loop", testkit.Always(20, testkit.RedirectTo("")), ErrProtocol},
		{"index Content-Length longer", testkit.Always(10, testkit.LengthLie(10)), io.ErrUnexpectedEOF},
	}
	for _, tc := range idxCases {
		t.Run(tc.name, func(t *testing.T) {
			leaks := testkit.CountLeaks(t)
			hs := httptest.NewServer(faults(dir, tc.plan))
			c := testClient()
			c.HTTP = NewHTTPClient()
			c.StallTimeout = 1500 * time.Millisecond
			got, err := c.Get(context.Background(), hs.URL+"/", IndexFile, 1<<20)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %q, %v; want %v (the index is %q)", got, err, tc.want, idx)
			}
			c.HTTP.CloseIdleConnections()
			hs.Close()
			leaks.Check(t, tc.name)
		})
	}

	// A server that drips its status line: the stall timer covers the
	// wait for the response's header too.
	t.Run("drips the header", func(t *testing.T) {
		leaks := testkit.CountLeaks(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer conn.Close()
					for _, b := range []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello") {
						if _, err := conn.Write([]byte{b}); err != nil {
							return
						}
						time.Sleep(time.Second)
					}
				}()
			}
		}()
		c := testClient()
		c.HTTP = NewHTTPClient()
		c.StallTimeout = 1500 * time.Millisecond
		start := time.Now()
		_, err = c.Get(context.Background(), "http://"+ln.Addr().String()+"/", IndexFile, 1<<20)
		if !errors.Is(err, errStalled) || !strings.Contains(err.Error(), "stalled") {
			t.Errorf("got %v, want a stall", err)
		}
		t.Logf("%v after %v", err, time.Since(start))
		c.HTTP.CloseIdleConnections()
		ln.Close()
		<-done
		// The handlers end at their next write to the closed connection.
		leaks.Check(t, "drips the header")
	})
}
