package repo

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/config"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/remote"
	"github.com/opencontainers/go-digest"
)

// testClient retries fast, so that tests of failures do not wait.
func testClient() *remote.Client {
	c := remote.NewClient("test")
	c.BaseDelay = 5 * time.Millisecond
	c.MaxDelay = 50 * time.Millisecond
	c.MaxAttempts = 3
	return c
}

// image is one image of a test repository.
type image struct {
	id, blob digest.Digest
	size     int64
	parent   *image
	vsize    int64
}

func (im *image) hex() string { return im.blob.Encoded() }

// srcRepo builds a version 1 repository directory by hand, as another
// canga (or a person with qemu-img) would: blobs made by qemu-img, named
// by their sha256, with backing names that are the parent's HEX.
type srcRepo struct {
	t      testing.TB
	dir    string
	images []*image
	// chunkSize, when set, has writeIndex store a chunk list of each
	// blob and give it in the index (SPEC §9); badChunks gives a wrong
	// one instead.
	chunkSize int64
	badChunks bool
}

func newSrcRepo(t testing.TB) *srcRepo {
	t.Helper()
	testkit.Need(t, "qemu-img", "qemu-io", "sha256sum")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &srcRepo{t: t, dir: dir}
}

func (r *srcRepo) blobDir() string { return filepath.Join(r.dir, "blobs", "sha256") }

func (r *srcRepo) blobPath(im *image) string { return filepath.Join(r.blobDir(), im.hex()) }

// add makes an image of 4 MiB with a pattern at some offset, a delta of
// parent if not nil.
func (r *srcRepo) add(parent *image, pattern byte, off int64) *image {
	t := r.t
	t.Helper()
	tmp := filepath.Join(r.blobDir(), fmt.Sprintf("new-%d.qcow2", len(r.images)))
	args := []string{"create", "-q", "-f", "qcow2"}
	if parent != nil {
		args = append(args, "-b", parent.hex(), "-F", "qcow2")
	}
	testkit.Run(t, "qemu-img", append(args, tmp, "4M")...)
	testkit.QemuIO(t, "qcow2", tmp, fmt.Sprintf("write -P 0x%02x %d %d", pattern, off, 64<<10))
	return r.adopt(tmp, parent, testkit.RawDigest(t, tmp))
}

// adopt renames the file tmp, in blobs/sha256, to its digest and lists it
// as image id.
func (r *srcRepo) adopt(tmp string, parent *image, id digest.Digest) *image {
	t := r.t
	t.Helper()
	im := &image{parent: parent, vsize: 4 << 20, id: id}
	im.blob = testkit.FileDigest(t, tmp)
	fi, err := os.Stat(tmp)
	if err != nil {
		t.Fatal(err)
	}
	im.size = fi.Size()
	if err := os.Rename(tmp, r.blobPath(im)); err != nil {
		t.Fatal(err)
	}
	r.images = append(r.images, im)
	return im
}

// addFile puts a copy of an arbitrary file in the repository as the blob
// of image id.
func (r *srcRepo) addFile(path string, parent *image, id digest.Digest) *image {
	r.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		r.t.Fatal(err)
	}
	tmp := filepath.Join(r.blobDir(), "new-file")
	if err := os.WriteFile(tmp, b, 0o444); err != nil {
		r.t.Fatal(err)
	}
	return r.adopt(tmp, parent, id)
}

// writeIndex writes a version 1 index of every image, with comments and
// odd spacing that a byte-exact fetch must keep.
func (r *srcRepo) writeIndex() []byte {
	t := r.t
	t.Helper()
	var b strings.Builder
	b.WriteString("# a hand-written index: comments and   odd spacing stay\nversion: 1\nimages:\n")
	imgs := append([]*image(nil), r.images...)
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].id < imgs[j].id })
	for _, im := range imgs {
		fmt.Fprintf(&b, "  %s:    # image\n", im.id)
		fmt.Fprintf(&b, "    blob:   %s\n", im.blob)
		fmt.Fprintf(&b, "    blob-size: %d\n", im.size)
		if im.parent != nil {
			fmt.Fprintf(&b, "    parent: %s\n", im.parent.id)
		}
		fmt.Fprintf(&b, "    virtual-size: %d\n", im.vsize)
		b.WriteString("    description: \"test image ✓\"\n")
		if r.chunkSize != 0 {
			fmt.Fprintf(&b, "    chunks: %s\n    chunk-size: %d\n", r.storeChunks(im), r.chunkSize)
		}
	}
	b.WriteString("tags: {}\n")
	data := []byte(b.String())
	writeFile(t, filepath.Join(r.dir, IndexFile), data)
	return data
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	os.Remove(path)
	testkit.WriteFile(t, path, data, 0o644)
}

