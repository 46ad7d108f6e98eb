package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cangallo/canga/internal/panics"
)

// ErrInternal means the server met a bug of its own (a panic) while it
// served a connection or read the export. The error that wraps it says
// what was being done.
var ErrInternal = errors.New("nbd: internal error")

// ErrProtocol means a client broke the protocol badly enough that its
// connection was closed: a bad magic number, unknown client flags, an
// oversized option or write, a truncated message.
var ErrProtocol = errors.New("nbd: protocol error")

// Defaults of the [Option]s.
const (
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultInFlightRequests = 16
	DefaultInFlightBytes    = 64 << 20
	DefaultPreferredBlock   = 4096
	DefaultShutdownGrace    = 5 * time.Second
)

// Server serves one export, read-only, to any number of clients at once.
// Create it with [New]; it is safe for concurrent use.
type Server struct {
	r    io.ReaderAt
	size int64
	o    options

	pools [bits.UintSize]sync.Pool // read buffers by power-of-two size class

	connections, active, requests, bytesRead, readErrors, rejected, blockStatus atomic.Int64
}

type options struct {
	name, description string
	handshakeTimeout  time.Duration
	writeTimeout      time.Duration
	shutdownGrace     time.Duration
	inFlight          int
	inFlightBytes     int64
	preferredBlock    uint32
	onError           func(error)
	allocation        AllocationFunc
}

// Option configures a [Server].
type Option func(*options)

// WithName sets the name of the export, which NBD_OPT_LIST reports and
// clients may ask for. The empty name (the default export, which qemu's
// nbd+unix:///?socket=PATH asks for) always reaches the export too.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithDescription sets the description NBD_OPT_LIST and NBD_INFO_DESCRIPTION
// give, for people.
func WithDescription(d string) Option { return func(o *options) { o.description = d } }

// WithHandshakeTimeout bounds the time from a connection's accept to the
// end of its handshake ([DefaultHandshakeTimeout]): a client that sends
// its handshake slowly, or not at all, is disconnected.
func WithHandshakeTimeout(d time.Duration) Option {
	return func(o *options) { o.handshakeTimeout = d }
}

// WithWriteTimeout closes a connection when writing one reply takes longer
// than d: a client that stops reading its replies loses its connection
// instead of holding the server's buffers. The default, 0, waits for ever,
// because a paused virtual machine is a client that stops reading for a
// while and must not lose its disk.
func WithWriteTimeout(d time.Duration) Option { return func(o *options) { o.writeTimeout = d } }

// WithShutdownGrace bounds how long, once the context of [Server.Serve]
// ends, replies still being written may take before their connections are
// cut ([DefaultShutdownGrace]).
func WithShutdownGrace(d time.Duration) Option { return func(o *options) { o.shutdownGrace = d } }

// WithInFlight bounds the reads of one connection that are being served at
// once: at most requests of them, holding at most bytes of buffers
// ([DefaultInFlightRequests], [DefaultInFlightBytes]). bytes is raised to
// [MaxRequest] if it is smaller, so that the longest read can run. The
// server reads no further request of a connection while its bounds are
// reached, so a client that never reads its replies costs at most that.
func WithInFlight(requests int, bytes int64) Option {
	return func(o *options) { o.inFlight, o.inFlightBytes = requests, bytes }
}

// WithPreferredBlockSize sets the preferred block size that
// NBD_INFO_BLOCK_SIZE advertises ([DefaultPreferredBlock]): a power of
// two from 512 to [MaxRequest], the size below which reads cost more than
// they should (a chunk of a lazily fetched blob, say). The minimum block
// size is always 1 and the maximum [MaxRequest].
func WithPreferredBlockSize(n uint32) Option { return func(o *options) { o.preferredBlock = n } }

// AllocationFunc reports how the export reads from off on: the length n
// of the run that starts there (0 < n <= length) and whether the whole run
// reads as zeros without being stored (a hole: unallocated, or a zero
// cluster). Runs may be shorter than the longest true run; n bytes of data
// where the answer is not known are always right. It is called from
// several goroutines at once.
type AllocationFunc func(off, length int64) (n int64, hole bool, err error)

// WithAllocation has the server offer the base:allocation metadata
// context, answered by f: NBD_CMD_BLOCK_STATUS tells clients which ranges
// are holes, so that qemu-img convert, say, reads only the data and keeps
// the holes sparse instead of reading zeros over the connection.
func WithAllocation(f AllocationFunc) Option { return func(o *options) { o.allocation = f } }

// OnError has f called with every error the server meets but does not
// return: a connection ended by a protocol error, a bug or a failed write,
// and every read of the export that failed (answered NBD_EIO). f is called
// from several goroutines at once. Clients that disconnect in any way the
// protocol allows are not errors.
func OnError(f func(error)) Option { return func(o *options) { o.onError = f } }

