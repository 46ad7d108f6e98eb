package cas

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cangallo/canga/internal/atomicfile"
	"github.com/opencontainers/go-digest"
)

// GCReport says what [Store.GC] did.
type GCReport struct {
	// Blobs are the unreferenced blobs removed.
	Blobs []BlobInfo
	// Temp are the names removed from .tmp/: debris of dead processes.
	Temp []string
	// Busy are the names in .tmp/ kept because a live process holds them.
	Busy []string
	// Junk is what blobs/ holds besides blobs; gc leaves it for a person to
	// look at (fsck reports it too).
	Junk []Junk
	// BytesFreed counts the removed blobs and temp files.
	BytesFreed int64
}

// GC removes every .tmp/ entry that no live process holds and every blob
// for which keep returns false. The caller holds the repository lock and
// passes it as proof, because keep is only right while nobody can add to the
// index; GC refuses ([ErrNotLocked]) otherwise. On error the report says what
// was removed before it.
func (s *Store) GC(ctx context.Context, lk *Lock, keep func(digest.Digest) bool) (GCReport, error) {
	var rep GCReport
	if err := lk.heldFor(s); err != nil {
		return rep, wrap("gc", s.dir, err)
	}
	if keep == nil {
		return rep, wrap("gc", s.dir, errors.New("nil keep function"))
	}
	if err := s.sweepTmp(ctx, &rep); err != nil {
		return rep, wrap("gc", s.dir, err)
	}
	// Only the blobs to remove are stat'ed: a store may hold 100,000.
	blobs, junk, err := s.Digests(ctx)
	if err != nil {
		return rep, err
	}
	rep.Junk = junk
	removed := false
	for i, d := range blobs {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return rep, wrap("gc", s.dir, err)
			}
		}
		if keep(d) {
			continue
		}
		p := s.blobPath(d)
		fi, err := os.Lstat(p)
		if err == nil {
			err = os.Remove(p)
		}
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return rep, wrap("gc", s.dir, notWritable(err))
		}
		removed = true
		rep.Blobs = append(rep.Blobs, BlobInfo{Digest: d, Size: fi.Size(), Mode: fi.Mode().Perm()})
		rep.BytesFreed += fi.Size()
	}
	if removed {
		if err := atomicfile.SyncDir(s.blobDir()); err != nil {
			return rep, wrap("gc", s.dir, err)
		}
	}
	return rep, nil
}

// sweepTmp removes the .tmp/ entries whose flock it can take: a holder would
// have it, and a dead process holds nothing.
func (s *Store) sweepTmp(ctx context.Context, rep *GCReport) error {
	entries, err := os.ReadDir(s.tmpPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := filepath.Join(s.tmpPath(), e.Name())
		if !e.Type().IsRegular() {
			// Nothing of ours makes directories, links or FIFOs in .tmp/, so
			// nobody can be using them through cas.
			n := treeSize(p)
			if err := os.RemoveAll(p); err != nil {
				return notWritable(err)
			}
			rep.Temp = append(rep.Temp, e.Name())
			rep.BytesFreed += n
			continue
		}
		n, removed, err := removeUnheld(p)
		if err != nil {
			return err
		}
		if removed {
			rep.Temp = append(rep.Temp, e.Name())
			rep.BytesFreed += n
		} else if n >= 0 {
			rep.Busy = append(rep.Busy, e.Name())
		}
	}
	return nil
}

// removeUnheld unlinks the regular file p if it can flock it, and unlinks it
// while holding the flock, so a creator that flocks after us sees its name
// gone and starts over. n is -1 when p vanished on its own.
func removeUnheld(p string) (n int64, removed bool, err error) {
	// O_NONBLOCK: a FIFO swapped in since ReadDir must not hang gc.
	f, err := os.OpenFile(p, os.O_RDONLY|noFollow|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return -1, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close() // read-only, and the flock goes with it
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	ok, err := lockedAndLinked(f)
	if err != nil {
		return 0, false, err
	}
	if !ok {
		if linked, _ := stillLinked(f); !linked {
			return -1, false, nil
		}
		return fi.Size(), false, nil
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return -1, false, nil
		}
		return 0, false, notWritable(err)
	}
	return fi.Size(), true, nil
}

// treeSize adds up the regular files under p, for the report only.
func treeSize(p string) int64 {
	var n int64
	_ = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable parts count as zero; this is a report
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
