package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults of a [Client] whose fields are zero.
const (
	DefaultMaxAttempts  = 5
	DefaultBaseDelay    = 500 * time.Millisecond
	DefaultMaxDelay     = 30 * time.Second
	DefaultStallTimeout = 60 * time.Second
	DefaultStallBytes   = 4 << 10
	// MaxRedirects bounds the redirects followed for one request.
	MaxRedirects = 10
)

// Client downloads from remote repositories. The zero value works, with
// the defaults above and a User-Agent of "canga"; [NewClient] names the
// version. A Client is safe for concurrent use.
type Client struct {
	// HTTP is the client used for every request. nil means a client made
	// by [NewHTTPClient], shared by every Client that has none.
	HTTP *http.Client
	// UserAgent is sent with every request.
	UserAgent string
	// MaxAttempts bounds the requests for one file that end in a transient
	// failure (connection errors, 408, 429, 5xx, a body cut short). A
	// download attempt that made progress does not count, so a long
	// download over a flaky link goes on as long as bytes keep arriving.
	MaxAttempts int
	// BaseDelay and MaxDelay bound the exponential back-off between
	// attempts (full jitter in [d/2, d]). A Retry-After of the server is
	// honoured up to MaxDelay.
	BaseDelay, MaxDelay time.Duration
	// StallTimeout ends a transfer (as a transient failure) when fewer
	// than StallBytes bytes have arrived in that long: a server that
	// drips a byte a second is as stuck as one that sends nothing. There
	// is no overall timeout: a blob may take hours on a slow link. Only an
	// attempt that delivered StallBytes or more counts as progress (see
	// MaxAttempts), so that a drip cannot keep a download going forever.
	StallTimeout time.Duration
	// StallBytes is the least a transfer must deliver every StallTimeout
	// (0: DefaultStallBytes).
	StallBytes int64
}

// NewClient returns a Client that identifies itself as canga/version.
func NewClient(version string) *Client {
	if version == "" {
		version = "dev"
	}
	return &Client{UserAgent: "canga/" + version}
}

// NewHTTPClient returns the http.Client that a Client uses by default:
// connect, TLS handshake and response header timeouts but no overall
// timeout (bodies are disk images), proxies from the environment, and no
// transparent gzip, which would make the bytes received differ from the
// bytes served (and Range requests meaningless).
func NewHTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8, // parallel downloads of a chain
		DisableCompression:    true,
		// Bodies are read in chunks of a MiB; a bigger buffer than the
		// default 4 KiB saves system calls on the headers and small files.
		ReadBufferSize: 64 << 10,
	}, CheckRedirect: checkRedirect}
}

// checkRedirect follows redirects to http and https URLs only, at most
// MaxRedirects of them; a server that redirects elsewhere or in a loop
// will do so again, so the error is permanent.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= MaxRedirects {
		return &permanent{fmt.Errorf("%w: more than %d redirects", ErrProtocol, MaxRedirects)}
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return &permanent{fmt.Errorf("%w: redirect to %s: only http and https are followed", ErrProtocol, quote(Redact(req.URL.String())))}
	}
	return nil
}

var (
	defaultHTTPOnce sync.Once
	defaultHTTP     *http.Client
)

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	defaultHTTPOnce.Do(func() { defaultHTTP = NewHTTPClient() })
	return defaultHTTP
}

func (c *Client) userAgent() string {
	if c.UserAgent != "" {
		return c.UserAgent
	}
	return "canga"
}

func (c *Client) maxAttempts() int {
	if c.MaxAttempts > 0 {
		return c.MaxAttempts
	}
	return DefaultMaxAttempts
}

func (c *Client) stallTimeout() time.Duration {
	if c.StallTimeout > 0 {
		return c.StallTimeout
	}
	return DefaultStallTimeout
}

func (c *Client) stallBytes() int64 {
	if c.StallBytes > 0 {
		return c.StallBytes
	}
	return DefaultStallBytes
}

// delay is the wait before attempt number attempt+1 (attempt >= 1).
func (c *Client) delay(attempt int, retryAfter int) time.Duration {
	base, maxd := c.BaseDelay, c.MaxDelay
	if base <= 0 {
		base = DefaultBaseDelay
	}
	if maxd <= 0 {
		maxd = DefaultMaxDelay
	}
	d := base
	for i := 1; i < attempt && d < maxd; i++ {
		d *= 2
	}
	d = min(d, maxd)
	// Full jitter in [d/2, d]: clients cut off by the same outage must not
	// come back in step.
	d = d/2 + rand.N(d/2+1)
	if ra := time.Duration(retryAfter) * time.Second; ra > d {
		d = min(ra, maxd)
	}
	return d
}

