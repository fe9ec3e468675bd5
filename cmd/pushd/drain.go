package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/poller"
)

// The paced drain (SIGTERM or SIGINT; README "Signals and drain"),
// modelled on nats-server's lame-duck mode:
//
//  1. /readyz answers 503 at once, so load balancers stop sending clients;
//  2. after -drain-delay the listeners close (poller.StopAccepting): new
//     clients are refused, or routed by SO_REUSEPORT to the other
//     processes on the port, while established connections keep being
//     served;
//  3. the connections open at that moment are closed in a shuffled order,
//     spread evenly over -drain-duration: one ticker (never a timer per
//     connection) closes whatever is due at each tick. Each pushd.v1
//     (JSON) connection first gets {"op":"reconnect","after_ms":N}, N
//     uniform in [0, -reconnect-jitter], then a close frame with 1001
//     (going away), or 1012 (service restart) with -drain-restart;
//  4. the usual Shutdown, bounded by -shutdown-timeout, closes whatever
//     is left (connections that were still handshaking) with 1001 and
//     waits for the closing handshakes.
//
// A second SIGTERM or SIGINT during steps 2-3 skips the rest: step 4
// starts at once.
//
// A small server does not drag its drain out: connections are closed at
// least drainMinRate per second, so fewer than drainMinRate ×
// -drain-duration connections finish early. Reconnect storms only matter
// at thousands per second.
//
// format=raw connections get no hint: their frames are payloads and
// nothing else, so a hint would reach the application as a message. They
// get the close code alone. -echo connections get no hint either (they do
// not speak pushd.v1).

// drainTick is the pacing granularity: every tick closes the connections
// that became due since the last one.
const drainTick = 10 * time.Millisecond

// statusServiceRestart is close code 1012 (IANA WebSocket close code
// registry: service restart; the client may reconnect to the same place).
const statusServiceRestart ws.StatusCode = 1012

// drainMinRate is the lowest pace of the drain, in connections per second.
const drainMinRate = 100

// drainFlags registers the drain flags on fs.
func drainFlags(fs *flag.FlagSet, c *Config) {
	fs.DurationVar(&c.DrainDelay, "drain-delay", 0, "on SIGTERM/SIGINT: how long /readyz answers 503 before the listeners close (set it to what your load balancer needs to notice, e.g. 5s)")
	fs.DurationVar(&c.DrainDuration, "drain-duration", 10*time.Second, "on SIGTERM/SIGINT: spread the connection closes evenly over this long (0: all at once)")
	fs.BoolVar(&c.DrainRestart, "drain-restart", false, "drain with close code 1012 (service restart) instead of 1001 (going away)")
	fs.DurationVar(&c.ReconnectJitter, "reconnect-jitter", time.Second, "the drain's reconnect hint tells each client to wait a random after_ms in [0, this]")
}

// validateDrain checks the drain flags.
func (c *Config) validateDrain() []error {
	var errs []error
	for name, v := range map[string]time.Duration{"-drain-delay": c.DrainDelay, "-drain-duration": c.DrainDuration, "-reconnect-jitter": c.ReconnectJitter} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (got %v)", name, v))
		}
	}
	if c.ReconnectJitter > time.Hour {
		errs = append(errs, fmt.Errorf("-reconnect-jitter must be at most 1h (got %v)", c.ReconnectJitter))
	}
	return errs
}

// health is the process state /readyz and the metrics read.
type health struct {
	draining atomic.Bool
	hints    atomic.Uint64 // reconnect hints sent by the drain
	closes   atomic.Uint64 // connections closed by the drain
}

// drainer runs steps 1-3 of the drain.
type drainer struct {
	cfg    Config
	srv    *poller.Server
	front  *wssCert                                   // nil without -tls-listen
	hint   func(c *poller.Conn, afterMs int64) []byte // c's reconnect hint (nil: c takes none); nil with -echo
	health *health
	log    *slog.Logger
	now    func() time.Time
}

// errDrainSkipped reports that a second signal cut the drain short.
var errDrainSkipped = errors.New("drain skipped by a second signal")

// run drains until every connection open after the delay was closed, or
// until again delivers (a second signal): then it returns errDrainSkipped.
func (d *drainer) run(again <-chan os.Signal) error {
	d.health.draining.Store(true)
	code := ws.StatusGoingAway
	reason := "server shutting down"
	if d.cfg.DrainRestart {
		code, reason = statusServiceRestart, "server restarting"
	}
	d.log.Info("draining: /readyz answers 503", "drain_delay", d.cfg.DrainDelay.String(), "drain_duration", d.cfg.DrainDuration.String(), "close_code", int(code), "conns", d.srv.Stats().Conns)
	if d.cfg.DrainDelay > 0 {
		t := time.NewTimer(d.cfg.DrainDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-again:
			return errDrainSkipped
		}
	}
	d.srv.StopAccepting() // both listeners, ws and wss
	var conns []*poller.Conn
	d.srv.Each(func(c *poller.Conn) bool {
		if c.Open() {
			conns = append(conns, c)
		}
		return true
	})
	// Shuffled: no class of clients (the oldest, one source) is always
	// the last to be moved.
	rand.Shuffle(len(conns), func(i, j int) { conns[i], conns[j] = conns[j], conns[i] })
	d.log.Info("draining: listeners closed, closing connections", "conns", len(conns))
	step := drainStep(d.cfg.DrainDuration, len(conns))
	start := d.now()
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	done := 0
	for done < len(conns) {
		due := len(conns)
		if step > 0 {
			due = min(len(conns), int(d.now().Sub(start)/step)+1)
		}
		for ; done < due; done++ {
			d.close(conns[done], code, reason)
			conns[done] = nil
		}
		if done == len(conns) {
			break
		}
		select {
		case <-tick.C:
		case <-again:
			d.log.Info("second signal: skipping the rest of the drain", "left", len(conns)-done)
			return errDrainSkipped
		}
	}
	d.log.Info("draining: every connection closed", "conns", len(conns), "took", d.now().Sub(start).Round(time.Millisecond).String())
	return nil
}

// drainStep is the time between two closes: duration/n, but at most
// 1/drainMinRate.
func drainStep(duration time.Duration, n int) time.Duration {
	if duration <= 0 || n == 0 {
		return 0
	}
	return min(duration/time.Duration(n), time.Second/drainMinRate)
}

// close sends the reconnect hint (pushd.v1 JSON over WebSocket, SSE or
// NDJSON; not format=raw) and
// starts the closing handshake.
func (d *drainer) close(c *poller.Conn, code ws.StatusCode, reason string) {
	if !c.Open() {
		return // closed meanwhile
	}
	if d.hint != nil {
		if h := d.hint(c, d.jitterMs()); h != nil && c.Send(h) == nil {
			d.health.hints.Add(1)
		}
	}
	_ = c.Close(code, reason)
	d.health.closes.Add(1)
}

// jitterMs draws after_ms uniformly in [0, -reconnect-jitter].
func (d *drainer) jitterMs() int64 {
	return rand.Int64N(d.cfg.ReconnectJitter.Milliseconds() + 1)
}
