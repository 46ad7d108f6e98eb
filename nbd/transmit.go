package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/cangallo/canga/internal/panics"
)

// errStopped ends the request loop when the connection shuts down.
var errStopped = errors.New("nbd: connection stopping")

// transmit reads requests until the client disconnects or the connection
// fails or stops, and waits for the reads it started.
func (c *conn) transmit() error {
	defer c.workers.Wait()
	var h [requestHeaderLen]byte
	for {
		if _, err := io.ReadFull(c.br, h[:1]); err != nil {
			return err // io.EOF between requests: the client hung up
		}
		if err := c.readMore(h[1:]); err != nil {
			return err
		}
		if m := be.Uint32(h[0:]); m != requestMagic {
			return fmt.Errorf("%w: request magic %#x", ErrProtocol, m)
		}
		flags, typ := be.Uint16(h[4:]), be.Uint16(h[6:])
		handle, off, length := be.Uint64(h[8:]), be.Uint64(h[16:]), be.Uint32(h[24:])
		c.s.requests.Add(1)
		var errno uint32
		switch typ {
		case cmdRead:
			if errno = c.s.checkRead(flags, off, length); errno != 0 || length == 0 {
				break
			}
			if !c.lim.acquire(int64(length)) {
				return errStopped
			}
			c.workers.Add(1)
			go c.read(handle, int64(off), int(length))
			continue
		case cmdWrite:
			// The payload follows the header whatever the answer: drop it
			// to stay in step, unless it is too long to be honest.
			if length > MaxRequest {
				return fmt.Errorf("%w: write of %d bytes, more than %d", ErrProtocol, length, MaxRequest)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(length)); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			errno = errPerm
		case cmdDisc:
			return nil // after the reads in progress, by the deferred Wait
		case cmdFlush:
			// Nothing is ever written, so there is nothing to flush.
			if flags&^cmdFlagFUA != 0 {
				errno = errInval
			}
		case cmdTrim, cmdWriteZeroes:
			errno = errPerm
		default:
			errno = errInval
		}
		if errno != 0 {
			c.s.rejected.Add(1)
		}
		if err := c.reply(handle, errno, nil); err != nil {
			return err
		}
	}
}

// checkRead returns the error of a read request that cannot be served, or
// 0: flags other than FUA, a length above MaxRequest, a range past the end.
func (s *Server) checkRead(flags uint16, off uint64, length uint32) uint32 {
	if flags&^cmdFlagFUA != 0 || length > MaxRequest || off > uint64(s.size) || uint64(length) > uint64(s.size)-off {
		return errInval
	}
	return 0
}

// read serves one read request; it runs in its own goroutine.
func (c *conn) read(handle uint64, off int64, n int) {
	var err error
	defer func() {
		c.lim.release(int64(n))
		if err != nil {
			c.fail(err)
		}
		c.workers.Done()
	}()
	defer panics.Recover(&err, ErrInternal, func() string { return fmt.Sprintf("serving a read of %d bytes at offset %d", n, off) })
	buf := c.s.getBuf(n)
	defer c.s.putBuf(buf)
	if rerr := c.s.readAt(buf, off); rerr != nil {
		c.s.readErrors.Add(1)
		c.s.report(fmt.Errorf("nbd: %s: reading %d bytes at offset %d: %w", c.name, n, off, rerr))
		err = c.reply(handle, errIO, nil)
		return
	}
	if err = c.reply(handle, 0, buf); err == nil {
		c.s.bytesRead.Add(int64(n))
	}
}

// readAt fills p from the export. A short read, an error or a panic of the
// export is an error (the panic one wrapping ErrInternal).
func (s *Server) readAt(p []byte, off int64) (err error) {
	defer panics.Recover(&err, ErrInternal, func() string { return fmt.Sprintf("reading %d bytes at offset %d of the export", len(p), off) })
	n, err := s.r.ReadAt(p, off)
	if n == len(p) && (err == nil || errors.Is(err, io.EOF)) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: %d of %d bytes", io.ErrUnexpectedEOF, n, len(p))
	}
	return err
}

// reply writes a simple reply, with data for a successful read. After a
// failed write the connection is dead and every reply fails the same way.
func (c *conn) reply(handle uint64, errno uint32, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ferr != nil {
		return c.ferr
	}
	var h [replyHeaderLen]byte
	be.PutUint32(h[0:], simpleReplyMagic)
	be.PutUint32(h[4:], errno)
	be.PutUint64(h[8:], handle)
	c.armWrite()
	bufs := net.Buffers{h[:], data}
	if _, err := bufs.WriteTo(c.nc); err != nil {
		c.ferr = fmt.Errorf("writing a reply: %w", err)
		c.nc.Close()
		c.lim.close()
		return c.ferr
	}
	return nil
}

// limiter bounds the reads of a connection in flight, by count and by
// bytes. Once closed it admits nothing more.
type limiter struct {
	mu              sync.Mutex
	cond            sync.Cond
	count, maxCount int
	bytes, maxBytes int64
	closed          bool
}

// acquire waits until a read of n bytes (n <= maxBytes) may start; it
// reports false when the limiter closed instead.
func (l *limiter) acquire(n int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.closed && (l.count >= l.maxCount || l.bytes+n > l.maxBytes) {
		l.cond.Wait()
	}
	if l.closed {
		return false
	}
	l.count++
	l.bytes += n
	return true
}

func (l *limiter) release(n int64) {
	l.mu.Lock()
	l.count--
	l.bytes -= n
	l.mu.Unlock()
	l.cond.Broadcast()
}

func (l *limiter) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cond.Broadcast()
}
