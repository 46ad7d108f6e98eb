package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/remote"
)

// lazyServer serves a repository directory as canga serve does, counting
// the bytes of blob responses, and can serve one blob with a byte changed.
type lazyServer struct {
	dir      string
	bytes    atomic.Int64
	requests atomic.Int64
	mu       sync.Mutex
	tamper   map[string][]byte // URL path -> the bytes served instead
}

func (s *lazyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/blobs/") {
		s.requests.Add(1)
	}
	s.mu.Lock()
	data, ok := s.tamper[r.URL.Path]
	s.mu.Unlock()
	cw := &countWriter{ResponseWriter: w, n: &s.bytes}
	if ok {
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(data))
		return
	}
	remote.Handler(s.dir).ServeHTTP(cw, r)
}

type countWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.ResponseWriter.Write(p)
}

// lazyChain is a chain base <- mid <- top of a served repository whose
// index gives chunk lists of 64 KiB chunks, and a cache of it.
func lazyChain(t *testing.T) (*srcRepo, *index.Index, [3]*image, *lazyServer, *Repo) {
	t.Helper()
	src := newSrcRepo(t)
	src.chunkSize = 64 << 10
	base := src.add(nil, 0x11, 0)
	mid := src.add(base, 0x22, 1<<20)
	top := src.add(mid, 0x33, 2<<20)
	ix, err := index.Parse(src.writeIndex())
	if err != nil {
		t.Fatal(err)
	}
	ls := &lazyServer{dir: src.dir, tamper: map[string][]byte{}}
	srv := httptest.NewServer(ls)
	t.Cleanup(srv.Close)
	cache := cacheRepo(t, srv.URL+"/", src.dir)
	return src, ix, [3]*image{base, mid, top}, ls, cache
}

