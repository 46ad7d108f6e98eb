package main_test

// Faults at every writer (issue 12): canga killed with SIGKILL at many
// moments of pull, import, build (after its guest step), del --recursive,
// gc, tag, sign, convert and export (add: e2e_crash_test.go); a disk that
// fills up at every step of pull, import and export; a read-only file
// system under the repositories.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"golang.org/x/sys/unix"
)

// smallPub is a publisher of a few MiB: a base of random data and a
// child overlay, both in Repo, whose index is signed by Key.
type smallPub struct {
	Home, Repo      string
	BaseRaw, Child  string // the files the images were added from
	BaseID, ChildID string
	Key, Signers    string
}

func smallPublisher(t testing.TB) smallPub {
	t.Helper()
	return shared(t, "small-publisher", func(t testing.TB, dir string) smallPub {
		p := smallPub{Home: filepath.Join(dir, "home"), BaseRaw: filepath.Join(dir, "base.raw"), Child: filepath.Join(dir, "child.qcow2")}
		p.Repo = filepath.Join(p.Home, "default")
		if err := os.MkdirAll(p.Home, 0o755); err != nil {
			t.Fatal(err)
		}
		remWriteConfig(t, p.Home, p.Repo)
		// 4 MiB of random data in a 16 MiB disk: nothing compresses it, so
		// that every command has some work to do.
		data := make([]byte, 4<<20)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p.BaseRaw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data, 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(16 << 20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		p.BaseID = addID(t, p.Home, p.BaseRaw, "--tag", "base")
		ok(t, p.Home, "overlay", "base", p.Child)
		testkit.QemuIO(t, "qcow2", p.Child, "write -P 0x5a 8M 2M", "write -z 2M 512k")
		p.ChildID = addID(t, p.Home, p.Child, "--tag", "child")
		keys := filepath.Join(dir, "keys")
		if err := os.Mkdir(keys, 0o700); err != nil {
			t.Fatal(err)
		}
		p.Key = testkit.Keygen(t, keys, "publisher", "", "-t", "ed25519")
		p.Signers = filepath.Join(keys, "allowed_signers")
		remWriteAllowedSigners(t, p.Signers, remPrincipal, p.Key+".pub", "")
		ok(t, p.Home, "sign", "--key", p.Key)
		return p
	})
}

// killSpec is one command to kill at many moments.
type killSpec struct {
	home string
	args []string
	env  []string // nil: cangaEnv(home)
	// marker, if set, is a file the command makes at some point of its
	// run: the delays count from when it appears.
	marker string
	repos  []string // repositories to fsck after each kill ("" the default)
	// gone are the image IDs the command may remove: every other image
	// listed before a run must be listed after its kill, and one that was
	// present (downloaded) must still be.
	gone []string
	// outs are files the command writes: after a kill each is absent or
	// whole, with image ID outID.
	outs  []string
	outID string
	// afterKill, if set, checks more after each kill.
	afterKill func(t *testing.T)
	// finished, if set, reports whether a killed run had done its work
	// already, so that running it again is an error (del of what is gone).
	finished func(t *testing.T) bool
	// done checks the result of a run that finished; reset then brings
	// back the state before the command, for the next kill.
	done, reset func(t *testing.T)
}

type listedImage struct{ repo, id string }

func listed(t *testing.T, home string) map[listedImage]bool {
	t.Helper()
	m := map[listedImage]bool{}
	for _, it := range listJSON(t, home) {
		m[listedImage{it.Repo, it.ID}] = it.Present
	}
	return m
}

// killAtManyPoints measures runs of the command, then kills 20 runs with
// SIGKILL after delays spread over that duration (14 evenly over the run,
// 6 more from 0.75 to 1.2 of it, where the results are committed). After
// each kill the repositories pass fsck, no image is lost, no output is
// half written, and the command run again finishes with the right result.
func killAtManyPoints(t *testing.T, s killSpec) {
	t.Helper()
	env := s.env
	if env == nil {
		env = cangaEnv(s.home)
	}
	// start runs the command and waits for its marker, if it has one;
	// wait then gives its end.
	start := func() (cmd *exec.Cmd, out *bytes.Buffer, t0 time.Time, wait <-chan error) {
		if s.marker != "" {
			if err := os.Remove(s.marker); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
		cmd = exec.Command(cangaBin, s.args...)
		cmd.Env = env
		out = &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		t0 = time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		for s.marker != "" {
			if _, err := os.Stat(s.marker); err == nil {
				t0 = time.Now()
				break
			}
			select {
			case err := <-done:
				t.Fatalf("canga %v ended before %s appeared: %v\n%s", s.args, s.marker, err, out)
			case <-time.After(time.Millisecond):
			}
		}
		return cmd, out, t0, done
	}
	// The median of three runs: one slowed down by a busy moment of the
	// machine would put most kills after the end.
	var runs []time.Duration
	for range 3 {
		_, out, t0, wait := start()
		if err := <-wait; err != nil {
			t.Fatalf("canga %v: %v\n%s", s.args, err, out)
		}
		runs = append(runs, time.Since(t0))
		s.done(t)
		s.reset(t)
	}
	slices.Sort(runs)
	normal := runs[1]
	var delays []time.Duration
	for i := range 14 {
		delays = append(delays, normal*time.Duration(i)/14)
	}
	for i := range 6 {
		delays = append(delays, normal*time.Duration(75+9*i)/100)
	}
	killed, leftovers := 0, 0
	for i, d := range delays {
		before := listed(t, s.home)
		cmd, out, _, wait := start()
		time.Sleep(d)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := <-wait
		if cmd.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
			killed++
		} else if err != nil {
			t.Fatalf("run %d (kill after %v): failed on its own: %v\n%s", i, d, err, out)
		}
		for _, repo := range s.repos {
			args := []string{"fsck"}
			if repo != "" {
				args = append(args, repo)
			}
			if r := canga(t, s.home, args...); r.code != 0 {
				t.Fatalf("kill %d after %v: fsck fails\n%v", i, d, r)
			}
		}
		after := listed(t, s.home)
		for im, present := range before {
			if slicesContains(s.gone, im.id) {
				continue
			}
			if p, ok := after[im]; !ok || (present && !p) {
				t.Fatalf("kill %d after %v: %s:%s was listed (present %v) before, now listed %v present %v", i, d, im.repo, im.id, present, ok, p)
			}
		}
		for _, o := range s.outs {
			// SIGKILL leaves the hidden temp file of the output, by design
			// under another name; it goes, so that done can check that a
			// finished run leaves none.
			leftovers += removeTemps(t, o)
			if _, err := os.Stat(o); errors.Is(err, os.ErrNotExist) {
				continue
			}
			if got := testkit.RawDigest(t, o).String(); got != s.outID {
				t.Fatalf("kill %d after %v: %s is there with image ID %s, want %s or no file", i, d, o, got, s.outID)
			}
		}
		if s.afterKill != nil {
			s.afterKill(t)
		}
		if s.finished != nil && s.finished(t) {
			s.done(t)
			s.reset(t)
			continue
		}
		if r := runCangaEnv(t, env, "", cangaTimeout, false, s.args...); r.code != 0 {
			t.Fatalf("kill %d after %v: the command run again fails\n%v", i, d, r)
		}
		s.done(t)
		s.reset(t)
	}
	t.Logf("canga %s: %v a run; %d of %d runs killed, %d output temp files left by kills", strings.Join(s.args, " "), normal, killed, len(delays), leftovers)
	if killed == 0 {
		t.Errorf("no run was killed: every kill came after the end")
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// removeTemps removes the atomicfile temp files of out and counts them.
func removeTemps(t *testing.T, out string) int {
	t.Helper()
	n := 0
	for _, name := range dirNames(t, filepath.Dir(out)) {
		if strings.HasPrefix(name, "."+filepath.Base(out)+".tmp-") {
			if err := os.Remove(filepath.Join(filepath.Dir(out), name)); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	return n
}

// requireNoTempLeft fails when dir holds an atomicfile temp file of out.
func requireNoTempLeft(t *testing.T, out string) {
	t.Helper()
	for _, n := range dirNames(t, filepath.Dir(out)) {
		if strings.HasPrefix(n, "."+filepath.Base(out)+".tmp-") {
			t.Errorf("%s left in %s", n, filepath.Dir(out))
		}
	}
}

func TestKilledAtAnyMoment(t *testing.T) {
	if testing.Short() {
		t.Skip("kills canga some 200 times")
	}
	pub := smallPublisher(t)

	t.Run("pull", func(t *testing.T) {
		url := remServe(t, remCopyRepo(t, pub.Repo))
		home, cache := remConsumer(t, url, pub.Signers)
		ok(t, home, "fetch")
		killAtManyPoints(t, killSpec{
			home: home, args: []string{"pull", remName + ":child"}, repos: []string{remName},
			done: func(t *testing.T) {
				if p := remPresent(t, home, remName); !p[pub.BaseID] || !p[pub.ChildID] {
					t.Fatalf("after pull: present %v", p)
				}
				remRequireGoodBlobs(t, cache)
				// qemu opens the pulled chain in the cache and reads the
				// child's content.
				it := remFindItem(listJSON(t, home), remName, pub.ChildID)
				if got := testkit.RawDigest(t, remBlobFile(cache, it.Blob)).String(); got != pub.ChildID {
					t.Fatalf("the pulled child reads as %s, want %s", got, pub.ChildID)
				}
			},
			reset: func(t *testing.T) {
				forgetCacheBlobs(t, cache)
				// A run killed while it stored a chunk list leaves its temp
				// file, which no later pull takes up (a partial download
				// is taken up): what a crash leaves is gc's (SPEC §2).
				ok(t, home, "gc", remName)
				if names := remDirNames(t, filepath.Join(cache, ".tmp")); len(names) != 0 {
					t.Fatalf("after a finished pull and gc, .tmp holds %v", names)
				}
			},
		})
	})

	t.Run("import", func(t *testing.T) {
		home, other := otherRepoHome(t)
		testkit.Run(t, "cp", "-a", pub.Repo+"/.", other)
		unrelated := addID(t, home, otherRaw(t), "--tag", "unrelated")
		killAtManyPoints(t, killSpec{
			home: home, args: []string{"import", "other:child", "--tag", "imported"}, repos: []string{"", "other"},
			done: func(t *testing.T) {
				it := remFindItem(listJSON(t, home), "default", pub.ChildID)
				if it == nil || it.Parent != pub.BaseID {
					t.Fatalf("imported child: %+v", it)
				}
				remRequireGoodBlobs(t, repoDir(home))
				out := filepath.Join(t.TempDir(), "x.qcow2")
				ok(t, home, "export", "imported", out)
				if got := testkit.RawDigest(t, out).String(); got != pub.ChildID {
					t.Fatalf("export of the imported child: %s, want %s", got, pub.ChildID)
				}
			},
			reset: func(t *testing.T) {
				ok(t, home, "del", "--recursive", "default:"+pub.BaseID)
				ok(t, home, "gc")
				if it := findItem(listJSON(t, home), unrelated); it == nil {
					t.Fatal("the unrelated image is gone")
				}
			},
		})
	})

	t.Run("del --recursive", func(t *testing.T) {
		home, other := otherRepoHome(t)
		testkit.Run(t, "cp", "-a", pub.Repo+"/.", other)
		unrelated := addID(t, home, otherRaw(t), "--tag", "unrelated")
		ok(t, home, "import", "other:child")
		killAtManyPoints(t, killSpec{
			home: home, args: []string{"del", "--recursive", "default:" + pub.BaseID}, repos: []string{""},
			gone: []string{pub.BaseID, pub.ChildID},
			finished: func(t *testing.T) bool {
				if remFindItem(listJSON(t, home), "default", pub.BaseID) != nil {
					return false
				}
				// Killed after the index's commit, before the blobs went:
				// they are unused blobs now, gc's to remove.
				ok(t, home, "gc")
				return true
			},
			done: func(t *testing.T) {
				items := listJSON(t, home)
				var ids []string
				for _, it := range items {
					if it.Repo == "default" {
						ids = append(ids, it.ID)
					}
				}
				if len(ids) != 1 || ids[0] != unrelated {
					t.Fatalf("after del --recursive: %v, want only %s", ids, unrelated)
				}
				// The unrelated image's blob and its chunk list.
				if q, n := len(qcow2Blobs(t, home)), len(dirNames(t, blobDir(home))); q != 1 || n != 2 {
					t.Fatalf("%d qcow2 blobs and %d blobs in all after del --recursive, want 1 and 2", q, n)
				}
			},
			reset: func(t *testing.T) { ok(t, home, "import", "other:child") },
		})
	})

	t.Run("gc", func(t *testing.T) {
		home := t.TempDir()
		baseID := addID(t, home, pub.BaseRaw, "--tag", "base")
		childID := addID(t, home, pub.Child, "--tag", "child")
		before := snapshot(t, home)
		killAtManyPoints(t, killSpec{
			home: home, args: []string{"gc"}, repos: []string{""},
			done: func(t *testing.T) {
				requireUnchanged(t, home, before)
				if names := tmpEntries(t, home); len(names) != 0 {
					t.Fatalf("gc left .tmp/%v", names)
				}
				if r := ok(t, home, "fsck"); strings.Contains(r, "unused") {
					t.Fatalf("fsck after gc:\n%s", r)
				}
				for _, id := range []string{baseID, childID} {
					mustItem(t, home, id)
				}
			},
			reset: func(t *testing.T) { makeGarbage(t, home, 24) },
		})
	})

	t.Run("tag", func(t *testing.T) {
		home := t.TempDir()
		addID(t, home, pub.BaseRaw, "--tag", "base")
		childID := addID(t, home, pub.Child, "--tag", "child")
		killAtManyPoints(t, killSpec{
			home: home, args: []string{"tag", "moved", "child"}, repos: []string{""},
			done: func(t *testing.T) {
				if it := mustItem(t, home, childID); !slicesContains(it.Tags, "moved") {
					t.Fatalf("child's tags %v", it.Tags)
				}
			},
			// Back on base, so that the next run moves it.
			reset: func(t *testing.T) { ok(t, home, "tag", "moved", "base") },
		})
	})

	t.Run("sign", func(t *testing.T) {
		home := t.TempDir()
		addID(t, home, pub.BaseRaw, "--tag", "base")
		sig := filepath.Join(repoDir(home), "index.yaml.sig")
		before := snapshot(t, home)
		verify := func(t *testing.T) {
			if r := canga(t, home, "verify", "--allowed-signers", pub.Signers); r.code != 0 {
				t.Fatalf("the signature does not verify\n%v", r)
			}
		}
		killAtManyPoints(t, killSpec{
			home: home, args: []string{"sign", "--key", pub.Key}, repos: []string{""},
			// What a kill must never leave: a signature that is there and
			// does not verify.
			afterKill: func(t *testing.T) {
				if _, err := os.Stat(sig); err == nil {
					verify(t)
				}
				requireUnchanged(t, home, before)
			},
			done: func(t *testing.T) {
				verify(t)
				requireNoTempLeft(t, sig)
			},
			reset: func(t *testing.T) {
				if err := os.Remove(sig); err != nil {
					t.Fatal(err)
				}
			},
		})
	})

	// build, killed after its guest step: virt-customize and
	// virt-sparsify are stand-ins here, first on PATH, that write what a
	// task would (with qemu-io) and then make a marker file; the kills
	// count from the marker, so they fall in what canga does after the
	// guest step (the add of the result). The libguestfs build itself is
	// tested in e2e_build_test.go.
	t.Run("build after the guest step", func(t *testing.T) {
		home, bin := t.TempDir(), t.TempDir()
		addID(t, home, pub.BaseRaw, "--tag", "base")
		marker := filepath.Join(bin, "guest-step-done")
		testkit.WriteFile(t, filepath.Join(bin, "virt-customize"), []byte(`#!/bin/sh
while [ $# -gt 0 ]; do
	case "$1" in -a) img="$2"; shift ;; esac
	shift
done
qemu-io -f qcow2 -c "write -P 0x77 4M 1M" "$img" >/dev/null
`), 0o755)
		testkit.WriteFile(t, filepath.Join(bin, "virt-sparsify"), []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
		cangafile := testkit.WriteFile(t, filepath.Join(bin, "Cangafile"), []byte("parent: base\ntag: built\ntasks:\n  - run: \"true\"\n"), 0o644)
		env := append(cangaEnv(home), "SUPERMIN_KERNEL="+cangafile)
		env[0] = "PATH=" + bin + ":" + os.Getenv("PATH")
		// The oracle: the same write on an overlay of base, by qemu-io.
		want := filepath.Join(t.TempDir(), "want.qcow2")
		ok(t, home, "overlay", "base", want)
		testkit.QemuIO(t, "qcow2", want, "write -P 0x77 4M 1M")
		wantID := testkit.RawDigest(t, want).String()
		killAtManyPoints(t, killSpec{
			home: home, env: env, marker: marker, args: []string{"-q", "build", cangafile}, repos: []string{""},
			done: func(t *testing.T) {
				it := mustItem(t, home, wantID)
				if !slicesContains(it.Tags, "built") || it.Parent == "" {
					t.Fatalf("built image: %+v", it)
				}
			},
			reset: func(t *testing.T) { ok(t, home, "del", "built") },
		})
	})

	t.Run("convert", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out.qcow2")
		killAtManyPoints(t, killSpec{
			home: t.TempDir(), args: []string{"convert", "-c", pub.Child, out},
			outs: []string{out}, outID: pub.ChildID,
			done: func(t *testing.T) {
				if got := testkit.RawDigest(t, out).String(); got != pub.ChildID {
					t.Fatalf("convert: %s, want %s", got, pub.ChildID)
				}
				testkit.QemuCheck(t, out)
				requireNoTempLeft(t, out)
			},
			reset: func(t *testing.T) {
				if err := os.Remove(out); err != nil {
					t.Fatal(err)
				}
			},
		})
	})

	t.Run("export", func(t *testing.T) {
		home := t.TempDir()
		addID(t, home, pub.BaseRaw, "--tag", "base")
		addID(t, home, pub.Child, "--tag", "child")
		out := filepath.Join(t.TempDir(), "out.qcow2")
		killAtManyPoints(t, killSpec{
			home: home, args: []string{"export", "child", out}, repos: []string{""},
			outs: []string{out}, outID: pub.ChildID,
			done: func(t *testing.T) {
				if got := testkit.RawDigest(t, out).String(); got != pub.ChildID {
					t.Fatalf("export: %s, want %s", got, pub.ChildID)
				}
				requireNoTempLeft(t, out)
			},
			reset: func(t *testing.T) {
				if err := os.Remove(out); err != nil {
					t.Fatal(err)
				}
			},
		})
	})
}

// makeGarbage puts n unused blobs (random bytes named by their digest, as
// an interrupted add would leave them) and n dead temp files in home's
// default repository, for gc to remove.
func makeGarbage(t *testing.T, home string, n int) {
	t.Helper()
	tmp := filepath.Join(repoDir(home), ".tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		b := make([]byte, 64<<10)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		testkit.WriteFile(t, filepath.Join(blobDir(home), hex.EncodeToString(sum[:])), b, 0o444)
		testkit.WriteFile(t, filepath.Join(tmp, fmt.Sprintf("dead-%d", i)), b, 0o644)
	}
}

// fillTo leaves free pages of 4 KiB free on the file system of mnt, with
// a filler file there, and returns the filler.
func fillTo(t *testing.T, mnt string, free int64) string {
	t.Helper()
	filler := filepath.Join(mnt, "filler")
	if err := os.Remove(filler); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	fill := int64(st.Bavail)*st.Bsize - free*4096
	if fill < 0 {
		t.Fatalf("%d bytes free, want %d pages", int64(st.Bavail)*st.Bsize, free)
	}
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fill > 0 {
		if err := unix.Fallocate(int(f.Fd()), 0, 0, fill); err != nil {
			t.Fatalf("fallocate %d: %v", fill, err)
		}
	}
	return filler
}

func usedBytes(t *testing.T, mnt string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// fullDiskSpec is a command to run on a file system that fills up.
type fullDiskSpec struct {
	home, mnt string
	args      []string
	repos     []string // to fsck after each failure
	// outs must not exist after a failure.
	outs []string
	// repoDirs are repositories on the full disk: after a failure every
	// file of their blobs/ is named by its sha256sum.
	repoDirs []string
	// done checks a finished run; reset brings back the state before.
	done, reset func(t *testing.T)
}

// fullDiskSweep measures what the command writes to mnt, then runs it
// with free space from none to a little more than that, at 14 points:
// each run that fails says the disk is full, cleanly, leaves the
// repositories sound and no output; then, the space freed, the command
// run again succeeds.
func fullDiskSweep(t *testing.T, s fullDiskSpec) {
	t.Helper()
	before := usedBytes(t, s.mnt)
	ok(t, s.home, s.args...)
	need := (usedBytes(t, s.mnt) - before + 4095) / 4096
	s.done(t)
	s.reset(t)
	var frees []int64
	for i := range 10 {
		frees = append(frees, need*int64(i)/10)
	}
	frees = append(frees, need-1, need, need+1, need+64)
	var failedAt []int64
	for _, free := range frees {
		filler := fillTo(t, s.mnt, free)
		r := canga(t, s.home, s.args...)
		if r.code != 0 {
			failedAt = append(failedAt, free)
			t.Logf("%d pages free: %s", free, strings.TrimSpace(r.stderr))
			requireCleanFailure(t, r)
			if !strings.Contains(r.stderr, "no space left on device") {
				t.Errorf("%d pages free: stderr should say the disk is full\n%v", free, r)
			}
			for _, repo := range s.repos {
				args := []string{"fsck"}
				if repo != "" {
					args = append(args, repo)
				}
				if f := canga(t, s.home, args...); f.code != 0 {
					t.Errorf("%d pages free: fsck after the failure\n%v", free, f)
				}
			}
			for _, d := range s.repoDirs {
				remRequireGoodBlobs(t, d)
			}
			for _, o := range s.outs {
				if _, err := os.Lstat(o); err == nil {
					t.Errorf("%d pages free: %s is there after a failure", free, o)
				}
				if n := removeTemps(t, o); n != 0 {
					t.Errorf("%d pages free: a failure left %d temp files of %s", free, n, o)
				}
			}
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if r.code != 0 {
			ok(t, s.home, s.args...)
		}
		s.done(t)
		s.reset(t)
	}
	t.Logf("canga %s writes %d pages; it failed with this many free: %v", strings.Join(s.args, " "), need, failedAt)
	if len(failedAt) == 0 {
		t.Errorf("no run failed")
	}
}

// The disk fills up at every step of pull, import and export.
func TestFullDiskAtEveryStepOfCopies(t *testing.T) {
	pub := smallPublisher(t)

	t.Run("pull", func(t *testing.T) {
		mnt := testkit.Tmpfs(t, "24m")
		url := remServe(t, remCopyRepo(t, pub.Repo))
		home := filepath.Join(mnt, "home")
		cache := filepath.Join(home, "cache-"+remName)
		if err := os.MkdirAll(home, 0o755); err != nil {
			t.Fatal(err)
		}
		remWriteConfig(t, home, filepath.Join(home, "default"), "  "+remName+":", "    url: "+url, "    path: "+cache)
		ok(t, home, "fetch")
		fullDiskSweep(t, fullDiskSpec{
			home: home, mnt: mnt, args: []string{"pull", remName + ":child"}, repos: []string{remName}, repoDirs: []string{cache},
			done: func(t *testing.T) {
				if p := remPresent(t, home, remName); !p[pub.BaseID] || !p[pub.ChildID] {
					t.Fatalf("after pull: present %v", p)
				}
				remRequireGoodBlobs(t, cache)
			},
			reset: func(t *testing.T) {
				forgetCacheBlobs(t, cache)
				ok(t, home, "gc", remName)
			},
		})
	})

	t.Run("import", func(t *testing.T) {
		mnt := testkit.Tmpfs(t, "24m")
		home, other := filepath.Join(mnt, "home"), filepath.Join(t.TempDir(), "other")
		if err := os.MkdirAll(home, 0o755); err != nil {
			t.Fatal(err)
		}
		conf := fmt.Sprintf("default_repo: default\nrepos:\n  default:\n    path: %s\n  other:\n    path: %s\n", filepath.Join(home, "default"), other)
		testkit.WriteFile(t, filepath.Join(home, "config.yaml"), []byte(conf), 0o644)
		testkit.Run(t, "cp", "-a", pub.Repo+"/.", other)
		ok(t, home, "list")
		fullDiskSweep(t, fullDiskSpec{
			home: home, mnt: mnt, args: []string{"import", "other:child", "--tag", "imported"}, repos: []string{"", "other"},
			repoDirs: []string{repoDir(home)},
			done: func(t *testing.T) {
				if it := remFindItem(listJSON(t, home), "default", pub.ChildID); it == nil || it.Parent != pub.BaseID {
					t.Fatalf("imported child: %+v", it)
				}
				remRequireGoodBlobs(t, repoDir(home))
			},
			reset: func(t *testing.T) {
				ok(t, home, "del", "--recursive", "default:"+pub.BaseID)
				ok(t, home, "gc")
				if n := len(dirNames(t, blobDir(home))); n != 0 {
					t.Fatalf("%d blobs left", n)
				}
			},
		})
	})

	t.Run("export", func(t *testing.T) {
		mnt := testkit.Tmpfs(t, "24m")
		home := t.TempDir()
		addID(t, home, pub.BaseRaw, "--tag", "base")
		addID(t, home, pub.Child, "--tag", "child")
		out := filepath.Join(mnt, "out.qcow2")
		fullDiskSweep(t, fullDiskSpec{
			home: home, mnt: mnt, args: []string{"export", "child", out}, repos: []string{""}, outs: []string{out},
			done: func(t *testing.T) {
				if got := testkit.RawDigest(t, out).String(); got != pub.ChildID {
					t.Fatalf("export: %s, want %s", got, pub.ChildID)
				}
			},
			reset: func(t *testing.T) {
				if err := os.Remove(out); err != nil {
					t.Fatal(err)
				}
			},
		})
	})
}

// A read-only file system under the repositories (the default one and a
// remote's cache): import, pull, fetch and sign fail saying why and change
// nothing; list, show, export to elsewhere, fsck and verify work.
func TestReadOnlyRepositoryCopies(t *testing.T) {
	pub := smallPublisher(t)
	mnt := testkit.Tmpfs(t, "32m")
	url := remServe(t, remCopyRepo(t, pub.Repo))
	home := filepath.Join(mnt, "home")
	cache := filepath.Join(home, "cache-"+remName)
	other := filepath.Join(t.TempDir(), "other")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	remWriteConfig(t, home, filepath.Join(home, "default"),
		"  "+remName+":", "    url: "+url, "    path: "+cache, "    allowed_signers: "+pub.Signers,
		"  other:", "    path: "+other)
	testkit.Run(t, "cp", "-a", pub.Repo+"/.", other)
	otherID := addID(t, home, otherRaw(t), "other", "--tag", "unrelated")
	ok(t, home, "fetch")
	ok(t, home, "pull", remName+":base")
	ok(t, home, "import", remName+":base", "--tag", "base")
	ok(t, home, "sign", "--key", pub.Key)
	testkit.RemountReadOnly(t, mnt)
	before, cacheBefore := snapshot(t, home), remCacheState(t, cache)
	cacheBlobs := remRequireGoodBlobs(t, cache)

	for _, args := range [][]string{
		{"import", "other:child"},
		{"import", "other:unrelated"},
		{"import", remName + ":child"},
		{"pull", remName + ":child"},
		{"fetch"},
		{"sign", "--key", pub.Key},
		{"gc", remName},
	} {
		r := fails(t, home, args...)
		t.Logf("canga %v: %s", args, strings.TrimSpace(r.stderr))
		if !strings.Contains(r.stderr, "read-only") && !strings.Contains(r.stderr, "not writable") {
			t.Errorf("stderr should say the repository cannot be written\n%v", r)
		}
		requireUnchanged(t, home, before)
		if after := remCacheState(t, cache); string(after.index) != string(cacheBefore.index) || string(after.sig) != string(cacheBefore.sig) {
			t.Errorf("canga %v changed the cache's index", args)
		}
		if names := remRequireGoodBlobs(t, cache); !remSameSet(names, cacheBlobs) {
			t.Errorf("canga %v: cache blobs %v, were %v", args, names, cacheBlobs)
		}
	}

	ok(t, home, "list")
	ok(t, home, "show", "base")
	ok(t, home, "show", remName+":child")
	ok(t, home, "fsck")
	ok(t, home, "fsck", remName)
	ok(t, home, "verify", "--allowed-signers", pub.Signers)
	ok(t, home, "verify", remName)
	out := filepath.Join(t.TempDir(), "base.qcow2")
	ok(t, home, "export", "base", out)
	if got := testkit.RawDigest(t, out).String(); got != pub.BaseID {
		t.Errorf("export: %s, want %s", got, pub.BaseID)
	}
	if it := remFindItem(listJSON(t, home), "other", otherID); it == nil {
		t.Errorf("other's image is not listed")
	}
	// The writable repository next to them still takes writes.
	ok(t, home, "tag", "still-writable", "other:unrelated")
}

// forgetCacheBlobs removes every blob of a remote's cache: a cache is
// written by pull alone, so this is how a cache that never had them looks.
func forgetCacheBlobs(t *testing.T, cache string) {
	t.Helper()
	bd := filepath.Join(cache, "blobs", "sha256")
	for _, n := range dirNames(t, bd) {
		if err := os.Remove(filepath.Join(bd, n)); err != nil {
			t.Fatal(err)
		}
	}
}
