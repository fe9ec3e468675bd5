package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/panjf2000/ants/v2"
	"golang.org/x/term"

	"github.com/pushd/pushd/poller"
)

// serve wires the process: logger, file limits, netpoll, the worker pool,
// the WebSocket server and the admin server. It returns after ctx is done
// and everything has stopped.
func serve(ctx context.Context, cfg Config, stderr io.Writer) error {
	log := newLogger(cfg, stderr)

	soft, hard, err := poller.RaiseFileLimit()
	if err != nil {
		log.Warn("cannot raise RLIMIT_NOFILE", "err", err)
		soft, hard, _ = poller.FileLimit()
	}

	// ants builds a package-level pool at init, with two housekeeping
	// goroutines; pushd never uses it (STYLE: no package-level pools), so
	// it is stopped here, in the one place allowed to touch process-wide
	// switches.
	ants.Release()
	pool, err := ants.NewPool(cfg.Workers,
		ants.WithNonblocking(true),
		ants.WithPanicHandler(func(v any) { log.Error("panic in connection handler", "panic", v) }),
	)
	if err != nil {
		return fmt.Errorf("worker pool: %w", err)
	}
	// Handler tasks (the lean loops' hand-offs, netpoll's OnRequest) run
	// on the worker pool. A runner must never drop a task (the connection
	// would keep its read side and stall), so overload falls back to a
	// plain goroutine. Handlers never run inline on a loop: one that
	// blocks (a Redis history read on subscribe) would stall the loop.
	runTask := func(f func()) {
		if err := pool.Submit(f); err != nil {
			go f()
		}
	}
	if cfg.Poller == poller.BackendNetpoll {
		// netpoll's switches are process-wide; this is the only place
		// that touches them.
		netpoll.LinkBufferCap = cfg.LinkNodeCap
		if err := netpoll.Configure(netpoll.Config{
			PollerNum:    cfg.Loops,
			BufferSize:   cfg.ReadBuffer,
			Runner:       func(_ context.Context, f func()) { runTask(f) },
			LoggerOutput: &lineLogger{log: log, limit: newRateLimit(5, time.Second)},
		}); err != nil {
			return fmt.Errorf("netpoll: %w", err)
		}
	}

	m := newMetrics()
	var (
		handler poller.Handler = poller.Echo{}
		app     *pushApp
		hint    func(*poller.Conn, int64) []byte // the drain's reconnect hint in c's framing (nil: none); nil with -echo
	)
	if !cfg.Echo {
		app, err = newPushApp(cfg, pool, m, log)
		if err != nil {
			return err
		}
		if handler, err = wrapDemo(app.handler, cfg); err != nil {
			return err
		}
		hint = app.handler.ReconnectHint
	}
	handler = newObservedHandler(handler, m)
	pcfg := cfg.pollerConfig(log)
	pcfg.Runner = runTask
	var front *wssCert // nil without -tls-listen
	if cfg.TLSListen != "" {
		if front, pcfg.TLS, err = newWSSCert(cfg); err != nil {
			return err
		}
	}
	srv, err := poller.New(pcfg, handler)
	if err != nil {
		return err
	}
	log.Info("rlimit", "nofile_soft", soft, "nofile_hard", hard, "max_conns", srv.MaxConns())
	if _, err := srv.Listen(cfg.Listen); err != nil {
		return err
	}
	if front != nil {
		addr, err := srv.ListenTLS(cfg.TLSListen)
		if err != nil {
			return fmt.Errorf("wss listen: %w", err)
		}
		log.Info("listening", "kind", "wss", "addr", addr.String())
	}
	hl := &health{}
	m.attach(srv, app, front, hl)
	adm, err := newAdmin(cfg, srv, app, front, soft, m, hl, log)
	if err != nil {
		return err
	}

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errc <- srv.Run(runCtx)
	}()
	go func() {
		defer wg.Done()
		errc <- adm.Run(runCtx)
	}()
	if app != nil {
		app.run(runCtx, &wg, errc)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wg.Add(1)
	go func() {
		defer wg.Done()
		reloadOnHUP(runCtx, hup, &cfg, app, front, log)
	}()

	var runErr error
	select {
	case <-ctx.Done():
		// The paced drain (drain.go); a second SIGTERM/SIGINT skips it.
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(again)
		d := &drainer{cfg: cfg, srv: srv, front: front, hint: hint, health: hl, log: log, now: time.Now}
		_ = d.run(again)
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	case runErr = <-errc:
		log.Error("server stopped", "err", runErr)
	}
	sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer scancel()
	// Connections first (their close hooks unsubscribe), then the hub and
	// the broker, then the admin server.
	shutErr := srv.Shutdown(sctx)
	if app != nil {
		shutErr = errors.Join(shutErr, app.shutdown(sctx))
	}
	shutErr = errors.Join(shutErr, adm.Shutdown(sctx))
	cancel()
	wg.Wait()
	if err := pool.ReleaseTimeout(time.Second); err != nil {
		log.Warn("worker pool did not stop in time", "err", err)
	}
	if runErr != nil {
		return runErr
	}
	if shutErr != nil {
		return fmt.Errorf("shutdown: %w", shutErr)
	}
	log.Info("stopped")
	return nil
}

// pollerConfig maps the flags onto the poller's Config.
func (c Config) pollerConfig(log *slog.Logger) poller.Config {
	return poller.Config{
		Backend:          c.Poller,
		Loops:            c.leanLoops(),
		MaxFrameSize:     c.MaxFrame,
		MaxMessageSize:   c.MaxMessage,
		Deflate:          len(c.deflatePatterns) > 0,
		MaxHeaderBytes:   c.MaxHeaderBytes,
		MaxPendingBytes:  c.MaxPending,
		MaxConns:         c.MaxConns,
		HandshakeTimeout: c.HandshakeTimeout,
		PingInterval:     c.PingInterval,
		PongTimeout:      c.PongTimeout,
		CloseTimeout:     c.CloseTimeout,
		WriteTimeout:     c.WriteTimeout,
		ReusePort:        c.ReusePort,
		MaxConnsPerIP:    c.MaxConnsPerIP,
		ConnectRate:      c.ConnectRate,
		ConnectBurst:     c.ConnectBurst,
		Logger:           log,
	}
}

// leanLoops is -loops for the lean backend (netpoll's loops are set
// process-wide through netpoll.Configure).
func (c Config) leanLoops() int {
	if c.Poller == poller.BackendLean {
		return c.Loops
	}
	return 0
}

// newLogger builds the process logger: JSON unless -log-format says text
// or (auto) stderr is a terminal.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	text := cfg.LogFormat == "text"
	if cfg.LogFormat == "auto" {
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			text = true
		}
	}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if text {
		h = slog.NewTextHandler(w, opts)
	}
	// Clients can make the poller and the protocol log (accept errors,
	// failed subscribes): every message is limited to logBurst lines per
	// second, and the suppressed count is logged afterwards.
	return slog.New(newRateLimitedHandler(h, logBurst, time.Second))
}

// reloadOnHUP re-reads the token keys and the wss certificate on every
// SIGHUP until ctx ends. A failed reload keeps what was loaded.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, cfg *Config, app *pushApp, front *wssCert, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		log.Info("SIGHUP: reloading keys and certificates")
		if app != nil && app.auth != nil {
			app.auth.reload(cfg, log)
		}
		if front != nil {
			if err := front.reload(); err != nil {
				log.Error("wss certificate reload failed; keeping the previous one", "err", err)
			} else {
				log.Info("wss certificate reloaded")
			}
		}
	}
}
