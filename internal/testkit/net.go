package testkit

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago.
// Another process can take it before the caller binds it: StartServer
// reports that, so that the caller tries another.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// serverWait is how long a server process may take to answer.
const serverWait = 60 * time.Second

// StartServer starts a server process, in its own process group that is
// killed (children and all) when the test ends, and waits until url
// answers with any status. env nil keeps the test's environment. It
// returns false when the process exits first, as it does when its port was
// taken, so that the caller can try another port; the test fails when
// nothing answers within serverWait.
func StartServer(t testing.TB, url string, env []string, name string, args ...string) bool {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var out SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(serverWait); time.Now().Before(deadline); {
		select {
		case <-exited:
			t.Logf("%s exited:\n%s", cmdline(name, args), out.String())
			return false
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: no answer at %s after %v\n%s", cmdline(name, args), url, serverWait, out.String())
	return false
}

// PythonHTTPServer serves dir with python3 -m http.server on a free port
// of 127.0.0.1 until the test ends, and returns its base URL
// ("http://127.0.0.1:PORT/"). It is a static server written by others
// that, unlike canga's, ignores Range requests.
func PythonHTTPServer(t testing.TB, dir string) string {
	t.Helper()
	Need(t, "python3")
	for range 3 { // the free port can be taken in between: try another
		port := FreePort(t)
		url := fmt.Sprintf("http://127.0.0.1:%d/", port)
		if StartServer(t, url, nil, "python3", "-m", "http.server", "--bind", "127.0.0.1", strconv.Itoa(port), "--directory", dir) {
			return url
		}
	}
	t.Fatal("python3 -m http.server would not start")
	return ""
}

// SyncBuffer is a [bytes.Buffer] for a running process's output, which
// the test may read while the process writes.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *SyncBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *SyncBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
