package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Lock is the held repository lock: an exclusive flock on REPO/.lock. flock
// belongs to the open file, so two Locks of one process exclude each other
// just as two processes do, and the kernel drops the lock of a process that
// dies, so a crash never leaves a stale lock behind.
type Lock struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

// Lock takes the repository lock for a writer, waiting (polling with
// back-off) while another holder has it. When ctx ends first the error
// matches [ErrBusy] and ctx.Err(), and names the holder's pid if known. A
// repository that cannot be written gives an error matching [ErrReadOnly].
// Readers never lock: see the package comment.
func (s *Store) Lock(ctx context.Context) (*Lock, error) {
	path := filepath.Join(s.dir, lockName)
	if err := ctx.Err(); err != nil {
		return nil, wrap("lock", s.dir, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|noFollow, 0o644)
	if err != nil {
		return nil, wrap("lock", s.dir, notWritable(err))
	}
	var b backoff
	for {
		ok, err := tryLock(f)
		if err != nil {
			_ = f.Close()
			return nil, wrap("lock", s.dir, err)
		}
		if ok {
			break
		}
		if err := b.wait(ctx); err != nil {
			_ = f.Close()
			return nil, wrap("lock", s.dir, fmt.Errorf("%w: repository locked%s: %w", ErrBusy, holder(path), err))
		}
	}
	// The pid is only there to name the holder in a waiter's error, so a
	// failure to write it (a full disk) must not cost the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f, path: path}, nil
}

// holder describes the process named in the lock file, if any.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 32 {
		return ""
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return ""
	}
	return fmt.Sprintf(" by pid %d", pid)
}

// Unlock releases the lock. Calling it again does nothing.
func (l *Lock) Unlock() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	// Forget the pid first, so that nobody is named as holder after we left.
	_ = l.f.Truncate(0) // informational only, see Lock
	err := l.f.Close()
	l.f = nil
	return wrap("unlock", l.path, err)
}

// heldFor checks that l is held and is the lock of s: the proof GC asks for.
func (l *Lock) heldFor(s *Store) error {
	if l == nil {
		return ErrNotLocked
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return fmt.Errorf("%w (released)", ErrNotLocked)
	}
	fi, err := l.f.Stat()
	if err != nil {
		return err
	}
	li, err := os.Lstat(filepath.Join(s.dir, lockName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err != nil || !os.SameFile(fi, li) {
		return fmt.Errorf("%w (lock of another repository)", ErrNotLocked)
	}
	return nil
}
