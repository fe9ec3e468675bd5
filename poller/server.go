package poller

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/pushd/pushd/codec"
)

// Close codes the poller itself sends beyond RFC 6455's.
const (
	// StatusSlowConsumer closes a connection that could not keep up with
	// its outbound queue (pushd.v1 protocol, DESIGN §3).
	StatusSlowConsumer ws.StatusCode = 4001
)

// Server accepts WebSocket connections on a netpoll event loop and hands
// their messages to a Handler. Create it with New, bind with Listen, then
// Run; stop it with Shutdown or by cancelling Run's context.
type Server struct {
	cfg      Config
	h        Handler
	log      *slog.Logger
	codecCfg codec.Config
	// zCodecCfg is codecCfg with RSV1 allowed, for connections that
	// negotiated permessage-deflate.
	zCodecCfg codec.Config
	// inflaters pools *codec.Decompressor (about 36 KiB each once used):
	// held only while one compressed message is inflated.
	inflaters sync.Pool
	// upgraders pools *upgrader, an upgrade's scratch (handshake.go).
	upgraders sync.Pool
	maxConns  int64
	adm       *admission // nil without per-IP limits

	wheel          *wheel
	handshakeTicks int64
	pingTicks      int64
	pongTicks      int64
	closeTicks     int64
	writeTicks     int64
	pingFrame      []byte

	ln      *listener
	tln     *listener     // wss (ListenTLS); nil without
	tlsCfg  *tls.Config   // Config.TLS with the loops' record settings
	tlsCPU  chan struct{} // handshake CPU tokens (Config.TLSCPU)
	tlsWG   sync.WaitGroup
	tlsBufs tlsBufs // crypto/tls.Conn's input buffers (tls_idle.go)
	// crypto/tls's record protection (tls_keys.go); tlsAEADMu guards the
	// part of tlsAEAD learnt from connections.
	tlsAEAD      tlsAEADLayout
	tlsAEADMu    sync.Mutex
	tlsCoolTicks int64
	loop         netpoll.EventLoop // netpoll backend
	lean         *leanBackend      // lean backend
	bufs         bufPools          // lean backend: hand-off copies and worker read buffers
	runTask      func(func())
	nextID       atomic.Uint64
	conns        atomic.Int64
	tlsConns     atomic.Int64 // of conns: wss
	draining     atomic.Bool
	// acceptStopped: StopAccepting closed the listener; Run keeps serving
	// the connections until Shutdown.
	acceptStopped atomic.Bool
	fds           fdTable
	stats         counters

	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex // guards loop and cancel (set by Run) and lean (set by Listen)
	cancel   context.CancelFunc
	done     chan struct{}
}

// New validates cfg and builds a Server. It does not touch the network.
func New(cfg Config, h Handler) (*Server, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: nil Handler", ErrConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s := &Server{
		cfg:  cfg,
		h:    h,
		log:  cfg.Logger,
		done: make(chan struct{}),
		codecCfg: codec.Config{
			Role:           codec.RoleServer,
			MaxFrameSize:   cfg.MaxFrameSize,
			MaxMessageSize: cfg.MaxMessageSize,
		},
		pingFrame: codec.CompileFrame(ws.OpPing, nil),
	}
	s.zCodecCfg = s.codecCfg
	s.zCodecCfg.AllowRSV1 = true
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.stats.closed = make(map[ws.StatusCode]uint64)
	s.wheel = newWheel(cfg.Tick, func(c *Conn, now int64) { c.onTimer(now) })
	s.handshakeTicks = s.wheel.ticks(cfg.HandshakeTimeout)
	s.pingTicks = s.wheel.ticks(cfg.PingInterval)
	s.pongTicks = s.wheel.ticks(cfg.PongTimeout)
	s.closeTicks = s.wheel.ticks(cfg.CloseTimeout)
	s.writeTicks = s.wheel.ticks(cfg.WriteTimeout)
	s.tlsCoolTicks = s.wheel.ticks(cmp.Or(cfg.tlsCool, tlsCoolTime))
	s.runTask = cfg.Runner
	if s.runTask == nil {
		s.runTask = func(f func()) { go f() }
	}
	s.adm = newAdmission(cfg)
	s.maxConns = cfg.MaxConns
	if cfg.TLS != nil {
		s.tlsCfg = tlsServerConfig(cfg.TLS)
		s.tlsCPU = make(chan struct{}, cfg.TLSCPU)
		s.tlsBufs = findTLSBufs()
		s.tlsAEAD = findTLSAEAD()
	}
	if s.maxConns == 0 {
		s.maxConns = DefaultMaxConns()
	}
	return s, nil
}

// DefaultMaxConns derives the connection cap from RLIMIT_NOFILE: the soft
// limit minus FDHeadroom (at least 1).
func DefaultMaxConns() int64 {
	soft, _, err := FileLimit()
	if err != nil || soft > 1<<40 {
		return 1 << 40
	}
	return max(int64(soft)-FDHeadroom, 1)
}

