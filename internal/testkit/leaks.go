package testkit

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// Leaks counts the goroutines and open file descriptors of the test
// process, to compare with later by [Leaks.Check]. It is only meaningful
// in a test that runs alone (not parallel).
type Leaks struct{ goroutines, fds int }

// CountLeaks takes the counts now.
func CountLeaks(t testing.TB) Leaks {
	t.Helper()
	return Leaks{runtime.NumGoroutine(), openFDs(t)}
}

// Check fails the test when, after up to 10 s for what is closing to go,
// the process has more goroutines or file descriptors than at CountLeaks.
func (l Leaks) Check(t testing.TB, what string) {
	t.Helper()
	var g, fds int
	for deadline := time.Now().Add(10 * time.Second); ; {
		g, fds = runtime.NumGoroutine(), openFDs(t)
		if g <= l.goroutines && fds <= l.fds {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	t.Errorf("%s: %d goroutines and %d open files, were %d and %d\n%s", what, g, fds, l.goroutines, l.fds, buf)
}

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count open files: %v", err)
	}
	return len(ents)
}
