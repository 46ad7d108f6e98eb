package cas

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestLockInProcess(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	l1, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Lock(short)
	if !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock = %v, want ErrBusy and DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Lock took %v to honour a 100ms deadline", el)
	}

	cancelled, cancel2 := context.WithCancel(ctx)
	cancel2()
	if _, err := s.Lock(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock with a cancelled ctx = %v", err)
	}

	// A waiter gets the lock soon after it is released.
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		l2, err := s.Lock(wctx)
		if err == nil {
			err = l2.Unlock()
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := l1.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if err := l1.Unlock(); err != nil {
		t.Errorf("second Unlock: %v", err)
	}
	var nilLock *Lock
	if err := nilLock.Unlock(); err != nil {
		t.Errorf("nil Unlock: %v", err)
	}
}

// The lock excludes other processes, names its holder, and vanishes with a
// holder that is killed.
func TestLockAcrossProcesses(t *testing.T) {
	s := newStore(t)
	h := startHelper(t, "hold-lock", "CAS_REPO="+s.Dir())

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := s.Lock(ctx)
	if !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while a process holds it = %v", err)
	}
	if want := fmt.Sprintf("locked by pid %d", h.cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not say %q", err, want)
	}

	h.kill()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	lk, err := s.Lock(ctx2)
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	if err := lk.Unlock(); err != nil {
		t.Fatal(err)
	}
}