// MaxConns returns the effective connection cap.
func (s *Server) MaxConns() int64 { return s.maxConns }

// Listen binds the WebSocket listener. Call it once, before Run.
func (s *Server) Listen(addr string) (net.Addr, error) {
	if s.ln != nil {
		return nil, fmt.Errorf("poller: Listen called twice")
	}
	ln, err := listen(addr, s.cfg.ReusePort, s.cfg.Backlog)
	if err != nil {
		return nil, err
	}
	if s.cfg.Backend == BackendLean {
		// The loops' epoll sets exist from here on, so Attach works
		// before Run starts the loops.
		n := s.cfg.Loops
		if n == 0 {
			n = DefaultLeanLoops()
		}
		lb, err := newLean(s, n)
		if err != nil {
			_ = ln.Close()
			return nil, err
		}
		s.mu.Lock()
		s.lean = lb
		s.mu.Unlock()
	}
	ln.admit = func() bool { return !s.draining.Load() && s.conns.Load() < s.maxConns }
	ln.refuse = func(reason string) {
		s.stats.refused.Add(1)
		switch reason {
		case "per_ip":
			s.stats.refusedPerIP.Add(1)
		case "rate":
			s.stats.refusedRate.Add(1)
		}
	}
	if s.adm != nil {
		ln.admitFrom = s.adm.admit
	}
	s.ln = ln
	return ln.addr, nil
}

// Run serves connections until ctx is cancelled or Shutdown is called.
// When ctx ends, Run shuts down with a CloseTimeout-bounded grace period.
// It returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	if s.ln == nil {
		return fmt.Errorf("poller: Run before Listen")
	}
	if s.cfg.Backend == BackendLean {
		return s.runLean(ctx)
	}
	loop, err := netpoll.NewEventLoop(
		func(_ context.Context, nc netpoll.Connection) error {
			if c := s.fds.get(fdOf(nc)); c != nil {
				c.process()
			} else if fd := fdOf(nc); fd >= 0 {
				// Not ours (cannot happen): hang up, never Close from
				// inside a handler task (see Conn.hangup).
				_ = unix.Shutdown(fd, unix.SHUT_RDWR)
			}
			return nil
		},
		netpoll.WithOnPrepare(s.prepare),
		netpoll.WithWriteTimeout(s.cfg.WriteTimeout),
	)
	if err != nil {
		return fmt.Errorf("poller: event loop: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.loop, s.cancel = loop, cancel
	s.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.wheel.run(wctx)
	}()
	go func() {
		defer wg.Done()
		s.shutdownWhenDone(ctx, wctx)
	}()
	s.log.Info("listening", "kind", "ws", "addr", s.ln.addr.String(), "backend", BackendNetpoll)
	serveErr := loop.Serve(s.ln)
	if s.acceptStopped.Load() {
		// The listener was closed on purpose: keep the loops (and the
		// wheel) serving the existing connections until Shutdown.
		<-wctx.Done()
	}
	cancel()
	wg.Wait()
	close(s.done)
	if s.draining.Load() {
		return nil
	}
	return fmt.Errorf("poller: serve: %w", serveErr)
}

// runLean is Run on the lean backend.
func (s *Server) runLean(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	lb := s.lean
	s.cancel = cancel
	s.mu.Unlock()
	n := len(lb.loops)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.wheel.run(wctx)
	}()
	if err := lb.start(s.ln); err != nil {
		cancel()
		wg.Wait()
		lb.stop()
		return err
	}
	s.log.Info("listening", "kind", "ws", "addr", s.ln.addr.String(), "backend", BackendLean, "loops", n)
	s.shutdownWhenDone(ctx, wctx)
	cancel()
	wg.Wait()
	close(s.done)
	return nil
}

// shutdownWhenDone shuts the server down, with a CloseTimeout-bounded
// grace period, when ctx (Run's) ends first; it returns when either ends.
func (s *Server) shutdownWhenDone(ctx, stopped context.Context) {
	select {
	case <-ctx.Done():
		sctx, c := context.WithTimeout(context.Background(), s.cfg.CloseTimeout+time.Second)
		_ = s.Shutdown(sctx)
		c()
	case <-stopped.Done():
	}
}

// Shutdown stops accepting, closes every connection with 1001 (going
// away), waits for them to finish the closing handshake until ctx ends,
// then stops the event loop. It is idempotent and returns ctx.Err() when
// the deadline won.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.draining.Store(true)
		if s.ln != nil {
			_ = s.ln.Close()
		}
		if s.tln != nil {
			_ = s.tln.Close()
		}
		s.fds.each(func(c *Conn) bool { _ = c.Close(ws.StatusGoingAway, "server shutdown"); return true })
		s.stopErr = s.waitConns(ctx)
		if s.stopErr != nil {
			// Out of time: hang up whoever is left and let the loops
			// close them, so netpoll's own shutdown finds no connection
			// to Close (see Conn.hangup).
			s.fds.each(func(c *Conn) bool { c.hangup(); return true })
			wctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			_ = s.waitConns(wctx)
			cancel()
		}
		s.mu.Lock()
		loop, lb, cancel := s.loop, s.lean, s.cancel
		s.mu.Unlock()
		if loop != nil {
			if err := loop.Shutdown(ctx); err != nil && s.stopErr == nil {
				s.stopErr = err
			}
		}
		// Handshakes still running end with their sockets (shut down
		// above) or at their deadline.
		s.tlsWG.Wait()
		if lb != nil {
			lb.stop()
			s.closeLeft()
		}
		if cancel != nil {
			cancel()
		}
	})
	return s.stopErr
}

