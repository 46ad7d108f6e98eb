package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// startCanga starts canga without waiting for it.
func startCanga(t *testing.T, home string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(cangaBin, args...)
	cmd.Env = cangaEnv(home)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// SPEC §2: a crash at any moment leaves a repository that fsck passes.
// canga add of a 256 MiB disk is killed with SIGKILL at moments spread
// over its whole run, denser near the end where the blob and the index are
// committed; after each kill the repository must pass fsck and list.
func TestAddKilledAtAnyMoment(t *testing.T) {
	if testing.Short() {
		t.Skip("kills canga add a few dozen times")
	}
	home := t.TempDir()
	big := bigRaw(t)
	addID(t, home, otherRaw(t), "--tag", "other")

	// How long an add takes here, in this repository: the longer of two.
	var normal time.Duration
	bigID := testkit.RawDigest(t, big).String()
	for range 2 {
		start := time.Now()
		if id := addID(t, home, big); id != bigID {
			t.Fatalf("add: %s, want %s", id, bigID)
		}
		normal = max(normal, time.Since(start))
		ok(t, home, "del", bigID)
	}
	t.Logf("canga add of %s: %v", filepath.Base(big), normal)

	var delays []time.Duration
	for i := range 16 { // 0 .. 0.94 of the run
		delays = append(delays, normal*time.Duration(i)/16)
	}
	for i := range 10 { // 0.8 .. 1.25 of the run: the commits
		delays = append(delays, normal*time.Duration(80+5*i)/100)
	}

	completed, orphans := 0, 0
	try := func(i int, d time.Duration) {
		cmd, out := startCanga(t, home, "add", big, "--tag", "big")
		time.Sleep(d)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		killed := ws.Signaled()
		if !killed && err != nil {
			t.Fatalf("kill %d at %v: add failed on its own: %v\n%s", i, d, err, out)
		}
		r := canga(t, home, "fsck")
		if r.code != 0 {
			t.Fatalf("kill %d after %v (killed: %v): fsck fails\n%v\nindex and blobs: %s", i, d, killed, r, describeRepo(t, home))
		}
		if strings.Contains(r.stdout, "unused blob") {
			orphans++ // killed between the blob's commit and the index's
		}
		items := listJSON(t, home)
		for _, it := range items {
			if it.ID != bigID && !slices.Contains(it.Tags, "other") {
				t.Fatalf("kill %d: list has an image nobody added: %+v", i, it)
			}
		}
		if findItem(items, bigID) != nil {
			completed++
			// Delete it again, so that the next add commits anew.
			ok(t, home, "del", bigID)
		}
	}
	for i, d := range delays {
		try(i, d)
	}
	// The kills must straddle the end of the run, or the commit was never
	// put at risk: on a slow moment, go on later until an add gets in.
	for i := 0; completed == 0 && i < 10; i++ {
		try(len(delays)+i, normal*time.Duration(130+20*i)/100)
	}
	if completed == 0 {
		t.Errorf("no add completed even at 3x its normal duration")
	}
	t.Logf("%d kills: %d adds got in before their kill, %d left an unused blob", len(delays), completed, orphans)

	ok(t, home, "gc")
	if names := tmpEntries(t, home); len(names) != 0 {
		t.Errorf("gc left .tmp/%v", names)
	}
	if id := addID(t, home, big, "--tag", "big"); id != bigID {
		t.Errorf("final add: %s, want %s", id, bigID)
	}
	ok(t, home, "fsck")
	requireBlobsNamedByDigest(t, home)
	if items := listJSON(t, home); len(items) != 2 {
		t.Errorf("list: %+v", items)
	}
}

func describeRepo(t *testing.T, home string) string {
	st := snapshot(t, home)
	return fmt.Sprintf("index.yaml:\n%s\nblobs: %v\n.tmp: %v", st.index, sortedKeys(st.blobs), tmpEntries(t, home))
}

// Writers of one repository are serialised: adds of different images and
// tags, all at once, all land.
func TestConcurrentWriters(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	baseID := addID(t, home, baseRaw(t), "--tag", "base")
	otherID := addID(t, home, otherRaw(t), "--tag", "other")

	// Images to add: overlays on the base (deltas) and standalone ones.
	const n = 6
	files := make([]string, n)
	for i := range files {
		p := filepath.Join(work, fmt.Sprintf("img%d.qcow2", i))
		if i%2 == 0 {
			ok(t, home, "overlay", "base", p)
		} else {
			testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "32M")
		}
		testkit.QemuIO(t, "qcow2", p, fmt.Sprintf("write -P %d %dM 256k", 0x30+i, 1+i))
		files[i] = p
	}
	ids := make([]string, n)
	for i, f := range files {
		ids[i] = testkit.RawDigest(t, f).String()
	}

	type job struct {
		args []string
		res  result
	}
	var jobs []*job
	for i, f := range files {
		jobs = append(jobs, &job{args: []string{"add", f, "--tag", fmt.Sprintf("img%d", i)}})
	}
	for i := range n {
		target := baseID
		if i%2 == 1 {
			target = otherID
		}
		jobs = append(jobs, &job{args: []string{"tag", fmt.Sprintf("t%d", i), target}})
	}
	// Several processes moving one tag: any of them may win.
	for i := range 3 {
		jobs = append(jobs, &job{args: []string{"tag", "contested", []string{"base", "other", "base"}[i]}})
	}
	// The same image added by several processes at once: one blob, every tag.
	for _, tg := range []string{"dup-a", "dup-b"} {
		jobs = append(jobs, &job{args: []string{"add", files[0], "--tag", tg}})
	}
	// Readers meanwhile never see a torn index.
	for range 3 {
		jobs = append(jobs, &job{args: []string{"list", "--json"}}, &job{args: []string{"fsck"}})
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j.res = canga(t, home, j.args...)
		}()
	}
	wg.Wait()
	for _, j := range jobs {
		if j.res.code != 0 {
			t.Errorf("%v", j.res)
		}
		if j.args[0] == "list" && !json.Valid([]byte(j.res.stdout)) {
			t.Errorf("list --json during writes: not JSON\n%v", j.res)
		}
	}

	items := listJSON(t, home)
	if len(items) != n+2 {
		t.Errorf("list has %d images, want %d", len(items), n+2)
	}
	for i, id := range ids {
		it := findItem(items, id)
		if it == nil {
			t.Errorf("image %d (%s) is missing", i, id)
			continue
		}
		if !slices.Contains(it.Tags, fmt.Sprintf("img%d", i)) {
			t.Errorf("image %d tags %v", i, it.Tags)
		}
		if wantParent := map[bool]string{true: baseID, false: ""}[i%2 == 0]; it.Parent != wantParent {
			t.Errorf("image %d parent %q, want %q", i, it.Parent, wantParent)
		}
		testkit.QemuCompare(t, blobPath(home, it.Blob), files[i])
	}
	tags := map[string]string{}
	for _, it := range items {
		for _, tg := range it.Tags {
			tags[tg] = it.ID
		}
	}
	for i := range n {
		want := baseID
		if i%2 == 1 {
			want = otherID
		}
		if tags[fmt.Sprintf("t%d", i)] != want {
			t.Errorf("tag t%d -> %q, want %s", i, tags[fmt.Sprintf("t%d", i)], want)
		}
	}
	for _, tg := range []string{"dup-a", "dup-b"} {
		if tags[tg] != ids[0] {
			t.Errorf("tag %s -> %q, want %s", tg, tags[tg], ids[0])
		}
	}
	if c := tags["contested"]; c != baseID && c != otherID {
		t.Errorf("tag contested -> %q", c)
	}
	if r := canga(t, home, "fsck"); r.code != 0 || !strings.Contains(r.stdout, "0 faults") || strings.Contains(r.stdout, "unused") {
		t.Errorf("%v", r)
	}
	if names := qcow2Blobs(t, home); len(names) != n+2 {
		t.Errorf("%d blobs for %d images", len(names), n+2)
	}
	requireBlobsNamedByDigest(t, home)
}

// gc, run again and again while an add is at work, never takes the add's
// temp file nor its fresh blob.
func TestGCDuringAdd(t *testing.T) {
	home := t.TempDir()
	addID(t, home, otherRaw(t), "--tag", "other")
	big := bigRaw(t)
	bigID := testkit.RawDigest(t, big).String()
	for round := range 1 {
		cmd, out := startCanga(t, home, "add", big, "--tag", "big")
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		gcs := 0
	loop:
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("add with gc running beside it: %v\n%s", err, out)
				}
				break loop
			default:
				ok(t, home, "gc")
				gcs++
			}
		}
		t.Logf("round %d: %d gc runs during the add", round, gcs)
		if gcs < 2 {
			t.Errorf("gc ran only %d times during the add", gcs)
		}
		if it := findItem(listJSON(t, home), bigID); it == nil {
			t.Fatalf("the image is not in the list")
		}
		if r := canga(t, home, "fsck"); r.code != 0 || !strings.Contains(r.stdout, "0 faults") || strings.Contains(r.stdout, "unused") {
			t.Fatalf("%v", r)
		}
		ok(t, home, "del", bigID)
	}
}
