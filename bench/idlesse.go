package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// idleSSEFlags configure the idlesse scenario.
type idleSSEFlags struct {
	idleFlags
	maxExtra float64
}

// idleSSEScenario measures what an idle SSE stream costs next to an idle
// WebSocket, both subscribed to one channel, in the same run and the same
// binary (issue 20: SSE ≤ ws + 512 B of user space, no goroutine).
func idleSSEScenario() scenario {
	return scenario{
		name: "idlesse",
		about: "Opens idle connections subscribed to one channel, in plateaus (default 2,000 then 10,000), to\n" +
			"pushd in pushd.v1 mode, twice: WebSocket upgrades of /ws?ch=idle, then SSE streams of\n" +
			"/sse?ch=idle (plain GET, 200 text/event-stream), each against a fresh pushd process. Reports\n" +
			"the RSS slope (user-space bytes per idle connection) of both and their difference.\n" +
			"Invariants: SSE bytes/conn <= WebSocket bytes/conn + -max-extra; goroutines flat (<= first +\n" +
			"-max-growth, <= 64 + loops + workers) for both; every connection opens.",
		timeout: 5 * time.Minute,
		setup: func(fs *flag.FlagSet) func(context.Context, *harness) (*report, error) {
			f := &idleSSEFlags{}
			fs.StringVar(&f.plateaus, "plateaus", "2000,10000", "connection counts to measure at (ascending)")
			fs.StringVar(&f.sources, "sources", "127.0.1.0/24", "client source addresses (list/CIDRs)")
			fs.IntVar(&f.concurrency, "concurrency", 64, "concurrent dials+handshakes")
			fs.DurationVar(&f.settleTimeout, "settle-timeout", 60*time.Second, "wait this long for /stats conns to reach a plateau")
			fs.Float64Var(&f.maxExtra, "max-extra", 512, "max user-space bytes an idle SSE stream may cost over an idle WebSocket")
			fs.IntVar(&f.maxGrowth, "max-growth", 16, "max goroutine growth between first and last plateau")
			fs.DurationVar(&f.pingInterval, "ping-interval", 10*time.Minute, "pushd -ping-interval (heartbeats; idle clients never read)")
			fs.IntVar(&f.loops, "loops", 2, "pushd -loops (event loops); part of the goroutine bound")
			fs.IntVar(&f.workers, "workers", 64, "pushd -workers (pool size); part of the goroutine bound")
			fs.StringVar(&f.pushdArgs, "pushd-args", "", "extra pushd flags, space-separated")
			return func(ctx context.Context, h *harness) (*report, error) { return runIdleSSE(ctx, h, f) }
		},
	}
}

func runIdleSSE(ctx context.Context, h *harness, f *idleSSEFlags) (*report, error) {
	counts, err := parseCounts(f.plateaus)
	if err != nil {
		return nil, err
	}
	rep := &report{}
	nsrc, err := prepareClients(f.sources, counts[len(counts)-1], rep)
	if err != nil {
		return nil, err
	}
	rep.notef("pushd (pushd.v1 mode, memory broker) -ping-interval %v -loops %d -workers %d; %d source addresses (%s)",
		f.pingInterval, f.loops, f.workers, nsrc, f.sources)
	argv := append([]string{h.pushdBin, "-ping-interval", f.pingInterval.String(),
		"-loops", itoa(f.loops), "-workers", itoa(f.workers)}, strings.Fields(f.pushdArgs)...)
	var results []idleResult
	for _, v := range []struct {
		name, path string
		sse        bool
	}{{"pushd-ws", "/ws?ch=idle", false}, {"pushd-sse", "/sse?ch=idle", true}} {
		fl := f.idleFlags
		fl.path, fl.sse = v.path, v.sse
		fl.maxBytes, fl.maxBytesLean = 1<<30, 1<<30 // judged relative to each other below
		res, err := measureIdle(ctx, h, serverSpec{name: v.name, argv: argv}, &fl, counts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		checkIdle(rep, *res, &fl)
		results = append(results, *res)
	}
	rep.Results = results
	rep.text = idleText(results, counts)
	ws, sse := results[0].BytesPerConn, results[1].BytesPerConn
	rep.notef("idle SSE stream − idle WebSocket = %+.0f bytes per connection (same run, same binary); sse/ws = %.3f", sse-ws, sse/ws)
	if sse > ws+f.maxExtra {
		rep.failf("an idle SSE stream costs %.0f B, more than the WebSocket's %.0f B + %.0f", sse, ws, f.maxExtra)
	}
	return rep, nil
}

// sseOpen sends GET path and reads the response head of an SSE stream:
// 200 with Content-Type text/event-stream. The body (retry:, the subok
// event) is left in the socket: an idle client never reads.
func sseOpen(c net.Conn, host, path string, timeout time.Duration) (*bufio.Reader, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		return nil, fmt.Errorf("write request: %w", err)
	}
	br := bufio.NewReaderSize(c, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: status %d", ErrStatus, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return nil, fmt.Errorf("%w: content type %q", ErrStatus, ct)
	}
	return br, nil
}
