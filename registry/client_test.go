package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cangallo/canga/internal/testregistry"
)

// dockerConfig reads config.json as docker would see it.
func dockerConfig(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]any{}
	}
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("config.json: %v\n%s", err, b)
	}
	return cfg
}

func authEntry(cfg map[string]any, host string) (string, bool) {
	auths, _ := cfg["auths"].(map[string]any)
	e, ok := auths[host].(map[string]any)
	if !ok {
		return "", false
	}
	s, _ := e["auth"].(string)
	return s, true
}

// TestLoginLogout logs in to a registry with htpasswd and TLS: wrong
// credentials are refused and not stored, right ones are stored as
// `docker login` stores them and then used; logout removes them.
func TestLoginLogout(t *testing.T) {
	ctx := context.Background()
	dir := isolate(t)
	reg := testregistry.Start(t, testregistry.Options{Secure: true})
	opts := Options{CAFile: reg.CAFile}

	// Something to read, pushed with credentials given another way: the
	// login below is what is under test.
	if err := Login(ctx, reg.Host, reg.User, "wrong", opts); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("login with a wrong password: %v, want ErrUnauthorized", err)
	}
	if _, ok := authEntry(dockerConfig(t, dir), reg.Host); ok {
		t.Fatal("a refused login was stored")
	}
	if err := Login(ctx, reg.Host, "", "", opts); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("login without credentials: %v", err)
	}
	if err := Login(ctx, reg.Host, reg.User, reg.Password, Options{}); !errors.Is(err, ErrTLS) {
		t.Errorf("login without the CA: %v, want ErrTLS", err)
	}

	// Before login: unauthorized.
	c, err := NewClient(reg.Host, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repository(t, c, "x").Tags(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("tags before login: %v, want ErrUnauthorized", err)
	}

	if err := Login(ctx, reg.Host, reg.User, reg.Password, opts); err != nil {
		t.Fatal(err)
	}
	got, ok := authEntry(dockerConfig(t, dir), reg.Host)
	if want := base64.StdEncoding.EncodeToString([]byte(reg.User + ":" + reg.Password)); !ok || got != want {
		t.Fatalf("config.json auths[%q].auth = %q, want %q", reg.Host, got, want)
	}
	if p, err := ConfigPath(); err != nil || p != filepath.Join(dir, "config.json") {
		t.Errorf("ConfigPath() = %q, %v", p, err)
	}

	// A new client reads the stored credentials.
	c, err = NewClient(reg.Host, opts)
	if err != nil {
		t.Fatal(err)
	}
	repo := repository(t, c, "private/img")
	img, _ := makeImage(t, "private", makeLayer(t, 256<<10, 61))
	if _, err := repo.Push(ctx, img, "v1", PushOptions{}); err != nil {
		t.Fatal(err)
	}
	if tags, err := repo.Tags(ctx); err != nil || len(tags) != 1 {
		t.Errorf("tags after login: %v, %v", tags, err)
	}

	if err := Logout(ctx, reg.Host); err != nil {
		t.Fatal(err)
	}
	if _, ok := authEntry(dockerConfig(t, dir), reg.Host); ok {
		t.Error("logout left the credentials")
	}
	if err := Logout(ctx, reg.Host); err != nil {
		t.Errorf("second logout: %v", err)
	}
	c, err = NewClient(reg.Host, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repository(t, c, "private/img").Resolve(ctx, "v1"); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("resolve after logout: %v, want ErrUnauthorized", err)
	}
}

