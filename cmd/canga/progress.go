package main

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"
)

// progress is a byte-counting bar on a terminal, and nothing elsewhere.
type progress struct {
	p     *mpb.Progress
	bar   *mpb.Bar
	mu    sync.Mutex
	last  int64
	total int64
	start time.Time
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return false
	}
	// A terminal without a size (a bare pty) cannot show a bar: mpb would
	// print lines of width zero.
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	return err == nil && ws.Col > 0
}

// newProgress starts a bar of total bytes named label, unless the user
// asked for quiet or stderr is not a terminal: then every method is a no-op.
func (e *env) newProgress(label string, total int64) *progress {
	if e.quiet || !isTerminal(e.stderr) {
		return &progress{}
	}
	p := mpb.New(mpb.WithOutput(e.stderr), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
	bar := p.AddBar(total,
		mpb.PrependDecorators(decor.Name(label, decor.WCSyncSpaceR), decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WCSyncSpace), decor.Name(" ETA "), decor.AverageETA(decor.ET_STYLE_GO)),
	)
	return &progress{p: p, bar: bar, total: total, start: time.Now()}
}

// set moves the bar to done bytes. It is safe for concurrent use.
func (pr *progress) set(done int64) {
	if pr.bar == nil {
		return
	}
	pr.mu.Lock()
	switch {
	case done > pr.last:
		pr.bar.EwmaIncrInt64(done-pr.last, time.Since(pr.start))
		pr.last = done
	case done < pr.last: // a download restarted
		pr.bar.SetCurrent(done)
		pr.last = done
	}
	pr.mu.Unlock()
}

// setTotal changes the bar's total, for work whose size grows as it goes.
func (pr *progress) setTotal(total int64) {
	if pr.bar == nil {
		return
	}
	pr.mu.Lock()
	if total != pr.total {
		pr.total = total
		pr.bar.SetTotal(total, false)
	}
	pr.mu.Unlock()
}

// done finishes the bar; ok=false removes it (the command failed).
func (pr *progress) done(ok bool) {
	if pr.bar == nil {
		return
	}
	if ok {
		pr.bar.SetTotal(-1, true)
	} else {
		pr.bar.Abort(true)
	}
	pr.p.Wait()
}