// Each calls fn for every registered connection (handshaking, open or
// closing) until fn returns false. It sees a snapshot-free, concurrent
// view: connections accepted or closed meanwhile may or may not be seen.
// A drain uses it to send every connection a reconnect hint and close it.
func (s *Server) Each(fn func(*Conn) bool) {
	s.fds.each(fn)
}

// StopAccepting closes the listening socket while every existing
// connection keeps being served: new clients get ECONNREFUSED (or, with
// SO_REUSEPORT, are routed by the kernel to the other processes on the
// port). Run keeps running until Shutdown or its context ends. Use it in
// a drain, after readiness has turned 503. It is idempotent.
func (s *Server) StopAccepting() {
	s.acceptStopped.Store(true)
	if s.ln != nil {
		_ = s.ln.Close()
	}
	if s.tln != nil {
		_ = s.tln.Close()
	}
}

// closeLeft closes, after the lean loops stopped, the connections that
// outlived the shutdown deadline and whose read side no worker owns.
func (s *Server) closeLeft() {
	s.fds.each(func(c *Conn) bool {
		if c.rd.CompareAndSwap(0, 1) {
			c.leanClosed()
		}
		return true
	})
}

// waitConns waits until no connection is left or ctx ends.
func (s *Server) waitConns(ctx context.Context) error {
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	for s.conns.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tk.C:
		}
	}
	return nil
}

// fdOf returns the descriptor of a netpoll connection (-1 if it has none).
func fdOf(nc netpoll.Connection) int {
	if f, ok := nc.(interface{ Fd() int }); ok {
		return f.Fd()
	}
	return -1
}

// prepare runs on netpoll's poller goroutine for every accepted socket,
// before it is registered for reads: it creates the Conn, arms the
// handshake timeout and hooks the close callback.
func (s *Server) prepare(nc netpoll.Connection) context.Context {
	c := s.newConn(nc, fdOf(nc))
	if s.adm != nil {
		// Counted by the listener's admitFrom; released in closed.
		if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
			c.src = s.adm.lookup(ta.AddrPort().Addr())
		}
	}
	s.register(c)
	return context.Background()
}

// newConn builds the Conn of an accepted or attached socket.
func (s *Server) newConn(nc netpoll.Connection, fd int) *Conn {
	c := &Conn{srv: s, nc: nc, fd: fd, id: s.nextID.Add(1)}
	now := s.wheel.now.Load()
	c.pingTick = now
	c.lastRead.Store(now)
	s.stats.accepted.Add(1)
	return c
}

// register enters c in the descriptor table, hooks the close callback and
// arms the handshake timeout. It reports false (and closes c) when the
// descriptor is out of the table's range.
func (s *Server) register(c *Conn) bool {
	if !s.fds.set(c.fd, c) {
		s.releaseSrc(c.src)
		s.stats.refused.Add(1)
		if c.nc != nil {
			_ = c.nc.Close()
		} else {
			_ = unix.Close(c.fd)
		}
		return false
	}
	s.conns.Add(1)
	if c.nc != nil {
		_ = c.nc.AddCloseCallback(func(netpoll.Connection) error {
			s.closed(c)
			return nil
		})
	}
	s.wheel.schedule(c, c.pingTick+s.handshakeTicks)
	return true
}

// closed runs once per connection, from netpoll's close callback, before
// netpoll closes the descriptor.
func (s *Server) closed(c *Conn) {
	prev := c.state.Swap(stateClosed)
	c.mu.Lock()
	c.closed = true
	clear(c.q)
	c.q = nil
	code := c.endCode
	c.mu.Unlock()
	s.wheel.cancel(c)
	s.fds.clear(c.fd, c)
	s.conns.Add(-1)
	if c.tls != nil {
		s.tlsConns.Add(-1)
	}
	s.releaseSrc(c.src)
	if prev == stateHandshake || !c.opened {
		return
	}
	if code == 0 {
		code = ws.StatusAbnormalClosure
	}
	s.stats.closedWith(code)
	s.h.Close(c, code)
}

// firstPingTicks spreads the first heartbeat of connections accepted in a
// burst across a quarter of the ping interval.
func (s *Server) firstPingTicks(id uint64) int64 {
	spread := max(s.pingTicks/4, 1)
	return s.pingTicks - spread + int64(id%uint64(spread))
}
