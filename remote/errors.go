package remote

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors. Every error of this package wraps one of them, or an
// error of net/http or the context, so that callers branch with errors.Is.
var (
	// ErrNotFound: the server answered 404 (or 410).
	ErrNotFound = errors.New("remote: not found")
	// ErrHTTP is matched by every [*StatusError].
	ErrHTTP = errors.New("remote: unexpected HTTP status")
	// ErrTooLarge: a file holds more than the caller's bound.
	ErrTooLarge = errors.New("remote: response too large")
	// ErrProtocol: the server answered in a way a correct static server
	// never does (a Content-Range that is not the one asked for, a length
	// that is not the file's, an encoding applied to the bytes).
	ErrProtocol = errors.New("remote: bad server response")
	// ErrBadURL: a base URL or a path relative to it is unusable.
	ErrBadURL = errors.New("remote: bad URL")
	// ErrInternal: canga met a bug of its own, such as a panic while it
	// served; the error says what it was doing.
	ErrInternal = errors.New("remote: internal error")
	// errStalled: no byte arrived for Client.StallTimeout.
	errStalled = errors.New("remote: transfer stalled")
)

// StatusError is an HTTP response with a status the request cannot use.
// It matches [ErrHTTP], and also [ErrNotFound] for 404 and 410.
type StatusError struct {
	URL    string
	Status int
	// RetryAfter is the server's Retry-After, in seconds; 0 if none.
	RetryAfter int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("remote: GET %s: %d %s", e.URL, e.Status, http.StatusText(e.Status))
}

// Is makes errors.Is(err, ErrHTTP) true, and errors.Is(err, ErrNotFound)
// for a missing file.
func (e *StatusError) Is(target error) bool {
	return target == ErrHTTP || (target == ErrNotFound && (e.Status == http.StatusNotFound || e.Status == http.StatusGone))
}

// transient reports whether the same request may succeed later.
func (e *StatusError) transient() bool {
	switch e.Status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return false
	}
	return e.Status >= 500 && e.Status <= 599
}

// transferError marks a failure of the connection while a body was being
// read: the download can go on from where it stopped.
type transferError struct{ err error }

func (e *transferError) Error() string { return "remote: transfer interrupted: " + e.err.Error() }
func (e *transferError) Unwrap() error { return e.err }

// permanent marks an error that retrying cannot fix.
type permanent struct{ err error }

func (e *permanent) Error() string { return e.err.Error() }
func (e *permanent) Unwrap() error { return e.err }

// quote shows a string from a server or a file in an error message, cut to
// a readable length: a backing file name may hold 1023 bytes.
func quote(s string) string {
	const max = 120
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
