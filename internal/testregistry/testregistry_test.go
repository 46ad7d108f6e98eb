package testregistry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
)

func TestPlain(t *testing.T) {
	r := Start(t, Options{})
	resp, err := http.Get(r.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/: %s", resp.Status)
	}
}

func TestSecure(t *testing.T) {
	r := Start(t, Options{Secure: true})
	pem, err := os.ReadFile(r.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in", r.CAFile)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, tc := range []struct {
		user, pass string
		want       int
	}{
		{"", "", http.StatusUnauthorized},
		{r.User, "wrong", http.StatusUnauthorized},
		{r.User, r.Password, http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, r.URL+"/v2/", nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("user %q password %q: %s, want %d", tc.user, tc.pass, resp.Status, tc.want)
		}
	}
	// Without the certificate, TLS verification must fail.
	if resp, err := http.Get(r.URL + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatal("TLS without the CA succeeded")
	}
}

// TestParallelAndCleanup starts registries at once, then checks that
// cleanup leaves no process and no listener behind.
func TestParallelAndCleanup(t *testing.T) {
	var mu sync.Mutex
	var regs []*Registry
	t.Run("group", func(t *testing.T) {
		for i := range 4 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				r := Start(t, Options{Secure: i%2 == 1})
				mu.Lock()
				regs = append(regs, r)
				mu.Unlock()
			})
		}
	})
	if len(regs) != 4 {
		t.Fatalf("%d registries started", len(regs))
	}
	seen := map[string]bool{}
	for _, r := range regs {
		if seen[r.Host] {
			t.Errorf("two registries on %s", r.Host)
		}
		seen[r.Host] = true
		if err := syscall.Kill(r.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("registry process %d still there after cleanup: %v", r.cmd.Process.Pid, err)
		}
		if c, err := net.Dial("tcp", r.Host); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after cleanup", r.Host)
		}
	}
}

// TestPortTaken: when the chosen port is taken by the time the registry
// binds it, Start tries another.
func TestPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	calls := 0
	pickPort = func() (int, error) {
		calls++
		if calls == 1 {
			return taken, nil
		}
		return freePort()
	}
	t.Cleanup(func() { pickPort = freePort })
	r := Start(t, Options{})
	if calls != 2 || r.Host == l.Addr().String() {
		t.Errorf("%d port picks, registry on %s (taken: %d)", calls, r.Host, taken)
	}
}
