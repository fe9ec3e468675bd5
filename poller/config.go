package poller

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"time"
)

// Config holds every limit and timeout of a Server. The zero value of a
// field selects its default (see the Default* constants); Validate reports
// every invalid field at once.
type Config struct {
	// Backend selects the event loop: BackendNetpoll (cloudwego/netpoll)
	// or BackendLean (pushd's own epoll loops); "" selects DefaultBackend.
	Backend string
	// Loops is the number of lean event loops (zero: DefaultLeanLoops).
	// The netpoll backend's loops are set process-wide by cmd/pushd.
	Loops int
	// Runner runs a lean loop's hand-off to a worker: an upgrade request
	// or a data message for the Handler. It must never drop a task (the
	// connection's read side would stay owned and the connection would
	// stall). nil: a new goroutine per task.
	Runner func(task func())
	// MaxFrameSize bounds the payload of one inbound frame (close 1009 above).
	MaxFrameSize int64
	// MaxMessageSize bounds one assembled inbound message (close 1009 above).
	// A compressed message (permessage-deflate) is bounded twice: on the
	// wire, and after inflating, where the limit is enforced while
	// inflating (a decompression bomb never grows a buffer past it).
	MaxMessageSize int64
	// Deflate accepts permessage-deflate offers (RFC 7692) with no context
	// takeover in either direction (codec.NegotiateDeflate): the server
	// can then share one compressed frame between every subscriber of a
	// broadcast, and neither side keeps an LZ77 window between messages.
	// Inbound compressed messages are inflated on a worker with a pooled
	// inflater; an idle connection holds no flate state. Conn.Deflate
	// reports the outcome per connection.
	Deflate bool
	// MaxHeaderBytes bounds the HTTP upgrade request (431 above).
	MaxHeaderBytes int
	// MaxPendingBytes bounds the bytes queued for one connection; a Send
	// beyond it fails with ErrQueueFull and the caller applies its
	// slow-consumer policy. A frame is always accepted into an empty queue.
	MaxPendingBytes int
	// MaxConns caps upgraded plus handshaking connections; above it new TCP
	// connections get a 503 and are closed. Zero derives it from
	// RLIMIT_NOFILE minus FDHeadroom.
	MaxConns int64
	// MaxConnsPerIP caps the connections (handshaking or open) from one
	// source address (IPv6: one /64); above it new TCP connections get a
	// 503 with Retry-After in Accept. Zero: no cap.
	MaxConnsPerIP int
	// ConnectRate limits new connections per second from one source
	// address (token bucket ConnectBurst deep); above it a 503 with the
	// Retry-After of the next token. Zero: no limit.
	ConnectRate float64
	// ConnectBurst is the connect bucket's depth (zero: ConnectRate
	// rounded up, at least 1).
	ConnectBurst int
	// HandshakeTimeout closes TCP connections that have not completed the
	// upgrade in time.
	HandshakeTimeout time.Duration
	// PingInterval is how long a connection may stay silent before the
	// server pings it.
	PingInterval time.Duration
	// PongTimeout is how long after the ping a still-silent connection is
	// closed.
	PongTimeout time.Duration
	// CloseTimeout bounds the wait for the peer after a close frame was
	// sent, before TCP is closed.
	CloseTimeout time.Duration
	// WriteTimeout bounds how long a connection may keep the kernel's send
	// buffer full before it is closed as a slow consumer.
	WriteTimeout time.Duration
	// Tick is the timing wheel resolution.
	Tick time.Duration
	// ReusePort sets SO_REUSEPORT on the listener so several processes can
	// share one port.
	ReusePort bool
	// Backlog is the listen(2) backlog.
	Backlog int
	// TLS, when set, is the configuration of the wss listener
	// (Server.ListenTLS; lean backend only). The Server clones it once
	// and sets DynamicRecordSizingDisabled (one record per flush) and
	// RenegotiateNever; certificates may come from GetCertificate, so a
	// reload needs no restart. Session tickets, ALPN and MinVersion are
	// the caller's.
	TLS *tls.Config
	// TLSCPU bounds the TLS handshakes computing at once (each waits
	// for the peer without holding its token). Zero: GOMAXPROCS/2, at
	// least 1.
	TLSCPU int
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger

	// tlsCool overrides tlsCoolTime (tests).
	tlsCool time.Duration
}

