package main_test

// Lazy access (SPEC §9): canga nbd serves a remote's image before it is
// pulled, every chunk checked against its chunk list. The remotes are
// real web servers (canga serve, and nginx with a temp config), the
// clients qemu-img, qemu-io and libguestfs, the oracle canga export of
// the publisher's image and qemu-img compare.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// nginxServe serves dir with Debian's nginx on a free loopback port,
// with a config of its own in a temp directory, until the test ends.
func nginxServe(t testing.TB, dir string) string {
	t.Helper()
	testkit.Need(t, "/usr/sbin/nginx")
	prefix := t.TempDir()
	for range 3 {
		port := testkit.FreePort(t)
		conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	default_type application/octet-stream;
	server {
		listen 127.0.0.1:%[2]d;
		root %[3]s;
	}
}
`, prefix, port, dir)
		cf := filepath.Join(prefix, "nginx.conf")
		testkit.WriteFile(t, cf, []byte(conf), 0o644)
		url := fmt.Sprintf("http://127.0.0.1:%d/", port)
		if testkit.StartServer(t, url+"index.yaml", nil, "/usr/sbin/nginx", "-p", prefix, "-e", filepath.Join(prefix, "error.log"), "-c", cf) {
			return url
		}
	}
	t.Fatal("nginx would not start")
	return ""
}

// lazyServers are the remotes of the lazy tests.
var lazyServers = []struct {
	name  string
	start func(testing.TB, string) string
}{
	{"canga-serve", remServe},
	{"nginx", nginxServe},
}

// nbdProc is a canga nbd running in the background.
type nbdProc struct {
	cmd    *exec.Cmd
	sock   string
	out    bytes.Buffer
	errb   testkit.SyncBuffer
	exited chan struct{}
}

// startNBD runs canga nbd args... on a socket of its own and waits until
// it accepts connections.
func startNBD(t testing.TB, home string, args ...string) *nbdProc {
	t.Helper()
	p := &nbdProc{sock: filepath.Join(t.TempDir(), "nbd.sock"), exited: make(chan struct{})}
	p.cmd = exec.Command(cangaBin, append(append([]string{"nbd"}, args...), "--socket", p.sock)...)
	p.cmd.Env = cangaEnv(home)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.errb
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		select {
		case <-p.exited:
			t.Fatalf("canga nbd exited: %s", p.errb.String())
		default:
		}
		if c, err := net.Dial("unix", p.sock); err == nil {
			c.Close()
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("canga nbd does not answer on %s: %s", p.sock, p.errb.String())
	return nil
}

func (p *nbdProc) uri() string { return "nbd+unix:///?socket=" + p.sock }

// stop ends canga nbd with SIGTERM, as a service manager would, and
// returns its --json stats (empty without --json).
func (p *nbdProc) stop(t testing.TB) nbdStats {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("canga nbd still running 60 s after SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("canga nbd exited %d: %s", code, p.errb.String())
	}
	var st nbdStats
	if p.out.Len() > 0 {
		if err := json.Unmarshal(p.out.Bytes(), &st); err != nil {
			t.Fatalf("canga nbd --json: %v\n%s", err, p.out.String())
		}
	}
	return st
}

// kill ends canga nbd with SIGKILL.
func (p *nbdProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

type nbdStats struct {
	ChunksFetched  int64 `json:"chunks-fetched"`
	BytesFetched   int64 `json:"bytes-fetched"`
	Failures       int64 `json:"failures"`
	BlobsCompleted int64 `json:"blobs-completed"`
	ReadErrors     int64 `json:"read-errors"`
	BlockStatus    int64 `json:"block-status-requests"`
}

// lazySetup serves a copy of the publisher's repository and makes a
// consumer of it that has fetched its index. It returns the served
// directory, the consumer's home and cache, and the raw export of the
// child made by the publisher.
func lazySetup(t *testing.T, serve func(testing.TB, string) string) (pub remPub, served, url, home, cache, want string) {
	t.Helper()
	pub = remPublisher(t)
	want = shared(t, "lazy-child-raw", func(t testing.TB, dir string) string {
		p := filepath.Join(dir, "child.raw")
		ok(t, pub.Home, "export", "child", p, "-O", "raw")
		return p
	})
	served = remCopyRepo(t, pub.Repo)
	url = serve(t, served)
	home, cache = remConsumer(t, url, "")
	ok(t, home, "fetch", remName)
	return pub, served, url, home, cache, want
}

func compareExport(t testing.TB, p *nbdProc, want string) {
	t.Helper()
	out := testkit.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", p.uri(), want)
	if !strings.Contains(out, "Images are identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}
}

// blobBytes is the sum of the sizes of the chain's blobs.
func blobBytes(t testing.TB, pub remPub) int64 {
	return fileSize(t, blobPath(pub.Home, pub.BaseBlob)) + fileSize(t, blobPath(pub.Home, pub.ChildBlob))
}

// TestLazyExport: the export is the image, byte for byte, whatever the
// cache holds: nothing, half of what a client read, or the whole chain.
func TestLazyExport(t *testing.T) {
	for _, srv := range lazyServers {
		t.Run(srv.name, func(t *testing.T) {
			pub, _, url, home, _, want := lazySetup(t, srv.start)
			total := blobBytes(t, pub)
			image := remName + ":child"

			// Cold: nothing of the chain is here.
			p := startNBD(t, home, image, "--json")
			compareExport(t, p, want)
			cold := p.stop(t)
			// qemu-img compare asks where the holes are (block status) and
			// reads only the rest.
			if cold.BytesFetched == 0 || cold.BytesFetched > total || cold.Failures != 0 || cold.ReadErrors != 0 || cold.BlockStatus == 0 {
				t.Fatalf("cold run: %+v of %d bytes of blobs", cold, total)
			}
			t.Logf("cold compare fetched %d of %d bytes in %d chunks", cold.BytesFetched, total, cold.ChunksFetched)

			// Half-fetched: a client read the first half of the disk in
			// another cache.
			home2, cache2 := remConsumer(t, url, "")
			ok(t, home2, "fetch", remName)
			p = startNBD(t, home2, image, "--json")
			testkit.Run(t, "qemu-io", "-r", "-f", "raw", "-c", "read 0 32M", p.uri())
			half := p.stop(t)
			p = startNBD(t, home2, image, "--json")
			compareExport(t, p, want)
			rest := p.stop(t)
			if half.BytesFetched == 0 || rest.BytesFetched+half.BytesFetched > total || rest.BytesFetched >= cold.BytesFetched {
				t.Fatalf("half then rest: %+v then %+v, cold %+v, of %d", half, rest, cold, total)
			}
			checkKept(t, pub, cache2)

			// Full: pulled first; the export fetches nothing.
			ok(t, home, "pull", image)
			p = startNBD(t, home, image, "--json")
			compareExport(t, p, want)
			if full := p.stop(t); full.BytesFetched != 0 {
				t.Fatalf("full cache fetched %+v", full)
			}
			ok(t, home, "fsck", remName)
		})
	}
}

// checkKept checks that every byte the cache holds of a blob was
// verified: each chunk of a partial download is either not there (a hole
// or past its end) or exactly the publisher's, and each complete blob is
// the publisher's file. It returns the bytes held: verified chunks of
// partials and complete blobs.
func checkKept(t testing.TB, pub remPub, cache string) (kept int64) {
	t.Helper()
	for _, blob := range []string{pub.BaseBlob, pub.ChildBlob} {
		hex := strings.TrimPrefix(blob, "sha256:")
		orig := testkit.ReadFile(t, blobPath(pub.Home, blob))
		if b, err := os.ReadFile(filepath.Join(cache, "blobs", "sha256", hex)); err == nil {
			if !bytes.Equal(b, orig) {
				t.Fatalf("cached blob %s differs from the publisher's", hex)
			}
			kept += int64(len(b))
			continue
		}
		b, err := os.ReadFile(filepath.Join(cache, ".tmp", "partial-"+hex))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > len(orig) {
			t.Fatalf("partial of %s is longer than the blob", hex)
		}
		const cs = 1 << 20 // DefaultChunkSize: canga add wrote the lists
		for off := 0; off < len(b); off += cs {
			end := min(off+cs, len(orig))
			if end > len(b) {
				break // a chunk cut short: not held
			}
			switch {
			case bytes.Equal(b[off:end], orig[off:end]):
				kept += int64(end - off)
			case allZero(b[off:end]):
				// a hole: a chunk not fetched
			case tornChunk(b[off:end], orig[off:end]):
				// a write SIGKILL cut between pages: the blob's bytes,
				// then the hole. Not counted as kept; the next open checks
				// every chunk and fetches it again.
			default:
				t.Fatalf("partial of %s holds bytes %d-%d that are neither the blob's nor a hole", hex, off, end)
			}
		}
	}
	return kept
}

// tornChunk reports whether b is a prefix of orig's bytes followed by
// zeros: what a chunk write cut short by SIGKILL leaves.
func tornChunk(b, orig []byte) bool {
	i := 0
	for i < len(b) && b[i] == orig[i] {
		i++
	}
	return allZero(b[i:])
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestLazyTamperedChunk: a server that serves one chunk of the base's
// blob with a byte changed. The reads that need it fail with an I/O
// error, every other range reads right, nothing of the bad chunk is
// kept; once the server is fixed, the chain completes and fsck passes.
func TestLazyTamperedChunk(t *testing.T) {
	pub, served, _, home, cache, want := lazySetup(t, nginxServe)
	image := remName + ":child"
	hex := strings.TrimPrefix(pub.BaseBlob, "sha256:")
	file := filepath.Join(served, "blobs", "sha256", hex)
	orig := testkit.ReadFile(t, file)
	const cs = 1 << 20
	if len(orig) < 4*cs {
		t.Fatalf("the base's blob has %d bytes: too few chunks for this test", len(orig))
	}
	bad := bytes.Clone(orig)
	tampered := len(orig)/cs/2*cs + 4321 // in a chunk in the middle
	bad[tampered] ^= 0xff
	remWriteFile(t, file, bad, 0o444)

	p := startNBD(t, home, image, "--json")
	wantRaw := testkit.ReadFile(t, want)
	const region = 1 << 20
	failed, good := 0, 0
	slice := filepath.Join(t.TempDir(), "slice.raw")
	for off := 0; off < len(wantRaw); off += region {
		os.Remove(slice)
		opts := fmt.Sprintf("driver=raw,offset=%d,size=%d,file.driver=nbd,file.path=%s", off, region, p.sock)
		_, code, stderr := testkit.RunCode(t, "qemu-img", "convert", "-O", "raw", "--image-opts", opts, slice)
		if code != 0 {
			if !strings.Contains(stderr, "Input/output error") {
				t.Fatalf("read of %d: not an I/O error: %s", off, stderr)
			}
			failed++
			continue
		}
		if !bytes.Equal(testkit.ReadFile(t, slice), wantRaw[off:off+region]) {
			t.Fatalf("the range at %d reads other bytes than the image's", off)
		}
		good++
	}
	st := p.stop(t)
	t.Logf("tampered chunk: %d regions of 1 MiB failed, %d read right; %+v", failed, good, st)
	if failed == 0 || good == 0 || st.Failures == 0 || st.ReadErrors == 0 {
		t.Fatalf("%d failed, %d good, stats %+v", failed, good, st)
	}
	checkKept(t, pub, cache)
	if b, err := os.ReadFile(filepath.Join(cache, ".tmp", "partial-"+hex)); err == nil && len(b) > tampered && b[tampered] == bad[tampered] {
		t.Fatal("the partial holds the tampered byte")
	}

	// The server is fixed: the chain completes.
	remWriteFile(t, file, orig, 0o444)
	p = startNBD(t, home, image, "--prefetch", "--json")
	compareExport(t, p, want)
	waitComplete(t, cache, pub)
	p.stop(t)
	checkKept(t, pub, cache)
	ok(t, home, "fsck", remName)
}

// waitComplete waits until the cache holds both blobs of the chain.
func waitComplete(t testing.TB, cache string, pub remPub) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		n := 0
		for _, b := range []string{pub.BaseBlob, pub.ChildBlob} {
			if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", strings.TrimPrefix(b, "sha256:"))); err == nil {
				n++
			}
		}
		if n == 2 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the chain did not complete")
}

// TestLazyKilled: canga nbd killed (SIGKILL) at several points while
// qemu-img reads the export. Each run goes on from what the last kept,
// nothing unverified is kept, and the chain ends right.
func TestLazyKilled(t *testing.T) {
	pub, _, _, home, cache, want := lazySetup(t, remServe)
	image := remName + ":child"
	total := blobBytes(t, pub)
	var kept int64
	out := filepath.Join(t.TempDir(), "out.raw")
	for i, delay := range []time.Duration{0, 30 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond} {
		p := startNBD(t, home, image)
		reader := exec.Command("qemu-img", "convert", "-O", "raw", "-f", "raw", p.uri(), out)
		if err := reader.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		p.kill()
		_ = reader.Wait() // fails: its server died
		k := checkKept(t, pub, cache)
		t.Logf("kill %d after %v: %d bytes of verified chunks kept", i, delay, k)
		if k < kept {
			t.Fatalf("kill %d: %d bytes kept, %d before", i, k, kept)
		}
		kept = k
	}
	// The last run fetches what no run kept, and nothing again.
	p := startNBD(t, home, image, "--prefetch", "--json")
	compareExport(t, p, want)
	waitComplete(t, cache, pub)
	st := p.stop(t)
	if st.BytesFetched+kept != total {
		t.Fatalf("the last run fetched %d bytes, with %d kept, of %d", st.BytesFetched, kept, total)
	}
	checkKept(t, pub, cache)
	ok(t, home, "fsck", remName)
}

// TestLazyOverlay: an overlay backed by the export; qemu sees the chain,
// and writes go to the overlay while the image stays lazy.
func TestLazyOverlay(t *testing.T) {
	pub, _, _, home, cache, _ := lazySetup(t, remServe)
	image := remName + ":child"
	p := startNBD(t, home, image)
	ov := filepath.Join(t.TempDir(), "vm.qcow2")
	ok(t, home, "overlay", "--lazy", "--socket", p.sock, image, ov)
	var chain []struct {
		Filename          string `json:"filename"`
		Format            string `json:"format"`
		BackingFilename   string `json:"backing-filename"`
		BackingFileFormat string `json:"backing-filename-format"`
		VirtualSize       int64  `json:"virtual-size"`
	}
	out := testkit.Run(t, "qemu-img", "info", "--backing-chain", "--output=json", ov)
	if err := json.Unmarshal([]byte(out), &chain); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(chain) != 2 || chain[0].BackingFilename != p.uri() || chain[0].BackingFileFormat != "raw" || chain[1].Format != "raw" || chain[1].VirtualSize != 64<<20 {
		t.Fatalf("qemu-img info --backing-chain:\n%s", out)
	}
	// A write into the overlay, and reads of it and of the image below.
	testkit.QemuIO(t, "qcow2", ov, "write -P 0x77 0 64k", "read -P 0x77 0 64k", "read -P 0x5a 1M 64k", "read -P 0xc3 60M 64k")
	testkit.QemuCheck(t, ov)
	// The base stays lazy: its blob is not complete.
	if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", strings.TrimPrefix(pub.BaseBlob, "sha256:"))); err == nil {
		t.Fatal("the base's blob was fetched whole for a few reads")
	}
	checkKept(t, pub, cache)
	p.stop(t)
}

// TestLazyGuestfish mounts the tests' Debian guest, served by canga
// serve, over the lazy export with libguestfs and reads /etc/os-release.
// It boots the appliance: it runs only with CANGA_GUESTFS_TEST=1.
func TestLazyGuestfish(t *testing.T) {
	if os.Getenv("CANGA_GUESTFS_TEST") != "1" {
		t.Skip("set CANGA_GUESTFS_TEST=1 to boot libguestfs")
	}
	testkit.Need(t, "guestfish")
	guest := testkit.DebianGuest(t)
	pubHome := t.TempDir()
	pubRepo := filepath.Join(pubHome, "default")
	remWriteConfig(t, pubHome, pubRepo)
	id := strings.TrimSpace(ok(t, pubHome, "add", guest, "--tag", "debian"))
	blob, err := strconv.ParseInt(remEntryField(string(testkit.ReadFile(t, filepath.Join(pubRepo, "index.yaml"))), id, "blob-size"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	home, _ := remConsumer(t, remServe(t, pubRepo), "")
	ok(t, home, "fetch", remName)
	p := startNBD(t, home, remName+":debian", "--json")
	cmd := exec.Command("guestfish", "--ro", "--format=raw", "-a", "nbd://?socket="+p.sock, "-m", "/dev/sda", "cat", "/etc/os-release")
	cmd.Env = os.Environ()
	if os.Getenv("LIBGUESTFS_BACKEND_SETTINGS") == "" {
		cmd.Env = append(cmd.Env, "LIBGUESTFS_BACKEND_SETTINGS=force_tcg")
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("guestfish: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `ID=debian`) {
		t.Fatalf("/etc/os-release:\n%s", out)
	}
	st := p.stop(t)
	t.Logf("guestfish fetched %d bytes (%d chunks) of a %d-byte blob", st.BytesFetched, st.ChunksFetched, blob)
	if st.BytesFetched == 0 || st.BytesFetched >= blob {
		t.Fatalf("stats %+v for a blob of %d bytes", st, blob)
	}
}

// TestLazyOpenFails: canga nbd listens before it opens the chain, so that
// a client's start-up overlaps the first requests to the remote. When the
// chain cannot be opened (here the remote has lost its chunk lists) it
// still fails cleanly, and takes its socket away.
func TestLazyOpenFails(t *testing.T) {
	pub, served, _, home, _, _ := lazySetup(t, remServe)
	dir := filepath.Join(served, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if "sha256:"+e.Name() != pub.BaseBlob && "sha256:"+e.Name() != pub.ChildBlob {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	r := fails(t, home, "nbd", remName+":child", "--socket", sock)
	if !strings.Contains(r.stderr, "chunk") {
		t.Fatalf("the error does not say what failed: %v", r)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("canga nbd left its socket behind: %v", err)
	}
}
