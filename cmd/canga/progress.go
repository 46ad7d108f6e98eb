package main

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
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
	if !term.IsTerminal(int(f.Fd())) {
		return false
	}
	// A terminal without a size (a bare pty) cannot show a bar: mpb would
	// print lines of width zero.
	cols, _, err := term.GetSize(int(f.Fd()))
	return err == nil && cols > 0
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

// transfer shows a copy of blobs on a terminal: one bar per blob, named
// by its image, and one for the total; nothing elsewhere.
type transfer struct {
	p     *mpb.Progress
	label string
	mu    sync.Mutex
	blobs map[string]*transferBar
	order []string
	total *mpb.Bar
}

type transferBar struct {
	bar        *mpb.Bar
	done, size int64
}

func (e *env) newTransfer(label string) *transfer {
	if e.quiet || !isTerminal(e.stderr) {
		return &transfer{}
	}
	p := mpb.New(mpb.WithOutput(e.stderr), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
	return &transfer{p: p, label: label, blobs: map[string]*transferBar{}}
}

func byteBar(p *mpb.Progress, name string, total int64) *mpb.Bar {
	return p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WCSyncSpace)),
	)
}

// update moves the bar of blob name to done of size bytes (size -1:
// not known yet). It is safe for concurrent use.
func (t *transfer) update(name string, done, size int64) {
	if t.p == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.blobs[name]
	if b == nil {
		b = &transferBar{bar: byteBar(t.p, name, max(size, 0)), size: -1}
		t.blobs[name] = b
		t.order = append(t.order, name)
	}
	if size != b.size {
		b.size = size
		b.bar.SetTotal(max(size, 0), false)
	}
	b.done = done
	b.bar.SetCurrent(done)
	var sum, total int64
	for _, n := range t.order {
		sum += t.blobs[n].done
		total += max(t.blobs[n].size, t.blobs[n].done)
	}
	if len(t.order) > 1 {
		if t.total == nil {
			t.total = byteBar(t.p, t.label+" (total)", total)
		}
		t.total.SetTotal(total, false)
		t.total.SetCurrent(sum)
	}
}

// done finishes the bars; ok=false removes them (the command failed).
func (t *transfer) done(ok bool) {
	if t.p == nil {
		return
	}
	t.mu.Lock()
	bars := []*mpb.Bar{}
	for _, n := range t.order {
		bars = append(bars, t.blobs[n].bar)
	}
	if t.total != nil {
		bars = append(bars, t.total)
	}
	t.mu.Unlock()
	for _, b := range bars {
		if ok {
			b.SetTotal(-1, true)
		} else {
			b.Abort(true)
		}
	}
	t.p.Wait()
}
