package main

import (
	"bytes"
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
