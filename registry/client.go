package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// DefaultUserAgent is sent when [Options.UserAgent] is empty.
const DefaultUserAgent = "canga"

// Options configure a [Client]. The zero value is TLS with the system
// roots, credentials from Docker's config.json.
type Options struct {
	// PlainHTTP talks plain HTTP to the registry (--plain-http). Without
	// it, only localhost, 127.0.0.1 and [::1] fall back to plain HTTP, and
	// only when the registry there does not speak TLS.
	PlainHTTP bool
	// CAFile is a PEM file of certificates trusted in addition to the
	// system roots (--ca-file).
	CAFile string
	// UserAgent is sent with every request; empty means DefaultUserAgent.
	UserAgent string
	// WrapTransport, if set, wraps the HTTP transport: it sees every
	// request that goes on the wire (each retry, each redirect), for
	// tracing, metrics and tests. It must return errors unchanged.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Client talks to one registry host. It is safe for concurrent use; make
// one per host and keep it, so that tokens and the plain-HTTP decision are
// reused.
type Client struct {
	host  string // as the user wrote it, the key of config.json
	opts  Options
	http  *http.Client
	auth  *auth.Client
	store *credentials.DynamicStore

	mu     sync.Mutex
	probed bool // plain is decided
	plain  bool
}

// NewClient returns a client for host (HOST[:PORT], as in a [Reference]).
// It reads the CA file and Docker's config.json but does not connect:
// the first request does, and for a loopback host without PlainHTTP it
// first finds out whether the registry speaks TLS.
func NewClient(host string, opts Options) (*Client, error) {
	if err := ValidateHost(host); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidReference, err)
	}
	hc, err := newHTTPClient(opts)
	if err != nil {
		return nil, err
	}
	store, err := dockerStore()
	if err != nil {
		return nil, err
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	ac := &auth.Client{
		Client:     hc,
		Credential: credentials.Credential(store),
		Cache:      auth.NewCache(),
	}
	ac.SetUserAgent(ua)
	return &Client{host: host, opts: opts, http: hc, auth: ac, store: store}, nil
}

// Host returns the host the client talks to.
func (c *Client) Host() string { return c.host }

// newHTTPClient builds the transport chain: TLS roots, the caller's
// wrapper, oras-go's retries (connection resets, timeouts, 429, 5xx, with
// back-off). There is no overall timeout: a blob may take hours; callers
// bound operations with their context.
func newHTTPClient(opts Options) (*http.Client, error) {
	// nil RootCAs is the system's pool, loaded at the first TLS handshake:
	// parsing every certificate of /etc/ssl/certs costs 150 ms, which a
	// plain-HTTP registry need not pay.
	var roots *x509.CertPool
	if opts.CAFile != "" {
		var err error
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("registry: CA file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry: CA file %s: no PEM certificate in it", opts.CAFile)
		}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	var rt http.RoundTripper = t
	if opts.WrapTransport != nil {
		rt = opts.WrapTransport(rt)
	}
	return &http.Client{Transport: retry.NewTransport(rt)}, nil
}

// dockerStore opens Docker's credential store the way the docker CLI
// does: $DOCKER_CONFIG/config.json or ~/.docker/config.json, credential
// helpers (credHelpers, credsStore) first, the file itself last, and a
// platform helper (pass, secretservice) detected on first login if the
// file configures none.
func dockerStore() (*credentials.DynamicStore, error) {
	store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{
		AllowPlaintextPut:        true,
		DetectDefaultNativeStore: true,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: docker config: %w", err)
	}
	return store, nil
}

// schemePolicy is how a client chooses between https and http.
type schemePolicy int

const (
	httpsOnly      schemePolicy = iota
	plainOnly                   // PlainHTTP
	httpsThenPlain              // loopback: plain HTTP if the registry does not speak TLS
)

// chooseScheme is the decision of SPEC §8: TLS always; plain HTTP when
// asked; for loopback names, plain HTTP when TLS is not spoken.
func chooseScheme(host string, plainHTTP bool) schemePolicy {
	switch {
	case plainHTTP:
		return plainOnly
	case isLoopback(host):
		return httpsThenPlain
	}
	return httpsOnly
}

