package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/nbd"
	"github.com/cangallo/canga/repo"
	"github.com/opencontainers/go-digest"
)

type nbdCmd struct {
	Image    string `arg:"" name:"IMAGE" help:"Image to serve: a remote's image is read chunk by chunk as the client reads, before it is pulled."`
	Socket   string `placeholder:"PATH" help:"Unix socket to serve on (default: CANGA_HOME/run/ID.sock, where overlay --lazy looks)."`
	Addr     string `placeholder:"127.0.0.1:PORT" help:"Serve on this loopback TCP address instead of a socket."`
	Prefetch bool   `help:"Fetch the rest of the image in the background; reads still come first."`
	JSON     bool   `name:"json" help:"On exit, print what was fetched as one JSON document."`
}

// nbdStats is canga nbd --json's document.
type nbdStats struct {
	Version int    `json:"version"`
	Image   string `json:"image"`
	repo.LazyStats
	nbd.Stats
}

func (c *nbdCmd) Run(e *env) error {
	if c.Socket != "" && c.Addr != "" {
		return errors.New("give --socket or --addr, not both")
	}
	h, err := e.openHome()
	if err != nil {
		return err
	}
	r, ix, id, err := h.Resolve(c.Image)
	if err != nil {
		return err
	}
	// Listen before the chain is opened (its chunk lists and first
	// chunks may come over the network): a client that connects now waits
	// in the backlog for the greeting, and its own start-up overlaps
	// ours.
	ln, where, err := c.listen(h, id)
	if err != nil {
		return err
	}
	li, err := r.OpenLazy(e.ctx, ix, id)
	if err != nil {
		ln.Close()
		return err
	}
	defer li.Close()
	srv, err := nbd.New(li.Disk, li.Size, nbd.WithName(""), nbd.WithDescription("canga image "+string(id)),
		nbd.WithAllocation(li.Allocation))
	if err != nil {
		ln.Close()
		return err
	}
	e.notice("serving %s (%s), read-only, at %s; Ctrl-C stops and keeps what was fetched", index.ShortID(id), humanSize(li.Size), where)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	bar := e.newProgress("fetched", li.Missing()+li.Stats().BytesFetched)
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				bar.set(li.Stats().BytesFetched)
			}
		}
	}()
	if c.Prefetch {
		go func() {
			if err := li.Prefetch(ctx, nil); err != nil && ctx.Err() == nil {
				e.notice("prefetch stopped: %v", err)
			}
		}()
	}
	err = srv.Serve(ctx, ln)
	bar.done(err == nil)
	if c.JSON {
		if jerr := writeJSON(e, nbdStats{Version: 1, Image: string(id), LazyStats: li.Stats(), Stats: srv.Stats()}); err == nil {
			err = jerr
		}
	}
	return err
}

// listen opens the socket or TCP address canga nbd serves on, and says
// how a client names it.
func (c *nbdCmd) listen(h *repo.Home, id digest.Digest) (net.Listener, string, error) {
	if c.Addr != "" {
		host, _, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return nil, "", fmt.Errorf("--addr %s: %w", c.Addr, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, "", fmt.Errorf("--addr %s: canga nbd serves loopback addresses only (the export has no authentication)", c.Addr)
		}
		ln, err := net.Listen("tcp", c.Addr)
		if err != nil {
			return nil, "", err
		}
		return ln, "nbd://" + ln.Addr().String(), nil
	}
	sock := c.Socket
	if sock == "" {
		sock = h.NBDSocket(id)
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return nil, "", err
	}
	// A socket left by a canga nbd that was killed is in the way; one in
	// use is not removed (the listen fails instead).
	if conn, err := net.Dial("unix", sock); err == nil {
		conn.Close()
		return nil, "", fmt.Errorf("%s is in use by another server", sock)
	}
	if fi, err := os.Lstat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(sock) // stale: nobody answered on it
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, "", err
	}
	return ln, "nbd+unix:///?socket=" + sock, nil
}
