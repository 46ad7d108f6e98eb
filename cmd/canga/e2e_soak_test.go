package main_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// soakDuration reads CANGA_SOAK: "" no soak, "1" a minute, else a Go
// duration ("10m").
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("CANGA_SOAK")
	switch v {
	case "":
		t.Skip("the soak runs with CANGA_SOAK=1 (60 s) or CANGA_SOAK=DURATION, as in CI and `make soak`")
	case "1":
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("CANGA_SOAK=%q: want 1 or a duration such as 10m", v)
	}
	return d
}

// soakRun is one canga run of the soak: what it did and how it ended.
type soakRun struct {
	op         string // add, tag, del, gc, import, pull
	id         string // the image it adds or deletes
	start, end time.Time
	killed     bool
	code       int
	maxRSS     int64 // KiB, of a run that was not killed
	out        string
}

// soakLimit is the peak RSS no canga run of the soak may reach, KiB: the
// memory bound of issue 5, whatever else runs beside it.
const soakLimit = 128 << 10

// TestSoak runs 8 processes doing random add, tag, del, gc, import and
// pull against one repository and one canga serve for CANGA_SOAK, with a
// few SIGKILLs. Then: fsck passes, every image whose add or import
// succeeded is there with its ID unless a del may have removed it, the
// pulled images are in the cache, and no run's peak RSS passed soakLimit.
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	pub := smallPublisher(t)
	url := remServe(t, remCopyRepo(t, pub.Repo))
	home, other := otherRepoHome(t)
	cache := filepath.Join(home, "cache-"+remName)
	conf := testkit.ReadFile(t, filepath.Join(home, "config.yaml"))
	conf = append(conf, fmt.Sprintf("  %s:\n    url: %s\n    path: %s\n", remName, url, cache)...)
	testkit.WriteFile(t, filepath.Join(home, "config.yaml"), conf, 0o644)
	testkit.Run(t, "cp", "-a", pub.Repo+"/.", other)
	ok(t, home, "fetch")

	// Images to add and delete: 1 to 2 MiB of random data each.
	work := t.TempDir()
	const nFiles = 6
	files, ids := make([]string, nFiles), make([]string, nFiles)
	for i := range files {
		b := make([]byte, (1+i%2)<<20)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		files[i] = filepath.Join(work, fmt.Sprintf("img%d.raw", i))
		testkit.WriteFile(t, files[i], append(b, make([]byte, 2<<20)...), 0o644)
		ids[i] = testkit.RawDigest(t, files[i]).String()
	}

	rssDir := t.TempDir()
	var mu sync.Mutex
	var runs []soakRun
	run := func(w int, op, id string, kill bool, args ...string) {
		rssFile := filepath.Join(rssDir, fmt.Sprintf("w%d", w))
		cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile, cangaBin, "-q"}, args...)...)
		cmd.Env = cangaEnv(home)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		r := soakRun{op: op, id: id, start: time.Now()}
		if err := cmd.Start(); err != nil {
			t.Errorf("start canga: %v", err)
			return
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		var timer <-chan time.Time
		if kill {
			timer = time.After(time.Duration(mrand.IntN(300)) * time.Millisecond)
		}
		select {
		case err = <-done:
		case <-timer:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
		case <-time.After(5 * time.Minute):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			t.Errorf("canga %v: still running after 5 minutes", args)
			return
		}
		r.end, r.out = time.Now(), out.String()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled():
			r.killed = true
		case errors.As(err, &ee):
			r.code = ee.ExitCode()
		case err != nil:
			t.Errorf("canga %v: %v", args, err)
			return
		}
		if !r.killed {
			b, err := os.ReadFile(rssFile)
			if err != nil {
				t.Errorf("time -o %s: %v", rssFile, err)
				return
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if _, err := fmt.Sscan(lines[len(lines)-1], &r.maxRSS); err != nil {
				t.Errorf("time -o: %q: %v", b, err)
			}
			if strings.Contains(r.out, "panic") || strings.Contains(r.out, "goroutine ") {
				t.Errorf("canga %v: a panic\n%s", args, r.out)
			}
		}
		if r.code == 0 && !r.killed && (op == "add" || op == "import") {
			if got := strings.TrimSpace(lastLine(r.out)); got != id {
				t.Errorf("canga %v printed %q, want %s", args, r.out, id)
			}
		}
		mu.Lock()
		runs = append(runs, r)
		mu.Unlock()
	}

	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for n := 0; time.Now().Before(deadline); n++ {
				kill := rng.IntN(25) == 0
				i := rng.IntN(nFiles)
				switch op := rng.IntN(10); {
				case op < 3:
					run(w, "add", ids[i], kill, "add", files[i], "--tag", fmt.Sprintf("w%d-%d", w, n))
				case op < 5:
					run(w, "tag", "", kill, "tag", fmt.Sprintf("t%d", rng.IntN(4)), ids[i])
				case op < 7:
					run(w, "del", ids[i], kill, "del", "default:"+ids[i])
				case op < 8:
					run(w, "gc", "", kill, "gc")
				case op < 9:
					run(w, "import", pub.ChildID, kill, "import", "other:child")
				default:
					run(w, "pull", pub.ChildID, kill, "pull", remName+":child")
				}
			}
		}()
	}
	wg.Wait()

	// The final state.
	ok(t, home, "fsck")
	ok(t, home, "fsck", remName)
	ok(t, home, "fsck", "other")
	items := listJSON(t, home)
	known := map[string]bool{pub.BaseID: true, pub.ChildID: true}
	for _, id := range ids {
		known[id] = true
	}
	for _, it := range items {
		if !known[it.ID] {
			t.Errorf("list has an image nobody added: %+v", it)
		}
	}
	counts := map[string][3]int{} // op -> ok, failed, killed
	var peak int64
	for _, r := range runs {
		c := counts[r.op]
		switch {
		case r.killed:
			c[2]++
		case r.code == 0:
			c[0]++
		default:
			c[1]++
		}
		counts[r.op] = c
		peak = max(peak, r.maxRSS)
		if r.maxRSS >= soakLimit {
			t.Errorf("canga %s: peak RSS %d KiB, want < %d", r.op, r.maxRSS, soakLimit)
		}
		// Unexpected failures: anything but a del or tag of an image
		// deleted meanwhile, or a run that met a lock held by a killed
		// one (there is none: locks die with their process).
		if !r.killed && r.code != 0 && r.op != "del" && r.op != "tag" {
			t.Errorf("canga %s failed:\n%s", r.op, r.out)
		}
	}
	// An image whose add or import succeeded must be there unless a del
	// that was not certainly before it succeeded or was killed.
	for _, r := range runs {
		if r.killed || r.code != 0 {
			continue
		}
		switch r.op {
		case "add", "import":
			mayBeGone := false
			for _, d := range runs {
				if d.op == "del" && d.id == r.id && (d.killed || d.code == 0) && !d.end.Before(r.start) {
					mayBeGone = true
				}
			}
			if !mayBeGone && remFindItem(items, "default", r.id) == nil {
				t.Errorf("%s %s succeeded at %v and nothing deleted it after, but it is not listed", r.op, r.id, r.end)
			}
			if r.op == "import" && remFindItem(items, "default", pub.BaseID) == nil {
				t.Errorf("import of the child succeeded, but its parent is not listed")
			}
		case "pull":
			if p := remPresent(t, home, remName); !p[pub.ChildID] || !p[pub.BaseID] {
				t.Errorf("pull succeeded, but the cache has %v", p)
			}
		}
	}
	for _, it := range items {
		if it.Repo == "default" && it.Present {
			out := filepath.Join(work, "check.raw")
			ok(t, home, "export", "-O", "raw", "default:"+it.ID, out)
			if got := testkit.Sha256sum(t, out).String(); got != it.ID {
				t.Errorf("export of %s: sha256sum %s", it.ID, got)
			}
		}
	}
	ok(t, home, "gc")
	if names := tmpEntries(t, home); len(names) != 0 {
		t.Errorf("gc after the soak left .tmp/%v", names)
	}
	t.Logf("%v, %d runs (ok, failed, killed): %v; peak RSS %d MiB", dur, len(runs), counts, peak>>10)
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
