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
		case cmdBlockStatus:
			if errno = c.checkBlockStatus(flags, off, length); errno != 0 {
				break
			}
			if !c.lim.acquire(0) {
				return errStopped
			}
			c.workers.Add(1)
			go c.blockStatus(handle, flags, int64(off), int64(length))
			continue
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
		var err error
		if c.structured && (typ == cmdRead || typ == cmdBlockStatus) {
			// Once structured replies are negotiated, a read is answered
			// by one, even an empty one or a refusal, and so is a block
			// status (whose answer can only be one), as qemu's server
			// does.
			err = c.replyChunk(handle, errno, replyTypeNone, nil, nil)
		} else {
			err = c.reply(handle, errno, nil)
		}
		if err != nil {
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

// checkBlockStatus returns the error of a block status request that
// cannot be served, or 0: no metadata context selected, flags other than
// FUA and REQ_ONE, an empty range or one past the end.
func (c *conn) checkBlockStatus(flags uint16, off uint64, length uint32) uint32 {
	if !c.allocation || flags&^(cmdFlagFUA|cmdFlagReqOne) != 0 || length == 0 ||
		off > uint64(c.s.size) || uint64(length) > uint64(c.s.size)-off {
		return errInval
	}
	return 0
}

// blockStatus serves one block status request; it runs in its own
// goroutine, since the export may have to fetch its metadata first.
func (c *conn) blockStatus(handle uint64, flags uint16, off, length int64) {
	var err error
	defer func() {
		c.lim.release(0)
		if err != nil {
			c.fail(err)
		}
		c.workers.Done()
	}()
	defer panics.Recover(&err, ErrInternal, func() string { return fmt.Sprintf("serving the block status of %d bytes at offset %d", length, off) })
	ext, serr := c.s.extents(off, length, flags&cmdFlagReqOne != 0)
	if serr != nil {
		c.s.readErrors.Add(1)
		c.s.report(fmt.Errorf("nbd: %s: the block status of %d bytes at offset %d: %w", c.name, length, off, serr))
		err = c.replyChunk(handle, errIO, replyTypeNone, nil, nil)
		return
	}
	if err = c.replyChunk(handle, 0, replyTypeBlockStatus, ext, nil); err == nil {
		c.s.blockStatus.Add(1)
	}
}

// extents is the payload of a block status reply for [off, off+length):
// the context ID, then descriptors (length, flags) from off on, adjacent
// runs of one kind merged, one descriptor only if one is set. It may stop
// short of the end (see maxExtents).
func (s *Server) extents(off, length int64, one bool) (b []byte, err error) {
	defer panics.Recover(&err, ErrInternal, func() string { return fmt.Sprintf("asking the export for the allocation at offset %d", off) })
	b = be.AppendUint32(make([]byte, 0, 64), baseAllocationID)
	var last uint32
	count := 0
	for end, calls := off+length, 0; off < end && calls < maxAllocationCalls; calls++ {
		n, hole, err := s.o.allocation(off, end-off)
		if err != nil {
			return nil, err
		}
		if n <= 0 || n > end-off {
			return nil, fmt.Errorf("the export reports a run of %d bytes at offset %d, asked for at most %d", n, off, end-off)
		}
		var flags uint32
		if hole {
			flags = stateHole | stateZero
		}
		if count > 0 && flags == last {
			i := len(b) - 8 // n < 2^32: the request's length is 32 bits
			be.PutUint32(b[i:], be.Uint32(b[i:])+uint32(n))
		} else {
			if count > 0 && (one || count == maxExtents) {
				break
			}
			b = be.AppendUint32(be.AppendUint32(b, uint32(n)), flags)
			last = flags
			count++
		}
		off += n
	}
	return b, nil
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
		if c.structured {
			err = c.replyChunk(handle, errIO, replyTypeNone, nil, nil)
		} else {
			err = c.reply(handle, errIO, nil)
		}
		return
	}
	if c.structured {
		err = c.replyChunk(handle, 0, replyTypeOffsetData, be.AppendUint64(nil, uint64(off)), buf)
	} else {
		err = c.reply(handle, 0, buf)
	}
	if err == nil {
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

// reply writes a simple reply, with data for a successful read.
func (c *conn) reply(handle uint64, errno uint32, data []byte) error {
	var h [replyHeaderLen]byte
	be.PutUint32(h[0:], simpleReplyMagic)
	be.PutUint32(h[4:], errno)
	be.PutUint64(h[8:], handle)
	return c.send(net.Buffers{h[:], data})
}

// replyChunk writes a structured reply of one chunk: an error chunk when
// errno is not 0, else a chunk of type typ whose payload is head and data.
func (c *conn) replyChunk(handle uint64, errno uint32, typ uint16, head, data []byte) error {
	if errno != 0 {
		// The error, and a message of no bytes.
		typ, head, data = replyTypeError, be.AppendUint16(be.AppendUint32(nil, errno), 0), nil
	}
	var h [chunkHeaderLen]byte
	be.PutUint32(h[0:], chunkReplyMagic)
	be.PutUint16(h[4:], replyFlagDone)
	be.PutUint16(h[6:], typ)
	be.PutUint64(h[8:], handle)
	be.PutUint32(h[16:], uint32(len(head)+len(data)))
	return c.send(net.Buffers{h[:], head, data})
}

// send writes one whole reply. After a failed write the connection is dead
// and every reply fails the same way.
func (c *conn) send(bufs net.Buffers) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ferr != nil {
		return c.ferr
	}
	c.armWrite()
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
