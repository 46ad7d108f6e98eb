package main_test

// End-to-end tests of OCI registries (SPEC §8): push, pull, list, login
// and logout against a real registry (CNCF distribution 2.8, which
// testregistry runs), plain and with htpasswd authentication over TLS.
// The oracles are the distribution API itself, spoken here with net/http
// as any client would, qemu-img, tar and ssh-keygen. Hostile registries
// are crafted artifacts pushed by hand, and proxies in front of the real
// registry that count, tamper or answer for it.

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"github.com/cangallo/canga/internal/testregistry"
	"go.yaml.in/yaml/v3"
)

// The media types of SPEC §8 and of the OCI specifications.
const (
	ociArtifactType    = "application/vnd.cangallo.image.v1"
	ociConfigType      = "application/vnd.cangallo.image.config.v1+json"
	ociLayerType       = "application/vnd.cangallo.qcow2.v1"
	ociSigType         = "application/vnd.cangallo.signature.v1"
	ociSigLayerType    = "application/vnd.cangallo.sshsig.v1"
	ociSigNamespace    = "canga-oci"
	ociManifestType    = "application/vnd.oci.image.manifest.v1+json"
	ociIndexType       = "application/vnd.oci.image.index.v1+json"
	ociEmptyType       = "application/vnd.oci.empty.v1+json"
	ociEmptyDigest     = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" // of "{}"
	ociImageConfigType = "application/vnd.oci.image.config.v1+json"
	ociTarLayerType    = "application/vnd.oci.image.layer.v1.tar"
	ociTitle           = "org.opencontainers.image.title"
	ociCreated         = "org.opencontainers.image.created"
	ociDescription     = "org.opencontainers.image.description"
	ociImageID         = "io.cangallo.image.id"
)

// ociDesc is an OCI content descriptor, as the specification spells it.
type ociDesc struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// ociManifest is an OCI image manifest or image index.
type ociManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *ociDesc          `json:"config,omitempty"`
	Layers        []ociDesc         `json:"layers,omitempty"`
	Manifests     []ociDesc         `json:"manifests,omitempty"`
	Subject       *ociDesc          `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func ociSHA(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func ociHex(d string) string { return strings.TrimPrefix(d, "sha256:") }

func ociRef(host, name string) string { return "oci://" + host + "/" + name }

// ---- an independent registry client: the distribution API by hand ----

// ociClient speaks the distribution API with net/http, with the
// registry's CA and account where it has them.
type ociClient struct {
	base           string
	user, password string
	hc             *http.Client
}

func newOCIClient(t testing.TB, reg *testregistry.Registry) *ociClient {
	t.Helper()
	c := &ociClient{base: reg.URL, user: reg.User, password: reg.Password, hc: &http.Client{Timeout: 2 * time.Minute}}
	if reg.CAFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(testkit.ReadFile(t, reg.CAFile)) {
			t.Fatalf("no certificate in %s", reg.CAFile)
		}
		c.hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	return c
}

func (c *ociClient) url(t testing.TB, ref string) string {
	t.Helper()
	b, err := url.Parse(c.base)
	if err != nil {
		t.Fatal(err)
	}
	u, err := b.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	return u.String()
}

// do sends a request; size < 0 leaves the length to net/http.
func (c *ociClient) do(t testing.TB, method, ref string, body io.Reader, size int64, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, c.url(t, ref), body)
	if err != nil {
		t.Fatal(err)
	}
	if size >= 0 {
		req.ContentLength = size
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, ref, err)
	}
	return resp
}

// get returns the body of a GET that must answer 200.
func (c *ociClient) get(t testing.TB, ref, accept string) ([]byte, http.Header) {
	t.Helper()
	hdr := map[string]string{}
	if accept != "" {
		hdr["Accept"] = accept
	}
	resp := c.do(t, http.MethodGet, ref, nil, -1, hdr)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", ref, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", ref, resp.Status, b)
	}
	return b, resp.Header
}

// status is the status of a request without a body.
func (c *ociClient) status(t testing.TB, method, ref string) int {
	t.Helper()
	resp := c.do(t, method, ref, nil, -1, nil)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// manifest fetches NAME's manifest (or index) REF and returns its bytes,
// its parsed form and its digest, checked against the bytes.
func (c *ociClient) manifest(t testing.TB, name, ref string) ([]byte, ociManifest, string) {
	t.Helper()
	raw, hdr := c.get(t, "/v2/"+name+"/manifests/"+ref, ociManifestType+", "+ociIndexType)
	d := ociSHA(raw)
	if got := hdr.Get("Docker-Content-Digest"); got != d {
		t.Errorf("GET %s manifest %s: Docker-Content-Digest %s, the bytes hash to %s", name, ref, got, d)
	}
	var m ociManifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("manifest %s:%s: %v\n%s", name, ref, err, raw)
	}
	return raw, m, d
}

// blob fetches a small blob and checks it against its digest.
func (c *ociClient) blob(t testing.TB, name, d string) []byte {
	t.Helper()
	b, _ := c.get(t, "/v2/"+name+"/blobs/"+d, "")
	if got := ociSHA(b); got != d {
		t.Fatalf("blob %s of %s hashes to %s", d, name, got)
	}
	return b
}

// blobToFile streams a blob into path and checks it against its digest.
func (c *ociClient) blobToFile(t testing.TB, name, d, path string) {
	t.Helper()
	resp := c.do(t, http.MethodGet, "/v2/"+name+"/blobs/"+d, nil, -1, nil)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET blob %s of %s: %s", d, name, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), resp.Body); err != nil {
		t.Fatalf("GET blob %s: %v", d, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d {
		t.Fatalf("blob %s of %s hashes to %s", d, name, got)
	}
}

// putBlob uploads data into NAME the two-step way (POST, then PUT with
// the digest) and returns its digest.
func (c *ociClient) putBlob(t testing.TB, name string, data []byte) string {
	t.Helper()
	d := ociSHA(data)
	resp := c.do(t, http.MethodPost, "/v2/"+name+"/blobs/uploads/", nil, 0, nil)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST upload to %s: %s", name, resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", d)
	loc.RawQuery = q.Encode()
	resp = c.do(t, http.MethodPut, loc.String(), bytes.NewReader(data), int64(len(data)),
		map[string]string{"Content-Type": "application/octet-stream"})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT blob %s to %s: %s\n%s", d, name, resp.Status, body)
	}
	return d
}

// putManifest stores a manifest under ref (a tag or its digest) and
// returns its digest.
func (c *ociClient) putManifest(t testing.TB, name, ref, mediaType string, body []byte) string {
	t.Helper()
	resp := c.do(t, http.MethodPut, "/v2/"+name+"/manifests/"+ref, bytes.NewReader(body), int64(len(body)),
		map[string]string{"Content-Type": mediaType})
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT manifest %s:%s: %s\n%s", name, ref, resp.Status, out)
	}
	return ociSHA(body)
}

// tags is the registry's tag list of NAME.
func (c *ociClient) tags(t testing.TB, name string) []string {
	t.Helper()
	b, _ := c.get(t, "/v2/"+name+"/tags/list", "")
	var v struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("tags of %s: %v\n%s", name, err, b)
	}
	return v.Tags
}

// ---- a proxy in front of the registry: counts, tampers, impersonates ----

// ociReq is one request that went through an ociProxy.
type ociReq struct {
	Method, Path string
	Query        url.Values
	Body         int64 // bytes of the request body
	Status       int
}

// ociProxy passes requests on to a plain registry, recording each. hook
// may answer a request itself (true); modify may change an answer.
type ociProxy struct {
	Host string // 127.0.0.1:PORT, a loopback host canga reaches over plain HTTP

	mu   sync.Mutex
	reqs []ociReq
}

type ociCountingBody struct {
	rc io.ReadCloser
	n  int64
}

func (b *ociCountingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *ociCountingBody) Close() error { return b.rc.Close() }

type ociStatusWriter struct {
	http.ResponseWriter
	status int
}

func (w *ociStatusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *ociStatusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func ociStartProxy(t testing.TB, reg *testregistry.Registry, hook func(http.ResponseWriter, *http.Request) bool, modify func(*http.Response) error) *ociProxy {
	t.Helper()
	if reg.CAFile != "" {
		t.Fatal("ociStartProxy: a plain registry only")
	}
	target, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = modify
	p := &ociProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := &ociCountingBody{rc: r.Body}
		r.Body = body
		sw := &ociStatusWriter{ResponseWriter: w}
		if hook == nil || !hook(sw, r) {
			rp.ServeHTTP(sw, r)
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, ociReq{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Body: body.n, Status: sw.status})
		p.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	p.Host = strings.TrimPrefix(srv.URL, "http://")
	return p
}

// take returns the requests recorded since the last take.
func (p *ociProxy) take() []ociReq {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.reqs
	p.reqs = nil
	return r
}

// ociTraffic sums up what a push sent.
type ociTraffic struct {
	uploads   map[string]int // blob digest -> finished uploads (PUT or POST with ?digest=)
	mounts    map[string]string
	blobBytes int64    // request body bytes sent to blobs/uploads/
	manifests []string // paths of the manifest PUTs
}

func ociSummarize(reqs []ociReq) ociTraffic {
	tr := ociTraffic{uploads: map[string]int{}, mounts: map[string]string{}}
	for _, r := range reqs {
		switch {
		case strings.Contains(r.Path, "/blobs/uploads/"):
			tr.blobBytes += r.Body
			if d := r.Query.Get("digest"); d != "" && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
				tr.uploads[d]++
			}
			if m := r.Query.Get("mount"); m != "" && r.Method == http.MethodPost && r.Status == http.StatusCreated {
				tr.mounts[m] = r.Query.Get("from")
			}
		case strings.Contains(r.Path, "/manifests/") && r.Method == http.MethodPut:
			tr.manifests = append(tr.manifests, r.Path)
		}
	}
	return tr
}

func (tr ociTraffic) String() string {
	return fmt.Sprintf("uploads %v, mounts %v, %d bytes to blob uploads, manifest PUTs %v", tr.uploads, tr.mounts, tr.blobBytes, tr.manifests)
}

// ociFlipReader inverts one bit of the byte at offset at of a body.
type ociFlipReader struct {
	rc      io.ReadCloser
	at, off int64
}

func (f *ociFlipReader) Read(b []byte) (int, error) {
	n, err := f.rc.Read(b)
	if f.at >= f.off && f.at < f.off+int64(n) {
		b[f.at-f.off] ^= 0x01
	}
	f.off += int64(n)
	return n, err
}

func (f *ociFlipReader) Close() error { return f.rc.Close() }

// ---- canga homes and runs ----

// ociPublisher is a canga home whose default repository is a copy of the
// publisher's (remPublisher: base, child and their tags), to push from.
// It returns the home and that repository's directory.
func ociPublisher(t testing.TB) (home, repo string, pub remPub) {
	t.Helper()
	pub = remPublisher(t)
	repo = remCopyRepo(t, pub.Repo)
	return remPubHome(t, repo), repo, pub
}

// ociConsumer is an empty canga home with a second local repository,
// "other".
func ociConsumer(t testing.TB) string {
	t.Helper()
	home := t.TempDir()
	remWriteConfig(t, home, repoDir(home), "  other:", "    path: "+ociOtherDir(home))
	return home
}

func ociOtherDir(home string) string { return filepath.Join(home, "other") }

// ociCopyConsumer is a new consumer whose default repository is a copy of
// src's.
func ociCopyConsumer(t testing.TB, src string) string {
	t.Helper()
	home := ociConsumer(t)
	testkit.Run(t, "cp", "-a", repoDir(src), repoDir(home))
	return home
}

var ociDigestRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ociPush runs canga push and returns the manifest digest it prints as
// the one line of its standard output.
func ociPush(t testing.TB, home string, args ...string) string {
	t.Helper()
	out := ok(t, home, append([]string{"push"}, args...)...)
	d := strings.TrimSuffix(out, "\n")
	if !ociDigestRe.MatchString(d) || strings.Count(out, "\n") != 1 {
		t.Fatalf("canga push %v printed %q, want one line with the manifest digest", args, out)
	}
	return d
}

// ociPull runs canga pull and returns the image ID it prints as the one
// line of its standard output.
func ociPull(t testing.TB, home string, args ...string) string {
	t.Helper()
	out := ok(t, home, append([]string{"pull"}, args...)...)
	id := strings.TrimSuffix(out, "\n")
	if !ociDigestRe.MatchString(id) || strings.Count(out, "\n") != 1 {
		t.Fatalf("canga pull %v printed %q, want one line with the image ID", args, out)
	}
	return id
}

// ociPullRefused runs a pull that must fail cleanly and leave the default
// repository byte-for-byte as it was.
func ociPullRefused(t testing.TB, home string, args ...string) result {
	t.Helper()
	before := snapshot(t, home)
	r := fails(t, home, append([]string{"pull"}, args...)...)
	if r.code != 1 {
		t.Errorf("exit status %d, want 1\n%v", r.code, r)
	}
	requireUnchanged(t, home, before)
	if tmp := tmpEntries(t, home); len(tmp) != 0 {
		t.Logf("after the refused pull, .tmp holds %v", tmp)
	}
	return r
}

// ociSays requires r's standard error to contain one of words, ignoring
// case: what kind of failure a user is told about.
func ociSays(t testing.TB, r result, what string, words ...string) {
	t.Helper()
	low := strings.ToLower(r.stderr)
	for _, w := range words {
		if strings.Contains(low, strings.ToLower(w)) {
			return
		}
	}
	t.Errorf("the error is not a clear %s error (none of %q):\n%v", what, words, r)
}

var (
	ociAuthWords = []string{"unauthorized", "authentication", "credentials", "401", "login"}
	ociTLSWords  = []string{"certificate", "x509", "tls"}
)

// cangaInput runs canga with stdin as its standard input (runCanga gives
// it none).
func cangaInput(t testing.TB, home, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(cangaBin, args...)
	cmd.Env = cangaEnv(home)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("start canga: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	r := result{args: args}
	var err error
	select {
	case err = <-done:
	case <-time.After(cangaTimeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		r.stdout, r.stderr, r.code = out.String(), errb.String(), -1
		t.Errorf("canga %s: still running after %v, killed", strings.Join(args, " "), cangaTimeout)
		return r
	}
	r.stdout, r.stderr = out.String(), errb.String()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("canga %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ociLogin logs home in to the registry with --password-stdin (and a
// newline after the password, as `echo` gives it).
func ociLogin(t testing.TB, home string, reg *testregistry.Registry) {
	t.Helper()
	r := cangaInput(t, home, reg.Password+"\n", "login", reg.Host, "-u", reg.User, "--password-stdin", "--ca-file", reg.CAFile)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	requireNoPanic(t, r)
}

// ociDockerAuth is the "auth" of host in home's Docker config.json, and
// whether there is an entry for host at all.
func ociDockerAuth(t testing.TB, home, host string) (string, bool) {
	t.Helper()
	p := filepath.Join(dockerConfigDir(home), "config.json")
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]struct {
			Auth string `json:"auth"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v\n%s", p, err, b)
	}
	e, ok := cfg.Auths[host]
	return e.Auth, ok
}