// retry runs op until it succeeds, fails permanently, or has failed
// transiently MaxAttempts times in a row. op reports whether its attempt
// made progress (bytes that the next attempt need not fetch again), which
// resets the count.
func (c *Client) retry(ctx context.Context, op func() (progressed bool, err error)) error {
	failures := 0
	for {
		progressed, err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if !isTransient(err) {
			return unwrapPermanent(err)
		}
		if progressed {
			failures = 0
		}
		failures++
		if failures >= c.maxAttempts() {
			return fmt.Errorf("%w (gave up after %d attempts)", err, failures)
		}
		retryAfter := 0
		var se *StatusError
		if errors.As(err, &se) {
			retryAfter = se.RetryAfter
		}
		t := time.NewTimer(c.delay(failures, retryAfter))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// unwrapPermanent drops the marker, which has done its job.
func unwrapPermanent(err error) error {
	if p, ok := err.(*permanent); ok {
		return p.err
	}
	return err
}

// isTransient classifies an error of one attempt.
func isTransient(err error) bool {
	var p *permanent
	if errors.As(err, &p) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.transient()
	}
	var te *transferError
	if errors.As(err, &te) {
		return true
	}
	if errors.Is(err, errStalled) {
		return true
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	// Certificates do not fix themselves, and a DNS name that does not
	// exist will not exist in a second either.
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	var rhe tls.RecordHeaderError
	if errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) || errors.As(err, &cie) || errors.As(err, &rhe) {
		return false
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return !dns.IsNotFound
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ENETDOWN) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// What is left of a failed round trip is mostly the connection going
	// away in some other words ("http2: server sent GOAWAY", "connection
	// lost"); a bad request would have been refused before it was sent.
	return ue != nil
}

// get sends one GET of u, with a Range from off when off > 0 and the
// request's extra headers. The body of the returned response is watched:
// a read that waits longer than StallTimeout fails with errStalled, and a
// read error is a *transferError. The caller closes the body, which also
// releases the request's context.
func (c *Client) get(ctx context.Context, u string, off int64, header http.Header) (*http.Response, error) {
	rctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, &permanent{fmt.Errorf("%w: %w", ErrBadURL, err)}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.userAgent())
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	// The response header timeout of the default transport covers the wait
	// for the status line; a stall timer covers it for other transports too.
	w := newWatch(cancel, c.stallTimeout(), c.stallBytes())
	resp, err := c.http().Do(req)
	if err != nil {
		stalled := w.stop()
		cancel()
		if stalled {
			return nil, fmt.Errorf("remote: GET %s: %w", Redact(u), errStalled)
		}
		// *url.Error names the request, without a password.
		return nil, fmt.Errorf("remote: %w", err)
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		w.stop()
		resp.Body.Close()
		cancel()
		return nil, &permanent{fmt.Errorf("%w: GET %s: Content-Encoding %s: the server must send files as they are", ErrProtocol, u, quote(ce))}
	}
	resp.Body = &watchedBody{rc: resp.Body, w: w, cancel: cancel}
	return resp, nil
}

// statusError builds the error for a response that cannot be used, and
// closes its body.
func statusError(u string, resp *http.Response) error {
	resp.Body.Close()
	se := &StatusError{URL: Redact(u), Status: resp.StatusCode}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n > 0 {
			se.RetryAfter = n
		} else if t, err := http.ParseTime(s); err == nil {
			se.RetryAfter = max(0, int(time.Until(t).Seconds()))
		}
	}
	return se
}

// Redact leaves the user info (a password) out of a URL shown to people.
func Redact(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	return pu.Redacted()
}

// watch cancels a request when fewer than min bytes have moved in d.
type watch struct {
	t       *time.Timer
	d       time.Duration
	min     int64
	n       int64 // bytes since the timer was last reset; Read's alone
	mu      sync.Mutex
	stalled bool
}

func newWatch(cancel context.CancelFunc, d time.Duration, min int64) *watch {
	w := &watch{d: d, min: min}
	w.t = time.AfterFunc(d, func() {
		w.mu.Lock()
		w.stalled = true
		w.mu.Unlock()
		cancel()
	})
	return w
}

// kick counts n bytes read, and restarts the timer once min have come.
func (w *watch) kick(n int) {
	w.n += int64(n)
	if w.n >= w.min {
		w.n = 0
		w.t.Reset(w.d)
	}
}

// stop stops the timer and reports whether it had fired.
func (w *watch) stop() bool {
	w.t.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stalled
}

type watchedBody struct {
	rc     io.ReadCloser
	w      *watch
	cancel context.CancelFunc
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.w.kick(n)
	}
	if err != nil && err != io.EOF {
		b.w.mu.Lock()
		stalled := b.w.stalled
		b.w.mu.Unlock()
		if stalled {
			err = errStalled
		}
		err = &transferError{err: err}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.w.stop()
	err := b.rc.Close()
	b.cancel()
	return err
}

// resolve joins a base URL and a path relative to it. The base must be
// http or https; rel is a slash-separated path of plain names, built from
// validated digests by this package, but checked again because a wrong
// one must never reach a server as "../".
func resolve(base, rel string) (string, error) {
	u, err := parseBase(base)
	if err != nil {
		return "", err
	}
	if err := checkRelPath(rel); err != nil {
		return "", err
	}
	u.Path += rel
	u.RawPath = ""
	return u.String(), nil
}

func parseBase(base string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, &permanent{fmt.Errorf("%w: %w", ErrBadURL, err)}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, &permanent{fmt.Errorf("%w: %s: only http and https are supported", ErrBadURL, quote(Redact(base)))}
	}
	if u.Host == "" {
		return nil, &permanent{fmt.Errorf("%w: %s: no host", ErrBadURL, quote(Redact(base)))}
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawPath = ""
	u.Fragment = ""
	u.RawQuery = ""
	return u, nil
}

func checkRelPath(rel string) error {
	if rel == "" || strings.HasPrefix(rel, "/") || strings.HasSuffix(rel, "/") {
		return &permanent{fmt.Errorf("%w: path %s", ErrBadURL, quote(rel))}
	}
	for _, seg := range strings.Split(rel, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return &permanent{fmt.Errorf("%w: path %s", ErrBadURL, quote(rel))}
		}
		for _, r := range seg {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
			if !ok {
				return &permanent{fmt.Errorf("%w: path %s", ErrBadURL, quote(rel))}
			}
		}
	}
	return nil
}
