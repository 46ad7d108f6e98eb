// Package panics turns a panic in a goroutine into an error. A recover in
// main covers only main's goroutine: every worker pool of canga
// (decompression, compression, hashing, downloads) recovers its own, so
// that a bug met on a hostile input is a clear error naming the input,
// never a crash with a trace.
package panics

import "fmt"

// Recover, deferred at the top of a goroutine, turns a panic into *err:
// an error wrapping sentinel (the package's "internal error") that says
// what was being done and what the panic said. It must be the deferred
// function itself (defer panics.Recover(...)): recover works in no other
// place, so a wrapper around it would recover nothing.
func Recover(err *error, sentinel error, what func() string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: panic while %s: %v", sentinel, what(), r)
	}
}