// Event loop backends (Config.Backend).
const (
	BackendNetpoll = "netpoll"
	BackendLean    = "lean"
	// DefaultBackend is lean: measured in one run (poller/doc.go), it
	// holds an idle subscribed connection for ~0.5 KiB of user space
	// against ~3.9 KiB on netpoll, at the same fan-out CPU per delivery.
	DefaultBackend = BackendLean
)

// Defaults used for zero Config fields.
const (
	DefaultMaxFrameSize     = 1 << 20
	DefaultMaxMessageSize   = 1 << 20
	DefaultMaxHeaderBytes   = 8 << 10
	DefaultMaxPendingBytes  = 1 << 20
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultPingInterval     = 25 * time.Second
	DefaultPongTimeout      = 10 * time.Second
	DefaultCloseTimeout     = 2 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultTick             = 50 * time.Millisecond
	DefaultBacklog          = 4096
	// FDHeadroom is the number of file descriptors MaxConns leaves for the
	// listeners, the admin server, Redis and logs when derived from
	// RLIMIT_NOFILE.
	FDHeadroom = 128
)

func (c *Config) setDefaults() {
	if c.Backend == "" {
		c.Backend = DefaultBackend
	}
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxPendingBytes == 0 {
		c.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.TLSCPU == 0 {
		c.TLSCPU = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if c.Backlog == 0 {
		c.Backlog = DefaultBacklog
	}
}

// Validate reports every invalid field of c at once.
func (c Config) Validate() error {
	var errs []error
	switch c.Backend {
	case "", BackendNetpoll, BackendLean:
	default:
		errs = append(errs, fmt.Errorf("Backend must be %q or %q (got %q)", BackendNetpoll, BackendLean, c.Backend))
	}
	neg := func(name string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (got %d)", name, v))
		}
	}
	neg("MaxFrameSize", c.MaxFrameSize)
	neg("MaxMessageSize", c.MaxMessageSize)
	neg("MaxHeaderBytes", int64(c.MaxHeaderBytes))
	neg("MaxPendingBytes", int64(c.MaxPendingBytes))
	neg("MaxConns", c.MaxConns)
	neg("Backlog", int64(c.Backlog))
	neg("Loops", int64(c.Loops))
	neg("MaxConnsPerIP", int64(c.MaxConnsPerIP))
	neg("ConnectBurst", int64(c.ConnectBurst))
	neg("TLSCPU", int64(c.TLSCPU))
	if c.ConnectRate < 0 || math.IsNaN(c.ConnectRate) || math.IsInf(c.ConnectRate, 0) {
		errs = append(errs, fmt.Errorf("ConnectRate must be a finite non-negative number (got %v)", c.ConnectRate))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"HandshakeTimeout", c.HandshakeTimeout}, {"PingInterval", c.PingInterval},
		{"PongTimeout", c.PongTimeout}, {"CloseTimeout", c.CloseTimeout},
		{"WriteTimeout", c.WriteTimeout}, {"Tick", c.Tick},
	} {
		neg(d.name, int64(d.v))
	}
	if c.MaxFrameSize > 0 && c.MaxMessageSize > 0 && c.MaxFrameSize > c.MaxMessageSize {
		errs = append(errs, fmt.Errorf("MaxFrameSize (%d) must not exceed MaxMessageSize (%d)", c.MaxFrameSize, c.MaxMessageSize))
	}
	if c.MaxHeaderBytes != 0 && c.MaxHeaderBytes < 256 {
		errs = append(errs, fmt.Errorf("MaxHeaderBytes must be at least 256 (got %d)", c.MaxHeaderBytes))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
}
