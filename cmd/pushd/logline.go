package main

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"time"
)

// lineLogger turns netpoll's line-oriented log output into rate-limited
// slog warnings: a client can make netpoll log (accept errors, resets), so
// its lines must not flood the log.
type lineLogger struct {
	log   *slog.Logger
	limit *rateLimit
}

func (l *lineLogger) Write(p []byte) (int, error) {
	if l.limit.allow() {
		l.log.Warn("netpoll", "line", string(bytes.TrimSpace(p)))
	}
	return len(p), nil
}

// rateLimit allows n events per period and counts the rest.
type rateLimit struct {
	mu      sync.Mutex
	n       int
	period  time.Duration
	start   time.Time
	used    int
	dropped int
}

func newRateLimit(n int, period time.Duration) *rateLimit {
	return &rateLimit{n: n, period: period}
}

func (r *rateLimit) allow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.start) >= r.period {
		r.start, r.used = now, 0
	}
	if r.used < r.n {
		r.used++
		return true
	}
	r.dropped++
	return false
}

// logBurst is how many lines one log message may print per second.
const logBurst = 20

// rateLimitedHandler is the process's slog.Handler wrapper: each message
// (the constant text of a log call) may print at most n lines per period;
// the next line of that message after a suppressed stretch is preceded by
// a "log lines suppressed" warning with the count. It bounds what clients
// can make pushd log (nats' RateLimitWarnf), without touching operators'
// one-off lines.
type rateLimitedHandler struct {
	inner  slog.Handler
	limits *logLimits // shared by the WithAttrs/WithGroup children
}

// logLimits holds one window per message.
type logLimits struct {
	mu      sync.Mutex
	n       int
	period  time.Duration
	windows map[string]*logWindow
}

type logWindow struct {
	start   time.Time
	used    int
	dropped int
}

// maxLogKeys bounds the windows kept (messages are constants in the code,
// so this is never reached in practice).
const maxLogKeys = 1024

func newRateLimitedHandler(inner slog.Handler, n int, period time.Duration) *rateLimitedHandler {
	return &rateLimitedHandler{inner: inner, limits: &logLimits{n: n, period: period, windows: map[string]*logWindow{}}}
}

// allow reports whether a line of msg at now may print, and how many lines
// of it were suppressed since the last one printed.
func (l *logLimits) allow(msg string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.windows[msg]
	if w == nil {
		if len(l.windows) >= maxLogKeys {
			clear(l.windows)
		}
		w = &logWindow{start: now}
		l.windows[msg] = w
	}
	if now.Sub(w.start) >= l.period {
		w.start, w.used = now, 0
	}
	if w.used >= l.n {
		w.dropped++
		return false, 0
	}
	w.used++
	suppressed, w.dropped = w.dropped, 0
	return true, suppressed
}

func (h *rateLimitedHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *rateLimitedHandler) Handle(ctx context.Context, r slog.Record) error {
	ok, suppressed := h.limits.allow(r.Message, r.Time)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		s := slog.NewRecord(r.Time, slog.LevelWarn, "log lines suppressed", 0)
		s.AddAttrs(slog.String("message", r.Message), slog.Int("count", suppressed))
		if err := h.inner.Handle(ctx, s); err != nil {
			return err
		}
	}
	return h.inner.Handle(ctx, r)
}

func (h *rateLimitedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &rateLimitedHandler{inner: h.inner.WithAttrs(as), limits: h.limits}
}

func (h *rateLimitedHandler) WithGroup(name string) slog.Handler {
	return &rateLimitedHandler{inner: h.inner.WithGroup(name), limits: h.limits}
}