// New returns a server for the export r of size bytes. r must be safe for
// concurrent ReadAt calls (a qcow2.Disk is), and its reads must end: the
// server waits for the reads it started before [Server.Serve] returns.
func New(r io.ReaderAt, size int64, opts ...Option) (*Server, error) {
	if r == nil {
		return nil, errors.New("nbd: no export")
	}
	if size < 0 {
		return nil, fmt.Errorf("nbd: export size %d is negative", size)
	}
	o := options{
		handshakeTimeout: DefaultHandshakeTimeout,
		shutdownGrace:    DefaultShutdownGrace,
		inFlight:         DefaultInFlightRequests,
		inFlightBytes:    DefaultInFlightBytes,
		preferredBlock:   DefaultPreferredBlock,
	}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case len(o.name) > maxString || len(o.description) > maxString:
		return nil, fmt.Errorf("nbd: export name or description longer than %d bytes", maxString)
	case o.handshakeTimeout <= 0 || o.shutdownGrace < 0 || o.writeTimeout < 0:
		return nil, errors.New("nbd: timeouts must not be negative, and the handshake needs one")
	case o.inFlight < 1:
		return nil, fmt.Errorf("nbd: %d requests in flight: at least 1 is needed", o.inFlight)
	case o.preferredBlock < 512 || o.preferredBlock > MaxRequest || o.preferredBlock&(o.preferredBlock-1) != 0:
		return nil, fmt.Errorf("nbd: preferred block size %d is not a power of two from 512 to %d", o.preferredBlock, MaxRequest)
	}
	o.inFlightBytes = max(o.inFlightBytes, MaxRequest)
	return &Server{r: r, size: size, o: o}, nil
}

// Stats are the counts of a [Server] since it was made.
type Stats struct {
	// Connections is how many connections were accepted, Active how many
	// are open now.
	Connections int64 `json:"connections"`
	Active      int64 `json:"active-connections"`
	// Requests counts the requests of the transmission phase, of any kind.
	Requests int64 `json:"requests"`
	// BytesRead is how many bytes of the export were sent in replies.
	BytesRead int64 `json:"bytes-read"`
	// ReadErrors counts the reads and block status requests of the export
	// that failed (answered NBD_EIO).
	ReadErrors int64 `json:"read-errors"`
	// Rejected counts the requests refused: reads out of bounds, writes,
	// unknown commands (NBD_EINVAL or NBD_EPERM).
	Rejected int64 `json:"rejected-requests"`
	// BlockStatus counts the NBD_CMD_BLOCK_STATUS requests answered.
	BlockStatus int64 `json:"block-status-requests"`
}

// Stats returns the server's counts so far.
func (s *Server) Stats() Stats {
	return Stats{
		Connections: s.connections.Load(),
		Active:      s.active.Load(),
		Requests:    s.requests.Load(),
		BytesRead:   s.bytesRead.Load(),
		ReadErrors:  s.readErrors.Load(),
		Rejected:    s.rejected.Load(),
		BlockStatus: s.blockStatus.Load(),
	}
}

// Serve accepts connections on ln and serves each in its own goroutine
// until ctx ends. Then it closes ln, stops reading requests, lets the
// replies in progress finish (for at most [WithShutdownGrace]), closes
// every connection and returns nil once all its goroutines are done. An
// error of ln other than a temporary one ends Serve the same way and is
// returned. ln is closed when Serve returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		ln.Close()
		wg.Wait()
	}()
	defer panics.Recover(&err, ErrInternal, func() string { return "accepting connections on " + ln.Addr().String() })
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !temporary(err) {
				return fmt.Errorf("nbd: accepting connections on %s: %w", ln.Addr(), err)
			}
			// Out of file descriptors, say: wait for connections to end, as
			// net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		id := s.connections.Add(1)
		s.active.Add(1)
		wg.Add(1)
		go s.serveConn(ctx, c, id, wg.Done)
	}
}

// temporary reports whether an Accept error may go away by itself.
func temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// report hands an error to the OnError function, if any.
func (s *Server) report(err error) {
	if err != nil && s.o.onError != nil {
		s.o.onError(err)
	}
}

// getBuf returns a buffer of n bytes (0 < n <= MaxRequest) from the pool
// of its power-of-two size class; putBuf gives it back.
func (s *Server) getBuf(n int) []byte {
	class := bits.Len(uint(n - 1))
	if b, ok := s.pools[class].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<class)
}

func (s *Server) putBuf(b []byte) {
	class := bits.Len(uint(cap(b) - 1))
	if cap(b) != 1<<class {
		return
	}
	s.pools[class].Put(&b)
}
