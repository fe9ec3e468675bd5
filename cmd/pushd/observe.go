package main

import (
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushd/pushd/poller"
)

// observedHandler wraps the connection handler (pushd.v1, with the demo's
// files, or echo) for two things the poller cannot see: the time the
// handler spends deciding and opening a connection (the handshake
// histogram), and which connections asked for format=raw (the drain sends
// them no reconnect hint). Message, the hot path, is a plain forward.
// The optional capabilities (poller.Drainer, poller.HTTPResponder) are
// offered exactly when the wrapped handler has them (the poller detects
// them by type assertion), so wrapping changes no behaviour.
type observedHandler struct {
	inner   poller.Handler
	upgrade prometheus.Observer
	open    prometheus.Observer
	raw     *rawConns // nil: not tracked (-echo)
}

// The wrapper's shapes, one per set of optional capabilities.
type (
	observedDrainer   struct{ *observedHandler }
	observedResponder struct{ *observedHandler }
	observedBoth      struct{ *observedHandler }
)

var (
	_ poller.Drainer       = observedDrainer{}
	_ poller.HTTPResponder = observedResponder{}
	_ poller.Drainer       = observedBoth{}
	_ poller.HTTPResponder = observedBoth{}
)

// newObservedHandler wraps inner, keeping its optional capabilities.
func newObservedHandler(inner poller.Handler, m *metrics, raw *rawConns) poller.Handler {
	o := &observedHandler{
		inner:   inner,
		upgrade: m.handshake.WithLabelValues("upgrade"),
		open:    m.handshake.WithLabelValues("open"),
		raw:     raw,
	}
	_, drainer := inner.(poller.Drainer)
	_, responder := inner.(poller.HTTPResponder)
	switch {
	case drainer && responder:
		return observedBoth{o}
	case drainer:
		return observedDrainer{o}
	case responder:
		return observedResponder{o}
	}
	return o
}

func (o *observedHandler) Upgrade(c *poller.Conn, r *poller.Request) (string, error) {
	start := time.Now()
	proto, err := o.inner.Upgrade(c, r)
	o.upgrade.Observe(time.Since(start).Seconds())
	if err == nil && o.raw != nil && wantsRaw(r.URI) {
		o.raw.add(c)
	}
	return proto, err
}

func (o *observedHandler) Open(c *poller.Conn) {
	start := time.Now()
	o.inner.Open(c)
	o.open.Observe(time.Since(start).Seconds())
}

func (o *observedHandler) Message(c *poller.Conn, op ws.OpCode, data []byte) {
	o.inner.Message(c, op, data)
}

func (o *observedHandler) Close(c *poller.Conn, code ws.StatusCode) {
	o.inner.Close(c, code)
	if o.raw != nil {
		o.raw.remove(c)
	}
}

func (o observedDrainer) Drained(c *poller.Conn) { o.inner.(poller.Drainer).Drained(c) }

func (o observedResponder) Respond(r *poller.Request) (int, string, []byte, bool) {
	return o.inner.(poller.HTTPResponder).Respond(r)
}

func (o observedBoth) Drained(c *poller.Conn) { o.inner.(poller.Drainer).Drained(c) }

func (o observedBoth) Respond(r *poller.Request) (int, string, []byte, bool) {
	return o.inner.(poller.HTTPResponder).Respond(r)
}

// wantsRaw reports whether an upgrade URI asks for format=raw, read the
// way the protocol reads it (the query's first format value).
func wantsRaw(uri string) bool {
	_, q, ok := strings.Cut(uri, "?")
	if !ok || !strings.Contains(q, "format=") {
		return false
	}
	v, err := url.ParseQuery(q)
	return err == nil && v.Get("format") == "raw"
}

// rawConns is the set of format=raw connections. A connection enters it
// when its upgrade is accepted and leaves when it closes; one whose
// upgrade was accepted but that never opened (it lost a race with its
// handshake timeout) gets no Close, so add sweeps such entries once the
// set has doubled since the last sweep: amortised O(1), bounded memory.
type rawConns struct {
	mu      sync.Mutex
	m       map[*poller.Conn]time.Time
	sweepAt int
}

// rawSweepAge is how long an entry must have existed before a sweep may
// drop it for not being open: far beyond any handshake.
const rawSweepAge = time.Minute

func newRawConns() *rawConns {
	return &rawConns{m: map[*poller.Conn]time.Time{}, sweepAt: 1024}
}

func (r *rawConns) add(c *poller.Conn) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[c] = now
	if len(r.m) >= r.sweepAt {
		for k, t := range r.m {
			if now.Sub(t) > rawSweepAge && !k.Open() {
				delete(r.m, k)
			}
		}
		r.sweepAt = 2*len(r.m) + 1024
	}
}

func (r *rawConns) remove(c *poller.Conn) {
	r.mu.Lock()
	delete(r.m, c)
	r.mu.Unlock()
}

func (r *rawConns) has(c *poller.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.m[c]
	return ok
}
