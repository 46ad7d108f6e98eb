package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/cangallo/canga/internal/panics"
)

var be = binary.BigEndian

// conn is one client connection.
type conn struct {
	s    *Server
	nc   net.Conn
	br   *bufio.Reader
	name string // for errors: "connection 3 from 127.0.0.1:4711"

	// dl guards the deadlines against a shutdown that sets its own while
	// the handshake moves them.
	dl      sync.Mutex
	stopped bool
	stopAt  time.Time // when replies in progress at shutdown are cut

	// wmu makes each reply whole on the wire; ferr is the first failure of
	// a reply or a worker, after which the connection is dead.
	wmu  sync.Mutex
	ferr error

	lim     limiter
	workers sync.WaitGroup

	// Set by the handshake, read-only after it: structured replies
	// negotiated, and base:allocation selected.
	structured, allocation bool
}

// serveConn serves one connection until the client leaves, breaks the
// protocol or ctx ends, then closes it and calls done.
func (s *Server) serveConn(ctx context.Context, nc net.Conn, id int64, done func()) {
	c := &conn{
		s:    s,
		nc:   nc,
		br:   bufio.NewReaderSize(nc, 32<<10),
		name: fmt.Sprintf("connection %d", id),
		lim:  limiter{maxCount: s.o.inFlight, maxBytes: s.o.inFlightBytes},
	}
	if a := nc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		c.name += " from " + a.String()
	}
	c.lim.cond.L = &c.lim.mu
	var err error
	defer func() {
		nc.Close() // fails the writes of workers that are still blocked
		c.workers.Wait()
		s.active.Add(-1)
		if f := c.failure(); f != nil {
			err = f
		}
		if err = c.quiet(err); err != nil {
			s.report(fmt.Errorf("nbd: %s: %w", c.name, err))
		}
		done()
	}()
	defer panics.Recover(&err, ErrInternal, func() string { return "serving " + c.name })
	stop := context.AfterFunc(ctx, c.stop)
	defer stop()
	err = c.serve()
}

func (c *conn) serve() error {
	c.setDeadline(time.Now().Add(c.s.o.handshakeTimeout))
	ok, err := c.handshake()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && !c.isStopped() {
			return fmt.Errorf("handshake not finished within %v: %w", c.s.o.handshakeTimeout, err)
		}
		return err
	}
	if !ok {
		return nil // NBD_OPT_ABORT
	}
	c.setDeadline(time.Time{})
	return c.transmit()
}

// setDeadline sets the read and write deadline unless the connection is
// stopping, whose deadlines win.
func (c *conn) setDeadline(t time.Time) {
	c.dl.Lock()
	defer c.dl.Unlock()
	if !c.stopped {
		c.nc.SetDeadline(t)
	}
}

// stop begins the shutdown of the connection: no request is read any more,
// and the replies in progress get the shutdown grace to be written.
func (c *conn) stop() {
	c.dl.Lock()
	c.stopped = true
	c.stopAt = time.Now().Add(c.s.o.shutdownGrace)
	c.nc.SetReadDeadline(time.Unix(1, 0))
	c.nc.SetWriteDeadline(c.stopAt)
	c.dl.Unlock()
	c.lim.close()
}

func (c *conn) isStopped() bool {
	c.dl.Lock()
	defer c.dl.Unlock()
	return c.stopped
}

// armWrite sets the deadline of the next reply: the write timeout, if
// any, but never later than the shutdown's. It holds dl so that a
// shutdown cannot come between the choice and the setting.
func (c *conn) armWrite() {
	c.dl.Lock()
	defer c.dl.Unlock()
	var d time.Time
	if c.s.o.writeTimeout > 0 {
		d = time.Now().Add(c.s.o.writeTimeout)
	}
	if c.stopped && (d.IsZero() || c.stopAt.Before(d)) {
		d = c.stopAt
	}
	if !d.IsZero() {
		c.nc.SetWriteDeadline(d)
	}
}

// fail records the first failure of the connection and closes it, which
// ends the request loop and every write in progress.
func (c *conn) fail(err error) {
	c.wmu.Lock()
	if c.ferr == nil {
		c.ferr = err
	}
	c.wmu.Unlock()
	c.nc.Close()
	c.lim.close()
}

func (c *conn) failure() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ferr
}

