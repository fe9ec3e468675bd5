package main

import (
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushd/pushd/poller"
)

// observedHandler wraps the connection handler (pushd.v1, with the demo's
// files, or echo) for what the poller cannot see: the time the handler
// spends deciding and opening a connection (the handshake histogram). It
// keeps no per-connection state; Message, the hot path, is a plain
// forward.
// The optional capabilities (poller.Drainer, poller.HTTPResponder) are
// offered exactly when the wrapped handler has them (the poller detects
// them by type assertion), so wrapping changes no behaviour.
type observedHandler struct {
	inner   poller.Handler
	upgrade prometheus.Observer
	open    prometheus.Observer
}

// The wrapper's shapes, one per set of optional capabilities.
type (
	observedDrainer   struct{ *observedHandler }
	observedResponder struct{ *observedHandler }
	observedBoth      struct{ *observedHandler }
)

var (
	_ poller.Streamer      = (*observedHandler)(nil)
	_ poller.Drainer       = observedDrainer{}
	_ poller.HTTPResponder = observedResponder{}
	_ poller.Drainer       = observedBoth{}
	_ poller.HTTPResponder = observedBoth{}
)

// newObservedHandler wraps inner, keeping its optional capabilities.
func newObservedHandler(inner poller.Handler, m *metrics) poller.Handler {
	o := &observedHandler{
		inner:   inner,
		upgrade: m.handshake.WithLabelValues("upgrade"),
		open:    m.handshake.WithLabelValues("open"),
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
}

// Expiring forwards poller.Expirer. Every shape offers it: the wheel calls
// it only for a connection whose handler set an expiry hint, which only
// an Expirer does.
func (o *observedHandler) Expiring(c *poller.Conn) {
	if x, ok := o.inner.(poller.Expirer); ok {
		x.Expiring(c)
	}
}

// Stream and StreamEnd forward poller.Streamer. Every shape offers it:
// ok false (the inner handler is no Streamer, or not for this request) is
// what the poller does without one. A stream's decision counts in the
// handshake histogram's upgrade phase.
func (o *observedHandler) Stream(c *poller.Conn, r *poller.Request) (poller.StreamResponse, bool) {
	st, ok := o.inner.(poller.Streamer)
	if !ok {
		return poller.StreamResponse{}, false
	}
	start := time.Now()
	resp, ok := st.Stream(c, r)
	o.upgrade.Observe(time.Since(start).Seconds())
	return resp, ok
}

func (o *observedHandler) StreamEnd(c *poller.Conn, code ws.StatusCode, reason string) []byte {
	if st, ok := o.inner.(poller.Streamer); ok {
		return st.StreamEnd(c, code, reason)
	}
	return nil
}

func (o observedDrainer) Drained(c *poller.Conn) { o.inner.(poller.Drainer).Drained(c) }

func (o observedResponder) Respond(r *poller.Request) (int, string, []byte, bool) {
	return o.inner.(poller.HTTPResponder).Respond(r)
}

func (o observedBoth) Drained(c *poller.Conn) { o.inner.(poller.Drainer).Drained(c) }

func (o observedBoth) Respond(r *poller.Request) (int, string, []byte, bool) {
	return o.inner.(poller.HTTPResponder).Respond(r)
}