// ociListItem is one element of canga list oci://... --json.
type ociListItem struct {
	Tag    string `json:"tag"`
	ID     string `json:"id"`
	Digest string `json:"digest"`
	Kind   string `json:"kind"` // optional: "image", "containerdisk"
}

func ociListJSON(t testing.TB, home string, args ...string) []ociListItem {
	t.Helper()
	out := ok(t, home, args...)
	var doc struct {
		Version    int              `json:"version"`
		Repository string           `json:"repository"`
		Tags       []map[string]any `json:"tags"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("list %v: not a JSON document: %v\n%s", args, err, out)
	}
	if doc.Version != 1 || doc.Tags == nil || !strings.HasPrefix(doc.Repository, "oci://") {
		t.Fatalf("list %v: version %d, repository %q, tags %v", args, doc.Version, doc.Repository, doc.Tags)
	}
	raw := doc.Tags
	if dec.More() {
		t.Fatalf("list %v: more than one JSON document\n%s", args, out)
	}
	var items []ociListItem
	for _, m := range raw {
		var it ociListItem
		for k, dst := range map[string]*string{"tag": &it.Tag, "id": &it.ID, "digest": &it.Digest} {
			s, ok := m[k].(string)
			if !ok {
				t.Errorf("list %v: an item without a string %q: %v", args, k, m)
			}
			*dst = s
		}
		it.Kind, _ = m["kind"].(string)
		items = append(items, it)
	}
	return items
}

// ociIndexEntry is an image's entry of an index.yaml.
type ociIndexEntry struct {
	Blob        string `yaml:"blob"`
	BlobSize    int64  `yaml:"blob-size"`
	Parent      string `yaml:"parent"`
	VirtualSize int64  `yaml:"virtual-size"`
	ClusterSize int64  `yaml:"cluster-size"`
	Compression string `yaml:"compression"`
	Created     string `yaml:"created"`
	Description string `yaml:"description"`
	OS          string `yaml:"os"`
	Chunks      string `yaml:"chunks"`
	ChunkSize   int64  `yaml:"chunk-size"`
}

func ociReadIndex(t testing.TB, repo string) map[string]ociIndexEntry {
	t.Helper()
	var ix struct {
		Images map[string]ociIndexEntry `yaml:"images"`
	}
	p := filepath.Join(repo, "index.yaml")
	if err := yaml.Unmarshal(testkit.ReadFile(t, p), &ix); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return ix.Images
}

func ociTime(t testing.TB, what, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Errorf("%s %q is not an RFC 3339 time: %v", what, s, err)
	}
	return v
}

// ociTags is the tags of image id in a repository of home (canga list).
func ociTags(t testing.TB, home, repo, id string) ([]string, bool) {
	t.Helper()
	it := remFindItem(listJSON(t, home), repo, id)
	if it == nil {
		return nil, false
	}
	return it.Tags, it.Present
}

// ---- the tests ----

// TestOCIRoundTrip: push, list, pull, login and logout against a plain
// registry (reached without --plain-http, being on 127.0.0.1) and against
// one with htpasswd authentication over TLS (--ca-file), with the
// publisher's base and child. The pulled images are the pushed ones:
// same image IDs, same blobs, same content (qemu-img compare), and fsck
// passes.
func TestOCIRoundTrip(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name := "plain"
		if secure {
			name = "auth+tls"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			reg := testregistry.Start(t, testregistry.Options{Secure: secure})
			pubHome, _, pub := ociPublisher(t)
			var tlsFlags []string
			if secure {
				tlsFlags = []string{"--ca-file", reg.CAFile}
			}
			with := func(args ...string) []string { return append(args, tlsFlags...) }
			ref := ociRef(reg.Host, "canga/demo")

			if secure {
				ociLoginChecks(t, reg, pubHome)
			}

			baseDigest := ociPush(t, pubHome, with("base", ref+":base")...)
			childDigest := ociPush(t, pubHome, with("child", ref+":child")...)
			if baseDigest == childDigest {
				t.Fatalf("base and child pushed as the same manifest %s", baseDigest)
			}
			// The same image gives the same manifest, whenever pushed and
			// whatever the tag; no TAG is "latest".
			if d := ociPush(t, pubHome, with("child", ref+":child")...); d != childDigest {
				t.Errorf("the second push of child gave %s, the first %s", d, childDigest)
			}
			if d := ociPush(t, pubHome, with("base", ref)...); d != baseDigest {
				t.Errorf("the push of base as latest gave %s, as base %s", d, baseDigest)
			}
			fails(t, pubHome, with("push", "no-such-image", ref+":x")...)

			// What the registry itself says.
			c := newOCIClient(t, reg)
			want := map[string][2]string{ // tag -> image ID, manifest digest
				"base": {pub.BaseID, baseDigest}, "child": {pub.ChildID, childDigest}, "latest": {pub.BaseID, baseDigest},
			}
			if tags := c.tags(t, "canga/demo"); !remSameSet(tags, []string{"base", "child", "latest"}) {
				t.Errorf("the registry's tags: %v, want base, child, latest", tags)
			}
			for tag, w := range want {
				if _, _, d := c.manifest(t, "canga/demo", tag); d != w[1] {
					t.Errorf("the registry's %s is %s, push printed %s", tag, d, w[1])
				}
			}

			// list, as JSON and as a table; --plain-http is accepted where
			// the registry is plain.
			listArgs := with("list", ref)
			if !secure {
				listArgs = append(listArgs, "--plain-http")
			}
			items := ociListJSON(t, pubHome, append(listArgs, "--json")...)
			if len(items) != len(want) {
				t.Errorf("list --json: %d items, want %d: %+v", len(items), len(want), items)
			}
			for _, it := range items {
				w, found := want[it.Tag]
				if !found || it.ID != w[0] || it.Digest != w[1] {
					t.Errorf("list --json: %+v, want id %s digest %s", it, w[0], w[1])
				}
			}
			ociRequireTable(t, ok(t, pubHome, listArgs...), map[string]string{"base": pub.BaseID, "child": pub.ChildID, "latest": pub.BaseID})

			// pull into a consumer.
			home := ociConsumer(t)
			if secure {
				r := ociPullRefused(t, home, with(ref+":child")...)
				ociSays(t, r, "authentication", ociAuthWords...)
				ociLogin(t, home, reg)
			}
			ociPullRefused(t, home, with(ref+":no-such-tag")...)
			ociPullRefused(t, home, with(ref+"@sha256:"+strings.Repeat("0", 64))...)
			if id := ociPull(t, home, with(ref+":child")...); id != pub.ChildID {
				t.Fatalf("pull printed %s, want the child's ID %s", id, pub.ChildID)
			}
			if tags, present := ociTags(t, home, "default", pub.ChildID); !present || !remSameSet(tags, []string{"demo:child"}) {
				t.Errorf("the pulled child: present %t, tags %v, want the tag demo:child", present, tags)
			}
			if tags, present := ociTags(t, home, "default", pub.BaseID); !present || len(tags) != 0 {
				t.Errorf("the pulled child's parent: present %t, tags %v, want no tag", present, tags)
			}
			var shown struct {
				ID     string `json:"id"`
				Parent string `json:"parent"`
			}
			out := ok(t, home, "show", "--json", "demo:child")
			if err := json.Unmarshal([]byte(out), &shown); err != nil || shown.ID != pub.ChildID || shown.Parent != pub.BaseID {
				t.Errorf("show --json demo:child (%v): %s", err, out)
			}
			for _, b := range []string{pub.BaseBlob, pub.ChildBlob} {
				if got := testkit.FileDigest(t, blobPath(home, b)).String(); got != b {
					t.Errorf("the pulled blob %s holds bytes that hash to %s", b, got)
				}
			}
			exported := filepath.Join(t.TempDir(), "child.qcow2")
			ok(t, home, "export", "demo:child", exported)
			testkit.QemuCompare(t, exported, pub.Child)
			if got := testkit.RawDigest(t, exported).String(); got != pub.ChildID {
				t.Errorf("the exported pulled child has image ID %s, want %s", got, pub.ChildID)
			}
			ok(t, home, "fsck")
			// A registry has no chunk lists: the pull computes them,
			// the same lists as the publisher's of the same bytes.
			pubIx := string(testkit.ReadFile(t, filepath.Join(pub.Repo, "index.yaml")))
			got := ociReadIndex(t, repoDir(home))
			for _, id := range []string{pub.BaseID, pub.ChildID} {
				e := got[id]
				if want := remEntryField(pubIx, id, "chunks"); e.Chunks == "" || e.Chunks != want || e.ChunkSize != 1<<20 {
					t.Errorf("pulled %s: chunks %q (%d), the publisher's %q", id, e.Chunks, e.ChunkSize, want)
				} else if sum := testkit.FileDigest(t, blobPath(home, e.Chunks)).String(); sum != e.Chunks {
					t.Errorf("chunk list %s hashes to %s", e.Chunks, sum)
				}
			}

			// Pulling again changes nothing.
			before := snapshot(t, home)
			if id := ociPull(t, home, with(ref+":child")...); id != pub.ChildID {
				t.Errorf("the second pull printed %s", id)
			}
			requireUnchanged(t, home, before)

			// No TAG is latest; --tag names the image; a pull by digest
			// tags nothing; --repo stores elsewhere.
			if r := canga(t, home, append([]string{"pull"}, with(ref)...)...); r.code != 0 || r.stdout != pub.BaseID+"\n" {
				t.Errorf("pull without a tag: want latest, the base %s\n%v", pub.BaseID, r)
			} else if tags, _ := ociTags(t, home, "default", pub.BaseID); !remSameSet(tags, []string{"demo:latest"}) {
				t.Errorf("after the pull of latest, base has tags %v, want demo:latest", tags)
			}
			if id := ociPull(t, home, with(ref+":child", "--tag", "mine")...); id != pub.ChildID {
				t.Errorf("pull --tag printed %s", id)
			}
			if tags, _ := ociTags(t, home, "default", pub.ChildID); !remSameSet(tags, []string{"demo:child", "mine"}) {
				t.Errorf("after pull --tag mine, child has tags %v", tags)
			}
			if id := ociPull(t, home, with(ref+"@"+childDigest, "--repo", "other")...); id != pub.ChildID {
				t.Errorf("pull by digest printed %s", id)
			}
			for _, id := range []string{pub.BaseID, pub.ChildID} {
				if tags, present := ociTags(t, home, "other", id); !present || len(tags) != 0 {
					t.Errorf("after the pull by digest into other, %s: present %t, tags %v, want no tag", id, present, tags)
				}
			}
			if names := remRequireGoodBlobs(t, ociOtherDir(home)); !remSameSet(names, []string{ociHex(pub.BaseBlob), ociHex(pub.ChildBlob)}) {
				t.Errorf("the blobs of other: %v", names)
			}
			ok(t, home, "fsck")
			ok(t, home, "fsck", "other")

			if !secure {
				return
			}
			// Without --ca-file the registry's certificate is unknown:
			// a TLS error, whatever the credentials.
			r := fails(t, pubHome, "push", "child", ref+":child")
			ociSays(t, r, "TLS", ociTLSWords...)
			r = ociPullRefused(t, home, ref+":child")
			ociSays(t, r, "TLS", ociTLSWords...)
			// logout forgets the credentials, and the registry refuses.
			ok(t, pubHome, "logout", reg.Host)
			if _, found := ociDockerAuth(t, pubHome, reg.Host); found {
				t.Errorf("logout left the credentials of %s in config.json", reg.Host)
			}
			r = fails(t, pubHome, with("push", "child", ref+":child")...)
			ociSays(t, r, "authentication", ociAuthWords...)
			r = fails(t, pubHome, with("list", ref)...)
			ociSays(t, r, "authentication", ociAuthWords...)
		})
	}
}

// ociLoginChecks: with the secure registry, a push without credentials
// fails with an authentication error; login refuses a password given as
// an argument, a wrong password, a missing CA and a password it would have
// to prompt for without a terminal, and writes nothing then; a good login
// writes Docker's config.json as docker login does.
func ociLoginChecks(t *testing.T, reg *testregistry.Registry, home string) {
	t.Helper()
	ca := []string{"--ca-file", reg.CAFile}
	noEntry := func(what string) {
		t.Helper()
		if _, found := ociDockerAuth(t, home, reg.Host); found {
			t.Errorf("%s wrote credentials for %s", what, reg.Host)
		}
	}
	r := fails(t, home, append([]string{"push", "child", ociRef(reg.Host, "canga/demo:child")}, ca...)...)
	ociSays(t, r, "authentication", ociAuthWords...)

	for _, flag := range []string{"-p", "--password"} {
		fails(t, home, append([]string{"login", reg.Host, "-u", reg.User, flag, reg.Password}, ca...)...)
		noEntry("login " + flag)
	}
	r = cangaInput(t, home, reg.Password+"\n", "login", reg.Host, "-u", reg.User, "--password-stdin")
	requireCleanFailure(t, r)
	ociSays(t, r, "TLS", ociTLSWords...)
	noEntry("login without --ca-file")
	r = cangaInput(t, home, "not-"+reg.Password+"\n", append([]string{"login", reg.Host, "-u", reg.User, "--password-stdin"}, ca...)...)
	requireCleanFailure(t, r)
	ociSays(t, r, "authentication", ociAuthWords...)
	noEntry("login with a wrong password")
	// No --password-stdin and no terminal to prompt on.
	r = cangaInput(t, home, "", append([]string{"login", reg.Host, "-u", reg.User}, ca...)...)
	requireCleanFailure(t, r)
	noEntry("login without a terminal")

	ociLogin(t, home, reg)
	auth, found := ociDockerAuth(t, home, reg.Host)
	if want := base64.StdEncoding.EncodeToString([]byte(reg.User + ":" + reg.Password)); !found || auth != want {
		t.Errorf("config.json after login: auths[%q].auth = %q (entry %t), want %q", reg.Host, auth, found, want)
	}
	if fi, err := os.Stat(filepath.Join(dockerConfigDir(home), "config.json")); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("config.json holds a password and has mode %v", fi.Mode().Perm())
	}
}

// ociRequireTable checks list's table: a line for each tag, with the
// first 16 hex digits of its image ID (not the full ID).
func ociRequireTable(t testing.TB, out string, want map[string]string) {
	t.Helper()
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		f := strings.Fields(l)
		for tag, id := range want {
			if !remContains(f, tag) {
				continue
			}
			seen[tag] = true
			short := ociHex(id)[:16]
			if !remContains(f, short) && !remContains(f, "sha256:"+short) {
				t.Errorf("list: the line of %s does not show %s: %q", tag, short, l)
			}
			for _, x := range f {
				if x != short && strings.HasPrefix(ociHex(id), x) && len(x) > 16 {
					t.Errorf("list: the line of %s shows a long ID %q; the table shows 16 hex digits", tag, x)
				}
			}
		}
	}
	for tag := range want {
		if !seen[tag] {
			t.Errorf("list: no line for tag %s\n%s", tag, out)
		}
	}
}

// TestOCIArtifactForm: what push stores is SPEC §8's artifact, field by
// field, as a plain distribution client sees it; its layers, laid out by
// their titles, are a chain qemu-img opens, with the content canga
// exports.
func TestOCIArtifactForm(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.Options{})
	home, repo, pub := ociPublisher(t)
	ix := ociReadIndex(t, repo)
	c := newOCIClient(t, reg)

	for _, img := range []struct {
		tag   string
		chain []string // image IDs, base first
		file  string   // what qemu-img must find identical
	}{
		{"base", []string{pub.BaseID}, baseQcow2(t)},
		{"child", []string{pub.BaseID, pub.ChildID}, pub.Child},
	} {
		t.Run(img.tag, func(t *testing.T) {
			id := img.chain[len(img.chain)-1]
			e := ix[id]
			name := "form/" + img.tag
			d := ociPush(t, home, img.tag, ociRef(reg.Host, name+":v1"))
			raw, m, got := c.manifest(t, name, "v1")
			if got != d {
				t.Errorf("the registry's manifest is %s, push printed %s", got, d)
			}
			var top map[string]json.RawMessage
			if err := json.Unmarshal(raw, &top); err != nil {
				t.Fatal(err)
			}
			if string(top["schemaVersion"]) != "2" || m.MediaType != ociManifestType || m.ArtifactType != ociArtifactType {
				t.Errorf("manifest: schemaVersion %s, mediaType %q, artifactType %q; want 2, %s, %s",
					top["schemaVersion"], m.MediaType, m.ArtifactType, ociManifestType, ociArtifactType)
			}
			if m.Subject != nil || len(m.Manifests) != 0 {
				t.Errorf("manifest has a subject or manifests:\n%s", raw)
			}

			// The config: the index entry and the chain.
			if m.Config == nil || m.Config.MediaType != ociConfigType {
				t.Fatalf("config descriptor %+v, want media type %s", m.Config, ociConfigType)
			}
			cfgRaw := c.blob(t, name, m.Config.Digest)
			if int64(len(cfgRaw)) != m.Config.Size {
				t.Errorf("config is %d bytes, its descriptor says %d", len(cfgRaw), m.Config.Size)
			}
			var cfg map[string]any
			dec := json.NewDecoder(bytes.NewReader(cfgRaw))
			dec.UseNumber()
			if err := dec.Decode(&cfg); err != nil {
				t.Fatalf("config is not a JSON object: %v\n%s", err, cfgRaw)
			}
			t.Logf("config: %s", cfgRaw)
			ociField(t, "config", cfg, "id", id)
			ociField(t, "config", cfg, "virtual-size", e.VirtualSize)
			ociField(t, "config", cfg, "description", e.Description)
			if e.OS != "" {
				ociField(t, "config", cfg, "os", e.OS)
			} else if v, found := cfg["os"]; found && v != "" {
				t.Errorf("config: os %v, the image has none", v)
			}
			if _, found := cfg["cangafile"]; found {
				t.Errorf("config: a cangafile for an image that was not built")
			}
			created, _ := cfg["created"].(string)
			if !ociTime(t, "config created", created).Equal(ociTime(t, "index created", e.Created)) {
				t.Errorf("config: created %q, the image's is %q", created, e.Created)
			}
			chain, _ := cfg["chain"].([]any)
			if len(chain) != len(img.chain) {
				t.Fatalf("config: chain of %d, want %d: %v", len(chain), len(img.chain), cfg["chain"])
			}
			for i, cid := range img.chain {
				ce := ix[cid]
				link, _ := chain[i].(map[string]any)
				what := fmt.Sprintf("config chain[%d]", i)
				ociField(t, what, link, "id", cid)
				ociField(t, what, link, "blob", ce.Blob)
				ociField(t, what, link, "blob-size", ce.BlobSize)
				ociField(t, what, link, "virtual-size", ce.VirtualSize)
				ociField(t, what, link, "cluster-size", ce.ClusterSize)
				ociField(t, what, link, "compression", ce.Compression)
			}

			// The layers: the blobs as they are, base first, titled by HEX.
			if len(m.Layers) != len(img.chain) {
				t.Fatalf("%d layers, want %d", len(m.Layers), len(img.chain))
			}
			dir := t.TempDir()
			for i, l := range m.Layers {
				ce := ix[img.chain[i]]
				if l.MediaType != ociLayerType || l.Digest != ce.Blob || l.Size != ce.BlobSize || l.Annotations[ociTitle] != ociHex(ce.Blob) {
					t.Errorf("layer %d: %+v, want %s, digest %s, size %d, title %s", i, l, ociLayerType, ce.Blob, ce.BlobSize, ociHex(ce.Blob))
				}
				c.blobToFile(t, name, l.Digest, filepath.Join(dir, l.Annotations[ociTitle]))
				if got, want := testkit.FileDigest(t, filepath.Join(dir, l.Annotations[ociTitle])), testkit.FileDigest(t, filepath.Join(repo, "blobs", "sha256", ociHex(ce.Blob))); got != want {
					t.Errorf("layer %d differs from the local blob", i)
				}
			}

			// The manifest's annotations.
			if !ociTime(t, "annotation created", m.Annotations[ociCreated]).Equal(ociTime(t, "index created", e.Created)) {
				t.Errorf("annotation %s = %q, the image's created is %q", ociCreated, m.Annotations[ociCreated], e.Created)
			}
			if m.Annotations[ociDescription] != e.Description || m.Annotations[ociImageID] != id {
				t.Errorf("annotations %v, want description %q and %s %s", m.Annotations, e.Description, ociImageID, id)
			}

			// What a plain `oras pull` lays out opens in qemu-img as the
			// chain, with the content of canga export.
			topFile := filepath.Join(dir, ociHex(ix[id].Blob))
			qchain := testkit.QemuChain(t, topFile)
			if len(qchain) != len(img.chain) {
				t.Errorf("qemu-img info --backing-chain of the top layer: %d images, want %d: %+v", len(qchain), len(img.chain), qchain)
			}
			for i := 0; i+1 < len(qchain) && i+1 < len(img.chain); i++ {
				parent := ix[img.chain[len(img.chain)-2-i]].Blob
				if qchain[i].BackingFilename != ociHex(parent) {
					t.Errorf("layer %s has backing file %q, want %s", qchain[i].Filename, qchain[i].BackingFilename, ociHex(parent))
				}
			}
			exported := filepath.Join(t.TempDir(), "exported.qcow2")
			ok(t, home, "export", img.tag, exported)
			testkit.QemuCompare(t, topFile, exported)
			testkit.QemuCompare(t, topFile, img.file)
		})
	}
}

// ociField requires obj[key] to be want (a string or an integer).
func ociField(t testing.TB, what string, obj map[string]any, key string, want any) {
	t.Helper()
	v, found := obj[key]
	if !found {
		t.Errorf("%s: no %q (want %v)", what, key, want)
		return
	}
	switch w := want.(type) {
	case string:
		if s, isStr := v.(string); !isStr || s != w {
			t.Errorf("%s: %q is %#v, want %q", what, key, v, w)
		}
	case int64:
		n, isNum := v.(json.Number)
		if !isNum || n.String() != strconv.FormatInt(w, 10) {
			t.Errorf("%s: %q is %#v, want %d", what, key, v, w)
		}
	default:
		t.Fatalf("ociField: %T", want)
	}
}

// TestOCIPushSendsOnlyWhatIsMissing: a child whose parent is in the
// registry repository already uploads its own blob, the config and the
// manifest, nothing else; a repeated push uploads nothing; --mount-from
// mounts the blobs another repository of the registry has instead of
// uploading them (and falls back to an upload where it has not); the
// mounted image pulls. A proxy in front of the registry counts the
// requests and their bytes.
func TestOCIPushSendsOnlyWhatIsMissing(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.Options{})
	p := ociStartProxy(t, reg, nil, nil)
	home, repo, pub := ociPublisher(t)
	ix := ociReadIndex(t, repo)
	baseSize, childSize := ix[pub.BaseID].BlobSize, ix[pub.ChildID].BlobSize
	c := newOCIClient(t, reg)
	ref := ociRef(p.Host, "count/demo")

	ociPush(t, home, "base", ref+":base")
	tr := ociSummarize(p.take())
	if tr.uploads[pub.BaseBlob] != 1 || tr.blobBytes < baseSize {
		t.Errorf("push of base: %v; want the base blob (%d bytes) uploaded", tr, baseSize)
	}

	ociPush(t, home, "child", ref+":child")
	tr = ociSummarize(p.take())
	_, m, _ := c.manifest(t, "count/demo", "child")
	t.Logf("push of child: %v", tr)
	if len(tr.uploads) != 2 || tr.uploads[pub.ChildBlob] != 1 || tr.uploads[m.Config.Digest] != 1 {
		t.Errorf("push of child over its parent: %v; want one upload each of the child's blob %s and the config %s", tr, pub.ChildBlob, m.Config.Digest)
	}
	if max := childSize + m.Config.Size; tr.blobBytes < childSize || tr.blobBytes > max {
		t.Errorf("push of child over its parent sent %d bytes to blob uploads, want %d to %d", tr.blobBytes, childSize, max)
	}
	// One manifest upload, by tag: a PUT by digest and then another by
	// tag sends the manifest twice.
	if len(tr.manifests) != 1 || tr.manifests[0] != "/v2/count/demo/manifests/child" {
		t.Errorf("push of child: manifest PUTs %v, want one, of /v2/count/demo/manifests/child", tr.manifests)
	}

	ociPush(t, home, "child", ref+":child")
	if tr = ociSummarize(p.take()); len(tr.uploads) != 0 || tr.blobBytes != 0 {
		t.Errorf("a repeated push uploaded blobs: %v", tr)
	}

	// Into another repository of the same registry: mounted from
	// count/demo, not uploaded.
	ociPush(t, home, "child", ociRef(p.Host, "mounted/demo:child"), "--mount-from", "count/demo")
	tr = ociSummarize(p.take())
	t.Logf("push with --mount-from: %v", tr)
	for _, b := range []string{pub.BaseBlob, pub.ChildBlob} {
		if tr.uploads[b] != 0 || tr.mounts[b] != "count/demo" {
			t.Errorf("push --mount-from count/demo: blob %s uploaded %d times, mounted from %q; want mounted: %v", b, tr.uploads[b], tr.mounts[b], tr)
		}
		if st := c.status(t, http.MethodHead, "/v2/mounted/demo/blobs/"+b); st != http.StatusOK {
			t.Errorf("HEAD of the mounted blob %s in mounted/demo: %d", b, st)
		}
	}
	if tr.blobBytes > m.Config.Size {
		t.Errorf("push --mount-from sent %d bytes to blob uploads, more than the config's %d", tr.blobBytes, m.Config.Size)
	}
	// The control: without --mount-from, or from a repository that lacks
	// them, the blobs are uploaded.
	ociPush(t, home, "child", ociRef(p.Host, "fresh/demo:child"), "--mount-from", "nothing/here")
	if tr = ociSummarize(p.take()); tr.uploads[pub.BaseBlob] != 1 || tr.uploads[pub.ChildBlob] != 1 || tr.blobBytes < baseSize+childSize {
		t.Errorf("push into a new repository, mounting from one without the blobs: %v; want both blobs uploaded", tr)
	}

	cons := ociConsumer(t)
	if id := ociPull(t, cons, ociRef(p.Host, "mounted/demo:child")); id != pub.ChildID {
		t.Errorf("pull of the mounted image printed %s, want %s", id, pub.ChildID)
	}
	ok(t, cons, "fsck")
	exported := filepath.Join(t.TempDir(), "child.qcow2")
	ok(t, cons, "export", "demo:child", exported)
	testkit.QemuCompare(t, exported, pub.Child)
}

// TestOCISignatures: push --sign attaches an SSH signature referrer that
// distribution 2.8 (no referrers API) keeps under the tag schema's
// sha256-HEX index; ssh-keygen verifies it over the manifest digest
// string; list does not show the referrers tag; pull --allowed-signers
// takes a signed image and refuses an unsigned one, one signed by a key
// not in the file (or not for namespace canga-oci), and a signature over
// another digest, storing nothing.
func TestOCISignatures(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.Options{})
	home, _, pub := ociPublisher(t)
	c := newOCIClient(t, reg)
	keys := t.TempDir()
	stranger := testkit.Keygen(t, keys, "stranger", "", "-t", "ed25519")
	allowed := remAllowedSigners(t, keys, remPrincipal, pub.Key, `namespaces="canga-oci"`)
	allowedStranger := remAllowedSigners(t, keys, remPrincipal, stranger, `namespaces="canga-oci"`)
	allowedIndexOnly := remAllowedSigners(t, keys, remPrincipal, pub.Key, `namespaces="canga-index"`)

	d := ociPush(t, home, "child", ociRef(reg.Host, "signed/demo:child"), "--sign", pub.Key)
	_, plain, _ := c.manifest(t, "signed/demo", "child")
	if plain.ArtifactType != ociArtifactType {
		t.Fatalf("the signed image's manifest has artifactType %q", plain.ArtifactType)
	}

	// The tag schema: sha256-HEX is an index that lists the signature.
	_, idx, _ := c.manifest(t, "signed/demo", "sha256-"+ociHex(d))
	if idx.MediaType != ociIndexType || len(idx.Manifests) != 1 {
		t.Fatalf("sha256-%s: mediaType %q, %d manifests; want an image index listing one signature", ociHex(d), idx.MediaType, len(idx.Manifests))
	}
	sd := idx.Manifests[0]
	if sd.MediaType != ociManifestType || sd.ArtifactType != ociSigType {
		t.Errorf("the referrer's descriptor: %+v, want a manifest of artifactType %s", sd, ociSigType)
	}
	sraw, sm, sdg := c.manifest(t, "signed/demo", sd.Digest)
	if sdg != sd.Digest || int64(len(sraw)) != sd.Size {
		t.Errorf("the referrer is %s, %d bytes; the index says %s, %d bytes", sdg, len(sraw), sd.Digest, sd.Size)
	}
	subjectRaw, _, _ := c.manifest(t, "signed/demo", d)
	if sm.MediaType != ociManifestType || sm.ArtifactType != ociSigType ||
		sm.Config == nil || sm.Config.MediaType != ociEmptyType || sm.Config.Digest != ociEmptyDigest || sm.Config.Size != 2 ||
		len(sm.Layers) != 1 || sm.Layers[0].MediaType != ociSigLayerType ||
		sm.Subject == nil || sm.Subject.Digest != d || sm.Subject.MediaType != ociManifestType || sm.Subject.Size != int64(len(subjectRaw)) {
		t.Fatalf("the signature referrer is not SPEC §8's:\n%s", sraw)
	}
	sigFile := filepath.Join(t.TempDir(), "manifest-digest")
	testkit.WriteFile(t, sigFile, []byte(d), 0o644)
	c.blobToFile(t, "signed/demo", sm.Layers[0].Digest, sigFile+".sig")
	if !strings.HasPrefix(string(testkit.ReadFile(t, sigFile+".sig")), "-----BEGIN SSH SIGNATURE-----") {
		t.Errorf("the signature layer is not an armored SSH signature:\n%s", testkit.ReadFile(t, sigFile+".sig"))
	}
	if out, good := testkit.SSHVerify(t, allowed, remPrincipal, ociSigNamespace, sigFile, sigFile+".sig"); !good {
		t.Errorf("ssh-keygen -Y verify -n %s of the signature over %q: %s", ociSigNamespace, d, out)
	}
	testkit.WriteFile(t, sigFile, []byte(d+"\n"), 0o644)
	if _, good := testkit.SSHVerify(t, allowed, remPrincipal, ociSigNamespace, sigFile, sigFile+".sig"); good {
		t.Errorf("the signature also verifies over the digest and a newline")
	}

	// The referrers tag is no canga image.
	for _, it := range ociListJSON(t, home, "list", ociRef(reg.Host, "signed/demo"), "--json") {
		if it.Tag != "child" || it.ID != pub.ChildID || it.Digest != d {
			t.Errorf("list --json of a signed repository: %+v, want only child", it)
		}
	}
	if out := ok(t, home, "list", ociRef(reg.Host, "signed/demo")); strings.Contains(out, "sha256-") {
		t.Errorf("list shows the referrers tag:\n%s", out)
	}

	// The same image unsigned, signed by a stranger, and with a forged
	// signature (a good signature by the right key, over another
	// digest), each in its own repository.
	ociPush(t, home, "child", ociRef(reg.Host, "unsigned/demo:child"))
	ociPush(t, home, "child", ociRef(reg.Host, "stranger/demo:child"), "--sign", stranger)
	ociPush(t, home, "child", ociRef(reg.Host, "forged/demo:child"))
	other := filepath.Join(t.TempDir(), "other-digest")
	testkit.WriteFile(t, other, []byte("sha256:"+strings.Repeat("ab", 32)), 0o644)
	ociAttachSignature(t, c, "forged/demo", d, int64(len(subjectRaw)), testkit.ReadFile(t, testkit.SSHSign(t, pub.Key, ociSigNamespace, other)))
	// ... and with a signature over the right digest for the index's
	// namespace.
	ociPush(t, home, "child", ociRef(reg.Host, "namespace/demo:child"))
	testkit.WriteFile(t, other, []byte(d), 0o644)
	ociAttachSignature(t, c, "namespace/demo", d, int64(len(subjectRaw)), testkit.ReadFile(t, testkit.SSHSign(t, pub.Key, "canga-index", other)))

	// A consumer that has an unrelated image already (nothing of the
	// chain), so that "unchanged" is a real repository.
	home2 := ociConsumer(t)
	addID(t, home2, otherRaw(t), "--tag", "unrelated")
	for _, tc := range []struct{ repo, signers, why string }{
		{"unsigned/demo", allowed, "unsigned"},
		{"stranger/demo", allowed, "signed by a key not in the file"},
		{"forged/demo", allowed, "signed over another digest"},
		{"namespace/demo", allowed, "signed for namespace canga-index"},
		{"signed/demo", allowedStranger, "signed by a key the file does not name"},
		{"signed/demo", allowedIndexOnly, "signed by a key the file allows for canga-index only"},
	} {
		r := ociPullRefused(t, home2, ociRef(reg.Host, tc.repo+":child"), "--allowed-signers", tc.signers)
		t.Logf("%s: %s", tc.why, r.stderr)
		ociSays(t, r, "signature", "signature", "signed", "signer")
	}
	ociPullRefused(t, home2, ociRef(reg.Host, "signed/demo:child"), "--allowed-signers", filepath.Join(keys, "no-such-file"))

	if id := ociPull(t, home2, ociRef(reg.Host, "signed/demo:child"), "--allowed-signers", allowed); id != pub.ChildID {
		t.Errorf("pull of the signed image printed %s, want %s", id, pub.ChildID)
	}
	if id := ociPull(t, home2, ociRef(reg.Host, "stranger/demo@"+d), "--allowed-signers", allowedStranger, "--repo", "other"); id != pub.ChildID {
		t.Errorf("pull of the image the stranger signed, with the stranger allowed, printed %s", id)
	}
	ok(t, home2, "fsck")
	ok(t, home2, "fsck", "other")
}

// ociAttachSignature attaches an armored SSH signature to a manifest of
// NAME by hand, the way SPEC §8 says, through the referrers tag schema.
func ociAttachSignature(t testing.TB, c *ociClient, name, subject string, subjectSize int64, sig []byte) {
	t.Helper()
	c.putBlob(t, name, []byte("{}"))
	m := ociManifest{
		SchemaVersion: 2,
		MediaType:     ociManifestType,
		ArtifactType:  ociSigType,
		Config:        &ociDesc{MediaType: ociEmptyType, Digest: ociEmptyDigest, Size: 2},
		Layers:        []ociDesc{{MediaType: ociSigLayerType, Digest: c.putBlob(t, name, sig), Size: int64(len(sig))}},
		Subject:       &ociDesc{MediaType: ociManifestType, Digest: subject, Size: subjectSize},
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := ociSHA(b)
	c.putManifest(t, name, d, ociManifestType, b)
	idx, err := json.Marshal(ociManifest{
		SchemaVersion: 2,
		MediaType:     ociIndexType,
		Manifests:     []ociDesc{{MediaType: ociManifestType, Digest: d, Size: int64(len(b)), ArtifactType: ociSigType}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.putManifest(t, name, "sha256-"+ociHex(subject), ociIndexType, idx)
}

// TestOCIContainerDisk: push --containerdisk sends an ordinary OCI image
// (KubeVirt's containerDisk): a config naming linux and the platform, one
// uncompressed tar layer holding exactly disk/HEX.qcow2, owned 107:107
// with mode 0440, the image flattened. canga list does not show it and
// canga pull refuses it.
func TestOCIContainerDisk(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.Options{})
	home, _, pub := ociPublisher(t)
	c := newOCIClient(t, reg)
	exported := filepath.Join(t.TempDir(), "child.qcow2")
	ok(t, home, "export", "child", exported)

	for _, tc := range []struct{ tag, arch string }{{"amd64", ""}, {"arm64", "arm64"}} {
		t.Run(tc.tag, func(t *testing.T) {
			args := []string{"child", ociRef(reg.Host, "kubevirt/demo:"+tc.tag), "--containerdisk"}
			want := "amd64"
			if tc.arch != "" {
				args, want = append(args, "--platform", tc.arch), tc.arch
			}
			d := ociPush(t, home, args...)
			raw, m, got := c.manifest(t, "kubevirt/demo", tc.tag)
			if got != d {
				t.Errorf("the registry's manifest is %s, push printed %s", got, d)
			}
			if m.MediaType != ociManifestType || m.ArtifactType != "" || m.Config == nil || m.Config.MediaType != ociImageConfigType ||
				len(m.Layers) != 1 || m.Layers[0].MediaType != ociTarLayerType {
				t.Fatalf("not an ordinary OCI image with one tar layer:\n%s", raw)
			}
			var cfg struct {
				OS           string `json:"os"`
				Architecture string `json:"architecture"`
				RootFS       struct {
					Type    string   `json:"type"`
					DiffIDs []string `json:"diff_ids"`
				} `json:"rootfs"`
			}
			cfgRaw := c.blob(t, "kubevirt/demo", m.Config.Digest)
			if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
				t.Fatalf("config: %v\n%s", err, cfgRaw)
			}
			if cfg.OS != "linux" || cfg.Architecture != want {
				t.Errorf("config: os %q, architecture %q; want linux, %s\n%s", cfg.OS, cfg.Architecture, want, cfgRaw)
			}
			// An uncompressed layer's diff ID is its digest.
			if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != m.Layers[0].Digest {
				t.Errorf("config: rootfs %+v, want layers with the diff ID %s\n%s", cfg.RootFS, m.Layers[0].Digest, cfgRaw)
			}

			dir := t.TempDir()
			tarFile := filepath.Join(dir, "layer.tar")
			c.blobToFile(t, "kubevirt/demo", m.Layers[0].Digest, tarFile)
			name := "disk/" + ociHex(pub.ChildID) + ".qcow2"
			files := 0
			listing := testkit.Run(t, "tar", "--numeric-owner", "-tvf", tarFile)
			for _, l := range strings.Split(strings.TrimRight(listing, "\n"), "\n") {
				f := strings.Fields(l)
				if len(f) < 6 {
					t.Fatalf("tar -tv: %q", l)
				}
				path := f[len(f)-1]
				switch {
				case strings.HasPrefix(f[0], "d") && strings.TrimSuffix(path, "/") == "disk":
				case path == name:
					files++
					if f[0] != "-r--r-----" || f[1] != "107/107" {
						t.Errorf("%s: mode %s, owner %s; want -r--r----- 107/107", name, f[0], f[1])
					}
				default:
					t.Errorf("the layer holds %q besides %s", l, name)
				}
			}
			if files != 1 {
				t.Fatalf("the layer holds %d files named %s\n%s", files, name, listing)
			}
			out := filepath.Join(dir, "out")
			if err := os.Mkdir(out, 0o755); err != nil {
				t.Fatal(err)
			}
			testkit.Run(t, "tar", "-xf", tarFile, "-C", out, "--no-same-owner")
			disk := filepath.Join(out, name)
			if info := testkit.QemuInfo(t, disk); info.Format != "qcow2" || info.BackingFilename != "" {
				t.Errorf("%s: format %q, backing file %q; want a standalone qcow2", name, info.Format, info.BackingFilename)
			}
			testkit.QemuCheck(t, disk)
			testkit.QemuCompare(t, disk, exported)
			testkit.QemuCompare(t, disk, pub.Child)
		})
	}

	// A containerDisk is no canga artifact: list shows it only as such
	// (kind containerdisk), a foreign image not at all; pull refuses it.
	ociPush(t, home, "base", ociRef(reg.Host, "kubevirt/demo:artifact"))
	ociPushForeign(t, c, "kubevirt/demo", "foreign")
	seen := map[string]bool{}
	for _, it := range ociListJSON(t, home, "list", ociRef(reg.Host, "kubevirt/demo"), "--json") {
		seen[it.Tag] = true
		switch it.Tag {
		case "artifact":
			if it.ID != pub.BaseID || it.Kind == "containerdisk" {
				t.Errorf("list --json: %+v, want the base's image ID %s", it, pub.BaseID)
			}
		case "amd64", "arm64":
			if it.ID != pub.ChildID || it.Kind != "containerdisk" {
				t.Errorf("list --json shows a containerDisk as %+v, want it marked kind containerdisk, with the image ID %s", it, pub.ChildID)
			}
		default:
			t.Errorf("list --json shows %+v, which canga did not push", it)
		}
	}
	if !seen["artifact"] {
		t.Errorf("list --json does not show the artifact")
	}
	if out := ok(t, home, "list", ociRef(reg.Host, "kubevirt/demo")); strings.Contains(out, "foreign") {
		t.Errorf("list shows the foreign image:\n%s", out)
	}
	cons := ociConsumer(t)
	addID(t, cons, otherRaw(t), "--tag", "unrelated")
	ociPullRefused(t, cons, ociRef(reg.Host, "kubevirt/demo:amd64"))
}

// TestOCIPullRefusals: pull refuses what is not SPEC §8's artifact, or
// lies about it, and leaves the repository byte-for-byte as it was: layers
// whose bytes a proxy tampers with, manifests of another artifact type,
// layers whose qcow2 header is hostile (a backing file that is not the
// parent's HEX, a base with a backing file, an external data file), a
// config whose chain disagrees with the layers or the manifest, a
// manifest over 4 MiB, a manifest that is not the digest asked for. The
// crafted artifacts are pushed by hand with the distribution API, their
// digests right: only what they say is wrong.
func TestOCIPullRefusals(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.Options{})
	home, repo, pub := ociPublisher(t)
	ix := ociReadIndex(t, repo)
	c := newOCIClient(t, reg)

	baseDigest := ociPush(t, home, "base", ociRef(reg.Host, "good/demo:base"))
	childDigest := ociPush(t, home, "child", ociRef(reg.Host, "good/demo:child"))
	ociPush(t, home, "child", ociRef(reg.Host, "tamper/demo:child"))
	ociPush(t, home, "child", ociRef(reg.Host, "good/demo:containerdisk"), "--containerdisk")
	goodRaw, _, _ := c.manifest(t, "good/demo", "child")
	baseRaw, _, _ := c.manifest(t, "good/demo", "base")

	// The proxy: flips a byte in every blob of tamper/demo, answers for
	// big/demo with a manifest over 4 MiB, and for liar/demo serves
	// good/demo, except that the child's manifest by digest is the base's.
	big := ociBigManifest(t, goodRaw)
	target, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	hook := func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v2/big/demo/manifests/"):
			w.Header().Set("Content-Type", ociManifestType)
			w.Header().Set("Docker-Content-Digest", ociSHA(big))
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				_, _ = w.Write(big)
			}
			return true
		case r.URL.Path == "/v2/liar/demo/manifests/"+childDigest:
			w.Header().Set("Content-Type", ociManifestType)
			w.Header().Set("Docker-Content-Digest", childDigest)
			w.Header().Set("Content-Length", strconv.Itoa(len(baseRaw)))
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				_, _ = w.Write(baseRaw)
			}
			return true
		case strings.HasPrefix(r.URL.Path, "/v2/liar/demo/"):
			r.URL.Path = "/v2/good/demo/" + strings.TrimPrefix(r.URL.Path, "/v2/liar/demo/")
			r.URL.RawPath = ""
			httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
			return true
		}
		return false
	}
	flip := func(resp *http.Response) error {
		path := resp.Request.URL.Path
		if resp.Request.Method == http.MethodGet && strings.HasPrefix(path, "/v2/tamper/demo/blobs/") &&
			(strings.HasSuffix(path, pub.BaseBlob) || strings.HasSuffix(path, pub.ChildBlob)) {
			resp.Body = &ociFlipReader{rc: resp.Body, at: resp.ContentLength / 2}
		}
		return nil
	}
	p := ociStartProxy(t, reg, hook, flip)

	// craft pushes good/demo:TAG, the child's artifact as edit changes its
	// manifest and config (decoded with json.Number), with the right
	// digests.
	craft := func(tag string, edit func(m, cfg map[string]any)) string {
		t.Helper()
		m := ociDecode(t, goodRaw)
		cfg := ociDecode(t, c.blob(t, "good/demo", ociObj(t, m["config"])["digest"].(string)))
		edit(m, cfg)
		cb := ociEncode(t, cfg)
		cd := ociObj(t, m["config"])
		cd["digest"], cd["size"] = c.putBlob(t, "good/demo", cb), json.Number(strconv.Itoa(len(cb)))
		c.putManifest(t, "good/demo", tag, ociManifestType, ociEncode(t, m))
		return ociRef(reg.Host, "good/demo:"+tag)
	}
	// hostileLayer uploads file as a blob and makes it layer i of the
	// artifact and of its chain.
	hostileLayer := func(m, cfg map[string]any, i int, blob string, size int) {
		l := ociAt(t, m, "layers", i)
		l["digest"], l["size"] = blob, json.Number(strconv.Itoa(size))
		l["annotations"] = map[string]any{ociTitle: ociHex(blob)}
		ce := ociAt(t, cfg, "chain", i)
		ce["blob"], ce["blob-size"] = blob, json.Number(strconv.Itoa(size))
	}
	upload := func(file string) (string, int) {
		b := testkit.ReadFile(t, file)
		return c.putBlob(t, "good/demo", b), len(b)
	}
	tmp := t.TempDir()

	// The child's blob, its backing file made a host file.
	rebased := filepath.Join(tmp, "rebased.qcow2")
	copyFile(t, filepath.Join(repo, "blobs", "sha256", ociHex(pub.ChildBlob)), rebased)
	testkit.Run(t, "qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", rebased)
	rebasedBlob, rebasedSize := upload(rebased)
	// The base's blob given a backing file.
	baseBacked := filepath.Join(tmp, "base-backed.qcow2")
	copyFile(t, filepath.Join(repo, "blobs", "sha256", ociHex(pub.BaseBlob)), baseBacked)
	testkit.Run(t, "qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", baseBacked)
	baseBackedBlob, baseBackedSize := upload(baseBacked)
	// A base image whose data is an external file of the host.
	ext := filepath.Join(tmp, "ext.qcow2")
	testkit.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(tmp, "ext.raw")+",data_file_raw=on", ext, "1M")
	testkit.QemuIO(t, "qcow2", ext, "write -P 0x11 0 64k")
	extID := testkit.RawDigest(t, ext).String()
	extBlob, extSize := upload(ext)
	// oneLayer makes the artifact a base image of one layer, id.
	oneLayer := func(m, cfg map[string]any, id, blob string, size int, vsize int64) {
		m["layers"] = ociList(t, m["layers"])[:1]
		cfg["chain"] = ociList(t, cfg["chain"])[:1]
		hostileLayer(m, cfg, 0, blob, size)
		ce := ociAt(t, cfg, "chain", 0)
		ce["id"], ce["virtual-size"] = id, json.Number(strconv.FormatInt(vsize, 10))
		cfg["id"], cfg["virtual-size"] = id, json.Number(strconv.FormatInt(vsize, 10))
		ociObj(t, m["annotations"])[ociImageID] = id
	}

	cases := []struct {
		name  string
		ref   string
		fresh bool     // pull into a repository without the base
		words []string // one of them in the error, if any
	}{
		{"tampered child layer", ociRef(p.Host, "tamper/demo:child"), false, []string{"digest", "checksum", "mismatch", "sha256"}},
		{"tampered base layer", ociRef(p.Host, "tamper/demo:child"), true, []string{"digest", "checksum", "mismatch", "sha256"}},
		{"another artifact type", craft("other-type", func(m, _ map[string]any) {
			m["artifactType"] = "application/vnd.example.other.v1"
		}), true, []string{"artifact", "type"}},
		{"a containerDisk", ociRef(reg.Host, "good/demo:containerdisk"), true, []string{"artifact", "type"}},
		{"backing file not the parent's HEX", craft("backing", func(m, cfg map[string]any) {
			hostileLayer(m, cfg, 1, rebasedBlob, rebasedSize)
		}), false, []string{"backing"}},
		{"backing file not the parent's HEX, parent absent", ociRef(reg.Host, "good/demo:backing"), true, []string{"backing"}},
		{"base layer with a backing file", craft("base-backing", func(m, cfg map[string]any) {
			oneLayer(m, cfg, pub.BaseID, baseBackedBlob, baseBackedSize, ix[pub.BaseID].VirtualSize)
		}), true, []string{"backing"}},
		{"external data file", craft("data-file", func(m, cfg map[string]any) {
			oneLayer(m, cfg, extID, extBlob, extSize, 1<<20)
		}), true, []string{"data"}},
		{"chain shorter than the layers", craft("chain-short", func(_, cfg map[string]any) {
			cfg["chain"] = ociList(t, cfg["chain"])[1:]
		}), true, nil},
		{"layers fewer than the chain", craft("layers-short", func(m, _ map[string]any) {
			m["layers"] = ociList(t, m["layers"])[1:]
		}), false, nil},
		{"layers in the wrong order", craft("order", func(m, _ map[string]any) {
			l := ociList(t, m["layers"])
			m["layers"] = []any{l[1], l[0]}
		}), true, nil},
		{"chain blob digest not the layer's", craft("chain-digest", func(_, cfg map[string]any) {
			ociAt(t, cfg, "chain", 1)["blob"] = ociSHA([]byte("another blob"))
		}), false, nil},
		{"chain blob-size not the layer's", craft("chain-size", func(_, cfg map[string]any) {
			ociAt(t, cfg, "chain", 1)["blob-size"] = json.Number(strconv.FormatInt(ix[pub.ChildID].BlobSize+1, 10))
		}), false, nil},
		{"layer and chain sizes larger than the blob", craft("both-sizes", func(m, cfg map[string]any) {
			n := json.Number(strconv.FormatInt(ix[pub.ChildID].BlobSize+1, 10))
			ociAt(t, m, "layers", 1)["size"] = n
			ociAt(t, cfg, "chain", 1)["blob-size"] = n
		}), false, nil},
		{"config id not the chain's top", craft("config-id", func(_, cfg map[string]any) {
			cfg["id"] = pub.BaseID
		}), false, nil},
		{"annotation id not the config's", craft("annotation-id", func(m, _ map[string]any) {
			ociObj(t, m["annotations"])[ociImageID] = pub.BaseID
		}), false, nil},
		// The chain's image IDs are not those of the layers' content,
		// though config, chain and annotation agree.
		{"chain ids swapped", craft("chain-ids", func(m, cfg map[string]any) {
			a, b := ociAt(t, cfg, "chain", 0), ociAt(t, cfg, "chain", 1)
			a["id"], b["id"] = pub.ChildID, pub.BaseID
			cfg["id"] = pub.BaseID
			ociObj(t, m["annotations"])[ociImageID] = pub.BaseID
		}), true, nil},
		{"top id not the content's", craft("made-up-id", func(m, cfg map[string]any) {
			id := ociSHA([]byte("made up"))
			ociAt(t, cfg, "chain", 1)["id"] = id
			cfg["id"] = id
			ociObj(t, m["annotations"])[ociImageID] = id
		}), false, nil},
		{"chain virtual-size not the header's", craft("vsize", func(_, cfg map[string]any) {
			v := json.Number(strconv.FormatInt(2*ix[pub.ChildID].VirtualSize, 10))
			ociAt(t, cfg, "chain", 1)["virtual-size"] = v
			cfg["virtual-size"] = v
		}), false, []string{"size"}},
		{"manifest over 4 MiB", ociRef(p.Host, "big/demo:x"), true, []string{"large", "size", "limit", "exceed", "MiB", "bytes"}},
		{"manifest not the digest asked for", ociRef(p.Host, "liar/demo@"+childDigest), true, []string{"digest", "mismatch"}},
	}

	// The consumers: one with an unrelated image, one with the base too.
	fresh := ociConsumer(t)
	addID(t, fresh, otherRaw(t), "--tag", "unrelated")
	seeded := ociCopyConsumer(t, fresh)
	if id := ociPull(t, seeded, ociRef(reg.Host, "good/demo@"+baseDigest)); id != pub.BaseID {
		t.Fatalf("pull of the base printed %s", id)
	}

	// Image IDs that are not the content's are the publisher's lie, as in
	// an HTTP index: refused with --verify-ids, found by fsck without it.
	idClaims := map[string]bool{"chain ids swapped": true, "top id not the content's": true}
	{
		home := ociCopyConsumer(t, fresh)
		ref := ""
		for _, tc := range cases {
			if tc.name == "top id not the content's" {
				ref = tc.ref
			}
		}
		ociPull(t, home, ref)
		r := fails(t, home, "fsck")
		if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "image ID") {
			t.Errorf("fsck after a pull of a made-up image ID: %v", r)
		}
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := seeded
			if tc.fresh {
				src = fresh
			}
			home := ociCopyConsumer(t, src)
			args := []string{tc.ref}
			if idClaims[tc.name] {
				args = append(args, "--verify-ids")
			}
			r := ociPullRefused(t, home, args...)
			t.Logf("%s", r.stderr)
			if len(tc.words) > 0 {
				ociSays(t, r, tc.name, tc.words...)
			}
			ok(t, home, "fsck")
		})
	}

	// The control: the same consumers take the good artifact, through the
	// proxy too.
	for _, src := range []string{fresh, seeded} {
		home := ociCopyConsumer(t, src)
		if id := ociPull(t, home, ociRef(p.Host, "good/demo:child")); id != pub.ChildID {
			t.Errorf("pull of the good artifact through the proxy printed %s", id)
		}
		ok(t, home, "fsck")
	}
}

// ociBigManifest is manifest m padded with an annotation to over 4 MiB.
func ociBigManifest(t testing.TB, m []byte) []byte {
	t.Helper()
	v := ociDecode(t, m)
	ociObj(t, v["annotations"])["pad"] = strings.Repeat("x", 4<<20)
	return ociEncode(t, v)
}

func ociDecode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return v
}

func ociEncode(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ociObj(t testing.TB, v any) map[string]any {
	t.Helper()
	m, isObj := v.(map[string]any)
	if !isObj {
		t.Fatalf("%#v is not a JSON object", v)
	}
	return m
}

func ociList(t testing.TB, v any) []any {
	t.Helper()
	l, isList := v.([]any)
	if !isList {
		t.Fatalf("%#v is not a JSON array", v)
	}
	return l
}

// ociAt is obj[key][i], an object.
func ociAt(t testing.TB, obj map[string]any, key string, i int) map[string]any {
	t.Helper()
	l := ociList(t, obj[key])
	if i >= len(l) {
		t.Fatalf("%s has %d elements, not %d", key, len(l), i+1)
	}
	return ociObj(t, l[i])
}

// ociPushForeign pushes by hand NAME:TAG, an ordinary OCI image that
// canga did not make: one tar layer holding one small file.
func ociPushForeign(t testing.TB, c *ociClient, name, tag string) {
	t.Helper()
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644)
	tarFile := filepath.Join(dir, "layer.tar")
	testkit.Run(t, "tar", "-cf", tarFile, "-C", dir, "hello.txt")
	layer := testkit.ReadFile(t, tarFile)
	ld := c.putBlob(t, name, layer)
	cfg := ociEncode(t, map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{ld}},
	})
	m := ociEncode(t, ociManifest{
		SchemaVersion: 2,
		MediaType:     ociManifestType,
		Config:        &ociDesc{MediaType: ociImageConfigType, Digest: c.putBlob(t, name, cfg), Size: int64(len(cfg))},
		Layers:        []ociDesc{{MediaType: ociTarLayerType, Digest: ld, Size: int64(len(layer))}},
	})
	c.putManifest(t, name, tag, ociManifestType, m)
}

// TestOCIPullResumes: a blob download that breaks in the middle goes on
// from where it stopped with a Range request (in the same pull or the
// next), and the image arrives whole.
func TestOCIPullResumes(t *testing.T) {
	t.Parallel()
	reg := testregistry.Start(t, testregistry.Options{})
	home, _, pub := ociPublisher(t)
	ociPush(t, home, "child", ociRef(reg.Host, "resume/demo:child"))
	c := newOCIClient(t, reg)
	data := c.blob(t, "resume/demo", pub.BaseBlob)
	half := len(data) / 2

	var mu sync.Mutex
	var ranges []string
	cut := false
	hook := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+pub.BaseBlob) {
			return false
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := !cut
		cut = true
		mu.Unlock()
		if !first {
			return false
		}
		// The whole length announced, half of it sent, then the
		// connection dropped.
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Docker-Content-Digest", pub.BaseBlob)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(data[:half])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	p := ociStartProxy(t, reg, hook, nil)

	cons := ociConsumer(t)
	ref := ociRef(p.Host, "resume/demo:child")
	r := canga(t, cons, "pull", ref)
	requireNoPanic(t, r)
	if r.code != 0 {
		t.Logf("the first pull failed: %s", r.stderr)
		r = canga(t, cons, "pull", ref)
	}
	if r.code != 0 || strings.TrimSpace(r.stdout) != pub.ChildID {
		t.Fatalf("pull after a broken download: want the child's ID %s\n%v", pub.ChildID, r)
	}
	mu.Lock()
	seen := append([]string(nil), ranges...)
	mu.Unlock()
	resumed := false
	for _, rg := range seen[1:] {
		var from int
		if _, err := fmt.Sscanf(rg, "bytes=%d-", &from); err == nil && from > 0 && from <= half {
			resumed = true
		}
	}
	if len(seen) < 2 || !resumed {
		t.Errorf("the base blob's GETs had Range headers %q; want the download resumed from at most %d", seen, half)
	}
	remRequireGoodBlobs(t, repoDir(cons))
	ok(t, cons, "fsck")
}