func readFile(t testing.TB, path string) []byte { return testkit.ReadFile(t, path) }

// keys is an ed25519 key pair made by ssh-keygen, and an allowed_signers
// file naming it.
type keys struct {
	priv, allowed string
}

func newKeys(t testing.TB, principal string) keys {
	t.Helper()
	dir := t.TempDir()
	priv := testkit.Keygen(t, dir, "id", "", "-t", "ed25519")
	allowed := filepath.Join(dir, "allowed_signers")
	writeFile(t, allowed, []byte(principal+" "+string(readFile(t, priv+".pub"))))
	return keys{priv: priv, allowed: allowed}
}

// sign signs dir/index.yaml into dir/index.yaml.sig with ssh-keygen.
func (k keys) sign(t testing.TB, dir string) {
	t.Helper()
	os.Remove(filepath.Join(dir, SigFile))
	testkit.SSHSign(t, k.priv, "canga-index", filepath.Join(dir, IndexFile))
}

// ourServer serves dir with remote.Handler, as canga serve does.
func ourServer(t testing.TB, dir string) string {
	t.Helper()
	srv := httptest.NewServer(remote.Handler(dir))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// servers are the static web servers a remote can be: canga serve's
// handler, and python's http.server (which ignores Range).
var servers = []struct {
	name  string
	start func(testing.TB, string) string
}{
	{"canga-serve", ourServer},
	{"python", testkit.PythonHTTPServer},
}

// sourceKinds are every kind of Source a copy reads from, each made over
// a repository directory.
var sourceKinds = []struct {
	name string
	open func(t testing.TB, dir string) Source
}{
	{"directory", func(t testing.TB, dir string) Source {
		r, err := Open(config.Repo{Name: "src", Path: dir})
		if err != nil {
			t.Fatal(err)
		}
		return r.AsSource()
	}},
	{"canga-serve", func(t testing.TB, dir string) Source {
		return httpSource{c: testClient(), url: ourServer(t, dir), signers: noSigners}
	}},
	{"python", func(t testing.TB, dir string) Source {
		return httpSource{c: testClient(), url: testkit.PythonHTTPServer(t, dir), signers: noSigners}
	}},
}

func noSigners() (*signing.AllowedSigners, error) { return nil, nil }

// localRepo is a new, empty local repository.
func localRepo(t testing.TB) *Repo {
	t.Helper()
	r, err := Open(config.Repo{Name: "local", Path: filepath.Join(t.TempDir(), "local")})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// cacheRepo is a new cache of the remote at url, with the index of dir
// in it as a fetch would leave it.
func cacheRepo(t testing.TB, url, dir string) *Repo {
	t.Helper()
	r, err := Open(config.Repo{Name: "remote", Path: filepath.Join(t.TempDir(), "cache"), URL: url})
	if err != nil {
		t.Fatal(err)
	}
	r.h = &Home{HTTP: testClient()}
	writeFile(t, filepath.Join(r.Dir(), IndexFile), readFile(t, filepath.Join(dir, IndexFile)))
	return r
}

// tmpEntries lists what is left in a repository's .tmp/.
func tmpEntries(t testing.TB, r *Repo) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(r.Dir(), ".tmp"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// storeChunks writes the chunk list of im's blob as a blob of the
// repository and returns its digest.
func (r *srcRepo) storeChunks(im *image) digest.Digest {
	t := r.t
	t.Helper()
	f, err := os.Open(r.blobPath(im))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	list, err := cas.ChunkList(f, r.chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	if r.badChunks {
		list[0] ^= 1
	}
	d := digest.FromBytes(list)
	p := filepath.Join(r.blobDir(), d.Encoded())
	writeFile(t, p, list)
	return d
}

// grownBase makes src hold one base image of a few MiB (qemu-io writes
// size bytes of 0x66), big enough to cut a download of it, and returns it
// with src's index.
func grownBase(t *testing.T, src *srcRepo, size string) (*image, *index.Index) {
	t.Helper()
	base := src.add(nil, 0x11, 0)
	p := filepath.Join(src.blobDir(), "grow.qcow2")
	if err := os.Rename(src.blobPath(base), p); err != nil {
		t.Fatal(err)
	}
	src.images = nil
	testkit.QemuIO(t, "qcow2", p, "write -P 0x66 0 "+size)
	base = src.adopt(p, nil, testkit.RawDigest(t, p))
	six, err := index.Parse(src.writeIndex())
	if err != nil {
		t.Fatal(err)
	}
	return base, six
}