// quiet drops the errors that are only a client leaving in a way the
// protocol allows (closing the connection between messages, or abruptly
// while its replies were being written), or the server shutting down.
func (c *conn) quiet(err error) error {
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, errStopped):
		return nil
	case c.isStopped() && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed)):
		return nil
	}
	return err
}

// readMore reads the rest of a message whose first bytes came: its end is
// never a clean disconnect.
func (c *conn) readMore(p []byte) error {
	if _, err := io.ReadFull(c.br, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// handshake runs the fixed newstyle negotiation. It reports whether the
// client went on to the transmission phase.
func (c *conn) handshake() (bool, error) {
	bw := bufio.NewWriterSize(c.nc, 4096)
	var hello [18]byte
	be.PutUint64(hello[0:], nbdMagic)
	be.PutUint64(hello[8:], optMagic)
	be.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	bw.Write(hello[:])
	if err := bw.Flush(); err != nil {
		return false, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return false, err
	}
	flags := be.Uint32(cf[:])
	if flags&^(flagCFixedNewstyle|flagCNoZeroes) != 0 {
		return false, fmt.Errorf("%w: unknown client flags %#x", ErrProtocol, flags)
	}
	// A client without NBD_FLAG_C_FIXED_NEWSTYLE is served as if it had
	// set it, as the specification allows: such a client sends only
	// NBD_OPT_EXPORT_NAME anyway.
	noZeroes := flags&flagCNoZeroes != 0
	for {
		var h [optHeaderLen]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return false, err
		}
		if m := be.Uint64(h[0:]); m != optMagic {
			return false, fmt.Errorf("%w: option magic %#x", ErrProtocol, m)
		}
		opt, n := be.Uint32(h[8:]), be.Uint32(h[12:])
		if n > maxOption {
			return false, fmt.Errorf("%w: option %d has %d bytes of data, more than %d", ErrProtocol, opt, n, maxOption)
		}
		data := make([]byte, n)
		if err := c.readMore(data); err != nil {
			return false, err
		}
		r := optReplier{w: bw, opt: opt}
		switch opt {
		case optExportName:
			if !c.s.serves(string(data)) {
				// The option cannot return an error: the specification has
				// the server end the session.
				return false, fmt.Errorf("NBD_OPT_EXPORT_NAME asked for export %q, which is not served", data)
			}
			var b [10 + zeroPadLen]byte
			be.PutUint64(b[0:], uint64(c.s.size))
			be.PutUint16(b[8:], transmissionFlags)
			if noZeroes {
				bw.Write(b[:10])
			} else {
				bw.Write(b[:])
			}
			return true, bw.Flush()
		case optAbort:
			r.reply(repAck, nil)
			// The client may have hung up already; that is no failure.
			bw.Flush()
			return false, nil
		case optList:
			if n != 0 {
				r.reply(repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
				break
			}
			b := be.AppendUint32(nil, uint32(len(c.s.o.name)))
			b = append(b, c.s.o.name...)
			r.reply(repServer, append(b, c.s.o.description...))
			r.reply(repAck, nil)
		case optStartTLS:
			r.reply(repErrPolicy, []byte("TLS is not offered: the export is for local clients"))
		case optInfo, optGo:
			name, infos, ok := parseInfoRequest(data)
			if !ok {
				r.reply(repErrInvalid, []byte("malformed NBD_OPT_INFO or NBD_OPT_GO"))
				break
			}
			if !c.s.serves(name) {
				r.reply(repErrUnknown, fmt.Appendf(nil, "no export named %q", trim(name)))
				break
			}
			c.s.replyInfo(&r, infos)
			r.reply(repAck, nil)
			if opt == optGo {
				return true, bw.Flush()
			}
		case optStructuredReply:
			if n != 0 {
				r.reply(repErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
				break
			}
			c.structured = true
			r.reply(repAck, nil)
		case optListMetaContext, optSetMetaContext:
			c.metaContext(&r, data)
		default:
			// Extended headers among others: the client falls back to
			// what is above.
			r.reply(repErrUnsup, nil)
		}
		if err := bw.Flush(); err != nil {
			return false, err
		}
	}
}

// metaContext answers NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT. The only context is base:allocation, offered
// when the server has an AllocationFunc; a SET replaces the selection.
func (c *conn) metaContext(r *optReplier, data []byte) {
	name, queries, ok := parseMetaRequest(data)
	switch {
	case !c.structured:
		r.reply(repErrInvalid, []byte("metadata contexts need structured replies: send NBD_OPT_STRUCTURED_REPLY first"))
		return
	case !ok:
		r.reply(repErrInvalid, []byte("malformed metadata context request"))
		return
	case !c.s.serves(name):
		r.reply(repErrUnknown, fmt.Appendf(nil, "no export named %q", trim(name)))
		return
	}
	list := r.opt == optListMetaContext
	match := c.s.o.allocation != nil && list && len(queries) == 0
	for _, q := range queries {
		// A list may ask for a whole namespace.
		match = match || c.s.o.allocation != nil && (q == metaBaseAllocation || list && q == "base:")
	}
	id := uint32(0) // the specification reserves 0 for lists
	if !list {
		c.allocation = match
		id = baseAllocationID
	}
	if match {
		r.reply(repMetaContext, append(be.AppendUint32(nil, id), metaBaseAllocation...))
	}
	r.reply(repAck, nil)
}

// parseMetaRequest parses the data of the metadata context options: a
// 32-bit name length, the name, a 32-bit count of queries and the queries,
// each a 32-bit length and a string, with nothing after them.
func parseMetaRequest(data []byte) (name string, queries []string, ok bool) {
	name, rest, ok := splitName(data, 4)
	if !ok {
		return "", nil, false
	}
	count := be.Uint32(rest)
	rest = rest[4:]
	if uint64(count) > uint64(len(rest)/4) { // each query takes 4 bytes at least
		return "", nil, false
	}
	for range count {
		if len(rest) < 4 || uint64(be.Uint32(rest)) > uint64(len(rest)-4) {
			return "", nil, false
		}
		l := be.Uint32(rest)
		queries = append(queries, string(rest[4:4+l]))
		rest = rest[4+l:]
	}
	return name, queries, len(rest) == 0
}

// serves reports whether name reaches the export.
func (s *Server) serves(name string) bool { return name == "" || name == s.o.name }

// trim shortens a client's string for an error message.
func trim(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// splitName splits option data that starts with a 32-bit name length and
// the name, and must have at least after bytes after the name.
func splitName(data []byte, after int) (string, []byte, bool) {
	if len(data) < 4+after {
		return "", nil, false
	}
	n := be.Uint32(data)
	if uint64(n) > uint64(len(data)-4-after) {
		return "", nil, false
	}
	return string(data[4 : 4+n]), data[4+n:], true
}

// parseInfoRequest parses the data of NBD_OPT_INFO and NBD_OPT_GO: a
// 32-bit name length, the name, a 16-bit count of information requests
// and the requests, 16 bits each, with nothing after them.
func parseInfoRequest(data []byte) (name string, infos []uint16, ok bool) {
	name, rest, ok := splitName(data, 2)
	if !ok {
		return "", nil, false
	}
	count := int(be.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return "", nil, false
	}
	for i := range count {
		infos = append(infos, be.Uint16(rest[2*i:]))
	}
	return name, infos, true
}

// replyInfo sends the NBD_REP_INFO replies: the export's size and flags,
// and its block sizes, always (clients ignore what they did not ask for;
// the limit is enforced either way); its name and description when asked.
func (s *Server) replyInfo(r *optReplier, infos []uint16) {
	b := be.AppendUint16(nil, infoExport)
	b = be.AppendUint64(b, uint64(s.size))
	r.reply(repInfo, be.AppendUint16(b, transmissionFlags))
	b = be.AppendUint16(nil, infoBlockSize)
	b = be.AppendUint32(b, 1)
	b = be.AppendUint32(b, s.o.preferredBlock)
	r.reply(repInfo, be.AppendUint32(b, MaxRequest))
	for _, i := range infos {
		switch {
		case i == infoName:
			r.reply(repInfo, append(be.AppendUint16(nil, infoName), s.o.name...))
		case i == infoDescription && s.o.description != "":
			r.reply(repInfo, append(be.AppendUint16(nil, infoDescription), s.o.description...))
		}
	}
}

// optReplier writes option replies; the caller flushes.
type optReplier struct {
	w   *bufio.Writer
	opt uint32
}

func (r *optReplier) reply(typ uint32, data []byte) {
	var h [20]byte
	be.PutUint64(h[0:], optReplyMagic)
	be.PutUint32(h[8:], r.opt)
	be.PutUint32(h[12:], typ)
	be.PutUint32(h[16:], uint32(len(data)))
	r.w.Write(h[:])
	r.w.Write(data)
}
