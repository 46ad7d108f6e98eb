// Package testregistry runs a real OCI registry for tests: the Debian
// package docker-registry (CNCF distribution 2.8), started as
// `/usr/bin/docker-registry serve CONFIG` on a free 127.0.0.1 port with a
// temporary filesystem storage root, and killed when the test ends.
//
// Two modes: plain HTTP without authentication (the zero [Options]), and
// [Options.Secure]: htpasswd (bcrypt) authentication over TLS with a
// self-signed certificate for IP 127.0.0.1 that openssl makes at test time.
// The packaged service on :5000 is never used.
package testregistry

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry the harness runs.
const Binary = "/usr/bin/docker-registry"

// Options choose how the registry runs. The zero value is plain HTTP
// without authentication, deletes disabled (as a stock registry).
type Options struct {
	// Secure turns on htpasswd authentication and TLS.
	Secure bool
	// Delete enables DELETE of manifests and blobs
	// (storage.delete.enabled). Stock registries have it off.
	Delete bool
	// RootDir is the storage root; empty means a new temporary directory.
	// A test that serves the blobs itself (see RedirectURL) makes it first.
	RootDir string
	// RedirectURL, when set, makes the registry answer blob GETs with a
	// redirect to RedirectURL + the storage path of the blob's data file
	// (distribution's "redirect" storage middleware), the way registries
	// backed by S3 or a CDN do. The data file lives at the same path under
	// RootDir.
	RedirectURL string
}

// Registry is a running registry.
type Registry struct {
	// Host is "127.0.0.1:PORT", the HOST[:PORT] of a reference.
	Host string
	// URL is the base URL, "http://127.0.0.1:PORT" or "https://...".
	URL string
	// CAFile is the PEM certificate to trust (Secure only): the
	// self-signed server certificate itself, for --ca-file.
	CAFile string
	// User and Password are the htpasswd account (Secure only).
	User, Password string
	// RootDir is the filesystem storage root.
	RootDir string
	// LogFile collects the registry's output, for failure messages.
	LogFile string

	cmd *exec.Cmd
}

// Start runs a registry for the duration of t and returns once /v2/
// answers. It fails the test if the registry cannot be started.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	r, err := start(t, opts)
	if err != nil {
		t.Fatalf("testregistry: %v", err)
	}
	return r
}

// attempts bounds the restarts after a lost race for a free port.
const attempts = 5

func start(t testing.TB, opts Options) (*Registry, error) {
	if _, err := os.Stat(Binary); err != nil {
		return nil, fmt.Errorf("%s is missing (apt-get install docker-registry): %w", Binary, err)
	}
	dir := t.TempDir()
	r := &Registry{RootDir: opts.RootDir, LogFile: filepath.Join(dir, "registry.log")}
	if r.RootDir == "" {
		r.RootDir = filepath.Join(dir, "storage")
		if err := os.Mkdir(r.RootDir, 0o755); err != nil {
			return nil, err
		}
	}
	var tlsCert, tlsKey, htpasswd string
	if opts.Secure {
		var err error
		tlsCert, tlsKey, err = makeCert(dir)
		if err != nil {
			return nil, err
		}
		r.CAFile = tlsCert
		r.User, r.Password = "canga", "s3cret-"+filepath.Base(dir)
		htpasswd = filepath.Join(dir, "htpasswd")
		// The lowest cost keeps each login quick; the format is the same.
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(htpasswd, []byte(r.User+":"+string(hash)+"\n"), 0o600); err != nil {
			return nil, err
		}
	}

	var lastErr error
	for range attempts {
		port, err := pickPort()
		if err != nil {
			return nil, err
		}
		r.Host = fmt.Sprintf("127.0.0.1:%d", port)
		r.URL = "http://" + r.Host
		if opts.Secure {
			r.URL = "https://" + r.Host
		}
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, []byte(config(r, opts, tlsCert, tlsKey, htpasswd)), 0o600); err != nil {
			return nil, err
		}
		err = r.run(t, cfg)
		if err == nil {
			return r, nil
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no free port after %d attempts: %w", attempts, lastErr)
}

var errAddrInUse = errors.New("address already in use")

// run starts the process and waits for /v2/. A process that exits early
// because another one took the port reports errAddrInUse.
func (r *Registry) run(t testing.TB, cfg string) error {
	logf, err := os.OpenFile(r.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(Binary, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that cleanup kills everything it starts;
	// Pdeathsig so that a test binary that dies does not leave it behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", Binary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}

	// Short: a GET to a port someone else holds may hang; the loop retries.
	client := &http.Client{Timeout: 500 * time.Millisecond}
	if r.CAFile != "" {
		pem, err := os.ReadFile(r.CAFile)
		if err != nil {
			stop()
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	// Generous: the machine may be busy; a healthy registry answers in
	// well under a second.
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			out, _ := os.ReadFile(r.LogFile)
			if bytes.Contains(out, []byte("address already in use")) {
				return fmt.Errorf("%s: %w", r.Host, errAddrInUse)
			}
			return fmt.Errorf("registry exited (%v): %s", err, tail(out))
		default:
		}
		resp, err := client.Get(r.URL + "/v2/")
		if err == nil {
			resp.Body.Close()
			// 401 is the answer of a registry with authentication.
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			out, _ := os.ReadFile(r.LogFile)
			return fmt.Errorf("registry on %s did not answer /v2/ (last error %v): %s", r.Host, err, tail(out))
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.cmd = cmd
	t.Cleanup(stop)
	return nil
}

func tail(b []byte) string {
	const n = 2000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// pickPort is freePort; a test replaces it to lose the race on purpose.
var pickPort = freePort

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// config is the distribution configuration. Upload purging is off so
// that the registry starts no background walker over the storage.
func config(r *Registry, opts Options, cert, key, htpasswd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: %t
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  secret: canga-testregistry
`, r.RootDir, opts.Delete, r.Host)
	if opts.Secure {
		fmt.Fprintf(&b, `  tls:
    certificate: %q
    key: %q
auth:
  htpasswd:
    realm: canga-test
    path: %q
`, cert, key, htpasswd)
	}
	if opts.RedirectURL != "" {
		fmt.Fprintf(&b, `middleware:
  storage:
    - name: redirect
      options:
        baseurl: %q
`, opts.RedirectURL)
	}
	return b.String()
}

// makeCert makes a self-signed certificate for IP 127.0.0.1 with openssl.
func makeCert(dir string) (cert, key string, err error) {
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", "req", "-x509", "-nodes",
		"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
		"-keyout", key, "-out", cert, "-days", "2",
		"-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("openssl: %v: %s", err, out)
	}
	return cert, key, nil
}
