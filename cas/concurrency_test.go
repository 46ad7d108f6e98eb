package cas

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Goroutines ingesting the same and different blobs at once, without the
// lock: content addressing makes that safe, and nothing is left over.
func TestConcurrentIngestGoroutines(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	same := content(50, 2*bufSize+1)
	const n = 8
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make(chan error, 3*n)
	)
	for i := range n {
		wg.Add(3)
		go func() {
			defer wg.Done()
			<-start
			info, err := s.Ingest(ctx, bytes.NewReader(same), digest.FromBytes(same), -1, nil)
			if err == nil && info.Digest != digest.FromBytes(same) {
				err = fmt.Errorf("got %s", info.Digest)
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			<-start
			data := content(uint64(100+i), bufSize/2+i)
			info, err := s.Ingest(ctx, bytes.NewReader(data), "", int64(len(data)), nil)
			if err == nil && info.Digest != digest.FromBytes(data) {
				err = fmt.Errorf("got %s", info.Digest)
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			<-start
			tf, err := s.CreateTemp("same-*")
			if err != nil {
				errs <- err
				return
			}
			defer tf.Discard()
			if _, err := tf.Write(same); err != nil {
				errs <- err
				return
			}
			_, err = s.CommitFile(ctx, tf, digest.FromBytes(same), nil)
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	assertBlob(t, s, digest.FromBytes(same), same)
	for i := range n {
		data := content(uint64(100+i), bufSize/2+i)
		assertBlob(t, s, digest.FromBytes(data), data)
	}
	blobs, _, err := s.List(ctx)
	if err != nil || len(blobs) != n+1 {
		t.Errorf("%d blobs, %v; want %d", len(blobs), err, n+1)
	}
	assertTmpEmpty(t, s)
}

// Several processes and goroutines ingest blobs and record them in one file
// by read-modify-write. The lock serialises the writers, so no record is
// lost (go-containerregistry #849 is what happens without one).
func TestConcurrentWritersProcessesAndGoroutines(t *testing.T) {
	s := newStore(t)
	const procs, goroutines, rounds = 3, 3, 15
	var helpers []*helper
	for i := range procs {
		helpers = append(helpers, spawn(t, "writer", "CAS_REPO="+s.Dir(),
			"CAS_ID=proc"+strconv.Itoa(i), "CAS_ROUNDS="+strconv.Itoa(rounds)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for i := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- runWriter(context.Background(), s, "goroutine"+strconv.Itoa(i), rounds)
		}()
	}
	for i, h := range helpers {
		if err := h.cmd.Wait(); err != nil {
			t.Errorf("writer process %d: %v; stderr: %s", i, err, h.cmd.Stderr)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}

	b, err := os.ReadFile(filepath.Join(s.Dir(), "log.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != (procs+goroutines)*rounds {
		t.Errorf("%d records, want %d: writes were lost", len(lines), (procs+goroutines)*rounds)
	}
	seen := map[string]bool{}
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) != 3 || seen[f[0]+" "+f[1]] {
			t.Errorf("bad or duplicate record %q", line)
			continue
		}
		seen[f[0]+" "+f[1]] = true
		round, _ := strconv.Atoi(f[1])
		want := bytes.Repeat([]byte(fmt.Sprintf("%s round %d\n", f[0], round)), 3000)
		if digest.Digest(f[2]) != digest.FromBytes(want) {
			t.Errorf("record %q names the wrong blob", line)
			continue
		}
		assertBlob(t, s, digest.Digest(f[2]), want)
	}
	shared := bytes.Repeat([]byte("shared blob\n"), 50000)
	assertBlob(t, s, digest.FromBytes(shared), shared)
	assertTmpEmpty(t, s)
}