// isLoopback reports whether host is one of the names Docker treats as
// local: localhost, 127.0.0.1 and [::1], with any port.
func isLoopback(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	} else {
		name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
	}
	return strings.EqualFold(name, "localhost") || name == "127.0.0.1" || name == "::1"
}

// plainHTTP returns whether to talk plain HTTP, probing a loopback
// registry once: GET https://HOST/v2/ either completes a TLS handshake
// (then TLS it is, whatever the status) or fails because the answer is
// plain HTTP (then plain HTTP). Any other failure (refused, a certificate
// that does not verify) is returned and not remembered.
func (c *Client) plainHTTP(ctx context.Context) (bool, error) {
	switch chooseScheme(c.host, c.opts.PlainHTTP) {
	case plainOnly:
		return true, nil
	case httpsOnly:
		return false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.probed {
		return c.plain, nil
	}
	url := "https://" + registry.Reference{Registry: c.host}.Host() + "/v2/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("User-Agent", c.auth.Header.Get("User-Agent"))
	resp, err := c.http.Do(req)
	switch {
	case err == nil:
		resp.Body.Close()
		c.probed, c.plain = true, false
	case errors.Is(err, http.ErrSchemeMismatch) || notTLS(err):
		c.probed, c.plain = true, true
	default:
		return false, fmt.Errorf("registry %s: %w", c.host, classify(err))
	}
	return c.plain, nil
}

// notTLS reports whether a TLS handshake failed because the server
// answered with something that is not TLS at all (a plain HTTP server
// that does not answer the hello with an HTTP status line, such as
// python's). A certificate that does not verify is not this.
func notTLS(err error) bool {
	var rhe tls.RecordHeaderError
	return errors.As(err, &rhe)
}

// Repository returns the repository name on this registry. It checks the
// name; it does not connect.
func (c *Client) Repository(name string) (*Repository, error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidReference, err)
	}
	return &Repository{client: c, name: name}, nil
}

// Login checks user and password against the registry at host and, if
// they work, stores them in Docker's config.json (or the credential
// helper it names) under host, as `docker login` does.
func Login(ctx context.Context, host, user, password string, opts Options) error {
	if user == "" || password == "" {
		return fmt.Errorf("registry: login to %s: %w: user name and password are both required", host, ErrUnauthorized)
	}
	c, err := NewClient(host, opts)
	if err != nil {
		return err
	}
	plain, err := c.plainHTTP(ctx)
	if err != nil {
		return fmt.Errorf("registry: login to %s: %w", host, err)
	}
	// A client without a token cache: a cached token of earlier
	// credentials must not vouch for these.
	ac := *c.auth
	ac.Cache = nil
	reg := &remote.Registry{RepositoryOptions: remote.RepositoryOptions{
		Client:    &ac,
		Reference: registry.Reference{Registry: host},
		PlainHTTP: plain,
	}}
	cred := auth.Credential{Username: user, Password: password}
	if err := credentials.Login(ctx, c.store, reg, cred); err != nil {
		return fmt.Errorf("registry: login to %s: %w", host, classify(err))
	}
	return nil
}

// Logout removes the credentials of host from Docker's config.json (or
// its credential helper). Logging out of a host one is not logged in to
// is not an error, as with docker logout.
func Logout(ctx context.Context, host string) error {
	if err := ValidateHost(host); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidReference, err)
	}
	store, err := dockerStore()
	if err != nil {
		return err
	}
	if err := credentials.Logout(ctx, store, host); err != nil {
		return fmt.Errorf("registry: logout from %s: %w", host, err)
	}
	return nil
}

// ConfigPath returns the config.json that Login and Logout write and that
// clients read credentials from.
func ConfigPath() (string, error) {
	store, err := dockerStore()
	if err != nil {
		return "", err
	}
	return store.ConfigPath(), nil
}