// readAll reads the whole guest disk of li.
func readAll(t *testing.T, li *LazyImage) []byte {
	t.Helper()
	b := make([]byte, li.Size)
	if _, err := li.Disk.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

func TestLazyRead(t *testing.T) {
	ctx := context.Background()
	src, ix, chain, ls, cache := lazyChain(t)
	want := readFile(t, testkit.QemuRaw(t, src.blobPath(chain[2])))
	var total int64
	for _, im := range chain {
		total += im.size
	}

	li, err := cache.OpenLazy(ctx, ix, chain[2].id)
	if err != nil {
		t.Fatal(err)
	}
	// One cluster of the top image's data: a few chunks, not the chain.
	got := make([]byte, 64<<10)
	if _, err := li.Disk.ReadAt(got, 2<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want[2<<20:2<<20+64<<10]) {
		t.Fatal("lazy read of the top's data differs from qemu-img's")
	}
	first := li.Stats()
	if first.BytesFetched >= total || first.ChunksFetched == 0 {
		t.Fatalf("fetched %+v of %d bytes of blobs for one cluster", first, total)
	}
	if err := li.Close(); err != nil {
		t.Fatal(err)
	}

	// The next run starts from what was kept: the same read fetches
	// nothing more.
	before := ls.bytes.Load()
	li, err = cache.OpenLazy(ctx, ix, chain[2].id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := li.Disk.ReadAt(got, 2<<20); err != nil {
		t.Fatal(err)
	}
	if s := li.Stats(); s.ChunksFetched != 0 || ls.bytes.Load() != before {
		t.Fatalf("a second run fetched again: %+v, %d bytes served", s, ls.bytes.Load()-before)
	}
	if !bytes.Equal(readAll(t, li), want) {
		t.Fatal("the lazy disk differs from qemu-img convert of the chain")
	}
	if err := li.Prefetch(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if li.Missing() != 0 || li.Stats().BlobsCompleted != 3 {
		t.Fatalf("after prefetch: missing %d, %+v", li.Missing(), li.Stats())
	}
	if !bytes.Equal(readAll(t, li), want) {
		t.Fatal("the disk differs once complete")
	}
	if err := li.Close(); err != nil {
		t.Fatal(err)
	}
	for _, im := range chain {
		p, _ := cache.store.Path(im.blob)
		if sum := testkit.Sha256sum(t, p); sum != im.blob {
			t.Fatalf("completed blob hashes to %s", sum)
		}
	}
	if left := tmpEntries(t, cache); len(left) != 0 {
		t.Fatalf(".tmp/ after completion: %v", left)
	}
	fsckFaults(t, cache, 0, "")
	// Complete: a pull has nothing left to do.
	res, err := cache.Copy(ctx, httpSource{c: testClient(), url: cache.URL(), signers: noSigners}, ix, chain[2].id, CopyOptions{})
	if err != nil || len(res.Copied) != 0 {
		t.Fatalf("pull after lazy completion: %v %+v", err, res)
	}
}

// TestLazyPullResumes: a pull goes on from the chunks a lazy reader kept,
// out of order as they are.
func TestLazyPullResumes(t *testing.T) {
	ctx := context.Background()
	_, ix, chain, ls, cache := lazyChain(t)
	li, err := cache.OpenLazy(ctx, ix, chain[2].id)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, li)
	fetched := li.Stats().BytesFetched
	if err := li.Close(); err != nil {
		t.Fatal(err)
	}
	before := ls.bytes.Load()
	if _, err := cache.Copy(ctx, httpSource{c: testClient(), url: cache.URL(), signers: noSigners}, ix, chain[2].id, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, im := range chain {
		total += im.size
	}
	// The pull re-fetches at most what follows the first hole of each
	// blob; it must not start over.
	if pulled := ls.bytes.Load() - before; pulled >= total {
		t.Fatalf("the pull fetched %d bytes of %d after the lazy reader fetched %d", pulled, total, fetched)
	}
	fsckFaults(t, cache, 0, "")
}

// TestLazyTampered: a server that serves one chunk with a byte changed.
// Reads of that range fail with ErrChunk, other ranges read right, and
// nothing of the bad chunk is kept; once the server is fixed, the blob
// completes and fsck passes.
func TestLazyTampered(t *testing.T) {
	ctx := context.Background()
	src, ix, chain, ls, cache := lazyChain(t)
	top := chain[2]
	want := readFile(t, testkit.QemuRaw(t, src.blobPath(top)))
	// Where qemu put the top's data cluster in its file.
	var m []struct {
		Start  int64 `json:"start"`
		Length int64 `json:"length"`
		Depth  int   `json:"depth"`
		Data   bool  `json:"data"`
		Offset *int64
	}
	out := testkit.Run(t, "qemu-img", "map", "--output=json", src.blobPath(top))
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	fileOff := int64(-1)
	for _, e := range m {
		if e.Depth == 0 && e.Data && e.Start == 2<<20 && e.Offset != nil {
			fileOff = *e.Offset
		}
	}
	if fileOff < 0 {
		t.Fatalf("no data cluster of the top at 2 MiB in %s", out)
	}
	bad := readFile(t, src.blobPath(top))
	bad[fileOff+100] ^= 0xff
	path := "/" + remote.BlobPath(top.hex())
	ls.tamper[path] = bad

	li, err := cache.OpenLazy(ctx, ix, top.id)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := li.Disk.ReadAt(buf, 2<<20); !errors.Is(err, ErrChunk) {
		t.Fatalf("read of the tampered range: %v", err)
	}
	// Every other range of the disk reads right.
	for off := int64(0); off < li.Size; off += 64 << 10 {
		if off == 2<<20 {
			continue
		}
		b := make([]byte, 64<<10)
		if _, err := li.Disk.ReadAt(b, off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(b, want[off:off+64<<10]) {
			t.Fatalf("read at %d differs", off)
		}
	}
	if li.Stats().Failures == 0 {
		t.Fatalf("stats %+v", li.Stats())
	}
	if err := li.Close(); err != nil {
		t.Fatal(err)
	}
	// Nothing tampered is kept: the partial holds no byte of the bad
	// chunk.
	part := filepath.Join(cache.Dir(), ".tmp", "partial-"+top.hex())
	pb := readFile(t, part)
	cs := int64(64 << 10)
	chunk := fileOff / cs * cs
	if int64(len(pb)) > chunk && bytes.Contains(pb[chunk:min(int64(len(pb)), chunk+cs)], bad[fileOff:fileOff+101]) {
		t.Fatal("the partial holds the tampered bytes")
	}
	if _, err := os.Stat(part); err != nil {
		t.Fatal(err)
	}

	// The server is fixed: the blob completes.
	ls.mu.Lock()
	delete(ls.tamper, path)
	ls.mu.Unlock()
	li, err = cache.OpenLazy(ctx, ix, top.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := li.Disk.ReadAt(buf, 2<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, want[2<<20:2<<20+4096]) {
		t.Fatal("the range reads wrong once the server is fixed")
	}
	if err := li.Prefetch(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := li.Close(); err != nil {
		t.Fatal(err)
	}
	if has, _ := cache.store.Has(top.blob); !has {
		t.Fatal("the blob did not complete")
	}
	fsckFaults(t, cache, 0, "")
}

// TestLazyNoChunks: an image whose index gives no chunk list cannot be
// read before it is pulled.
func TestLazyNoChunks(t *testing.T) {
	src, six, chain, _ := chainRepo(t)
	cache := cacheRepo(t, ourServer(t, src.dir), src.dir)
	if _, err := cache.OpenLazy(context.Background(), six, chain[2].id); !errors.Is(err, ErrNoChunks) {
		t.Fatalf("OpenLazy without chunk lists: %v", err)
	}
}

// TestLazyBusy: a blob whose partial another reader holds is reported,
// not waited for without end.
func TestLazyBusy(t *testing.T) {
	ctx := context.Background()
	_, ix, chain, _, cache := lazyChain(t)
	li, err := cache.OpenLazy(ctx, ix, chain[2].id)
	if err != nil {
		t.Fatal(err)
	}
	defer li.Close()
	if _, err := cache.OpenLazy(ctx, ix, chain[1].id); !errors.Is(err, cas.ErrBusy) {
		t.Fatalf("second reader of the same chain: %v", err)
	}
}

// TestLazyHugeBlobSize: an index whose entry claims a blob far too large
// for its chunk list to be held is refused, not allocated.
func TestLazyHugeBlobSize(t *testing.T) {
	for _, size := range []int64{1 << 62, 1<<63 - 1, 1 << 40} {
		_, ix, chain, ls, cache := lazyChain(t)
		e := ix.Images[chain[0].id]
		e.BlobSize, e.ChunkSize = size, cas.MinChunkSize
		li, err := cache.OpenLazy(context.Background(), ix, chain[2].id)
		if err == nil {
			li.Close()
			t.Fatalf("blob-size %d: OpenLazy accepted it", size)
		}
		if !strings.Contains(err.Error(), "chunk list") {
			t.Errorf("blob-size %d: %v", size, err)
		}
		if n := ls.bytes.Load(); n > 1<<20 {
			t.Errorf("blob-size %d: %d bytes fetched", size, n)
		}
	}
}

// TestLazyTamperedChunkList: a chunk list is checked against its digest
// before anything reads by it, and is not stored; the open fails and
// leaves nothing behind.
func TestLazyTamperedChunkList(t *testing.T) {
	ctx := context.Background()
	src, ix, chain, ls, cache := lazyChain(t)
	e := ix.Images[chain[2].id]
	list := readFile(t, filepath.Join(src.dir, "blobs", "sha256", e.Chunks.Encoded()))
	// Another chunk's sum in place of the first: a well-formed list that
	// would have every read of chunk 0 refused, or worse, trusted.
	bad := append(append([]byte(nil), list[cas.ChunkSumSize:2*cas.ChunkSumSize]...), list[cas.ChunkSumSize:]...)
	ls.tamper["/"+remote.BlobPath(e.Chunks.Encoded())] = bad
	if _, err := cache.OpenLazy(ctx, ix, chain[2].id); !errors.Is(err, cas.ErrDigestMismatch) {
		t.Fatalf("open with a tampered chunk list: %v", err)
	}
	if has, err := cache.store.Has(e.Chunks); err != nil || has {
		t.Fatalf("the tampered chunk list was stored (%v)", err)
	}
	// The other blobs of the chain keep what they fetched (their header
	// chunks), as after any stop; the top has no partial, and no
	// temporary file is left.
	for _, name := range tmpEntries(t, cache) {
		if name != "partial-"+chain[0].hex() && name != "partial-"+chain[1].hex() {
			t.Fatalf(".tmp/%s left after a refused open", name)
		}
	}
}
