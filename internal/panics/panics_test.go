package panics

import (
	"errors"
	"strings"
	"testing"
)

func TestRecover(t *testing.T) {
	errBug := errors.New("x: internal error")
	run := func() (err error) {
		defer Recover(&err, errBug, func() string { return "reading cluster 7 of a.qcow2" })
		var s []int
		_ = s[len(s)] // an index out of range: a real runtime panic
		return nil
	}
	err := run()
	if !errors.Is(err, errBug) || !strings.Contains(err.Error(), "reading cluster 7 of a.qcow2") || !strings.Contains(err.Error(), "index out of range") {
		t.Fatalf("got %v", err)
	}
	ok := func() (err error) {
		defer Recover(&err, errBug, func() string { t.Fatal("what called without a panic"); return "" })
		return nil
	}
	if err := ok(); err != nil {
		t.Fatal(err)
	}
}