// TestCredentialHelper: a credHelpers entry in config.json runs
// docker-credential-NAME from PATH, as docker does.
func TestCredentialHelper(t *testing.T) {
	ctx := context.Background()
	dir := isolate(t)
	reg := testregistry.Start(t, testregistry.Options{Secure: true})

	bin := t.TempDir()
	script := `#!/bin/sh
# docker-credential-cangatest: answers "get" for one server.
read server
[ "$1" = get ] || exit 1
[ "$server" = "` + reg.Host + `" ] || { echo "credentials not found in native keychain"; exit 1; }
printf '{"ServerURL":"%s","Username":"` + reg.User + `","Secret":"` + reg.Password + `"}\n' "$server"
`
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-cangatest"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	cfg := `{"credHelpers": {"` + reg.Host + `": "cangatest"}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	c, err := NewClient(reg.Host, Options{CAFile: reg.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	repo := repository(t, c, "helped")
	img, _ := makeImage(t, "helped", makeLayer(t, 128<<10, 71))
	if _, err := repo.Push(ctx, img, "v1", PushOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Resolve(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
}

// TestTLS: a registry with a certificate the client does not trust is a
// TLS failure, never a fallback to plain HTTP, even on loopback.
func TestTLS(t *testing.T) {
	ctx := context.Background()
	isolate(t)
	reg := testregistry.Start(t, testregistry.Options{Secure: true})
	port := reg.Host[strings.LastIndexByte(reg.Host, ':'):]
	for _, tc := range []struct {
		host string
		opts Options
	}{
		{reg.Host, Options{}},
		// The certificate is for IP 127.0.0.1, not for the name.
		{"localhost" + port, Options{CAFile: reg.CAFile}},
	} {
		c, err := NewClient(tc.host, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = repository(t, c, "x").Tags(ctx)
		if !errors.Is(err, ErrTLS) {
			t.Errorf("%s with CA %q: %v, want ErrTLS", tc.host, tc.opts.CAFile, err)
		}
	}

	// With the CA: TLS works, and without credentials the answer is
	// unauthorized.
	c, err := NewClient(reg.Host, Options{CAFile: reg.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repository(t, c, "x").Tags(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("with the CA, no credentials: %v, want ErrUnauthorized", err)
	}

	if _, err := NewClient(reg.Host, Options{CAFile: filepath.Join(t.TempDir(), "none.pem")}); err == nil {
		t.Error("a missing CA file was accepted")
	}
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(reg.Host, Options{CAFile: notPEM}); err == nil {
		t.Error("a CA file without a certificate was accepted")
	}
}

// TestLoopbackPlainHTTP: a plain-HTTP registry on loopback is reached
// without PlainHTTP (Docker's rule), by address and by "localhost".
func TestLoopbackPlainHTTP(t *testing.T) {
	ctx := context.Background()
	isolate(t)
	reg := testregistry.Start(t, testregistry.Options{})
	port := reg.Host[strings.LastIndexByte(reg.Host, ':'):]
	for _, host := range []string{reg.Host, "localhost" + port} {
		c, err := NewClient(host, Options{})
		if err != nil {
			t.Fatal(err)
		}
		repo := repository(t, c, "loop")
		img, _ := makeImage(t, host, makeLayer(t, 64<<10, 81))
		if _, err := repo.Push(ctx, img, "v1", PushOptions{}); err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		if !c.probed || !c.plain {
			t.Errorf("%s: probed %t plain %t", host, c.probed, c.plain)
		}
	}
}

// TestPlainHTTPRefused: the same plain-HTTP registry under a name that
// is not a loopback name is refused without PlainHTTP and reached with
// it. The name is made to reach 127.0.0.1 by the transport, so that the
// test needs no /etc/hosts entry: the client decides on the name it was
// given, as it would for a real remote host.
func TestPlainHTTPRefused(t *testing.T) {
	ctx := context.Background()
	isolate(t)
	reg := testregistry.Start(t, testregistry.Options{})
	port := reg.Host[strings.LastIndexByte(reg.Host, ':'):]
	name := "registry.canga.test" + port
	redirect := func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.URL.Host == name {
				req = req.Clone(req.Context())
				req.URL.Host = reg.Host
			}
			return rt.RoundTrip(req)
		})
	}

	c, err := NewClient(name, Options{WrapTransport: redirect})
	if err != nil {
		t.Fatal(err)
	}
	_, err = repository(t, c, "x").Tags(ctx)
	if !errors.Is(err, ErrTLS) || !errors.Is(err, http.ErrSchemeMismatch) || !strings.Contains(err.Error(), "--plain-http") {
		t.Errorf("plain HTTP to %s without PlainHTTP: %v, want ErrTLS saying --plain-http", name, err)
	}
	if c.probed {
		t.Error("a non-loopback host was probed for plain HTTP")
	}

	c, err = NewClient(name, Options{WrapTransport: redirect, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	repo := repository(t, c, "x")
	img, _ := makeImage(t, "x", makeLayer(t, 64<<10, 91))
	if _, err := repo.Push(ctx, img, "v1", PushOptions{}); err != nil {
		t.Fatalf("with PlainHTTP: %v", err)
	}
}

// TestNoRegistry: nothing listening is an error, not remembered as
// a decision about the scheme.
func TestNoRegistry(t *testing.T) {
	isolate(t)
	c, err := NewClient("127.0.0.1:1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repository(t, c, "x").Tags(context.Background()); err == nil {
		t.Fatal("tags from nowhere succeeded")
	}
	if c.probed {
		t.Error("a failed probe was remembered")
	}
	if _, err := NewClient("bad host", Options{}); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("bad host: %v", err)
	}
	if _, err := c.Repository("Bad"); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("bad name: %v", err)
	}
}
