package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The phases of one server's measurement in the peers scenario: idle
// plateaus, broadcast rounds, personal-channel latency.

// broadcastChannel is the channel every idle subscriber joins; the
// broadcast rounds publish to it.
const broadcastChannel = "bench"

// idle grows one channel's subscribers through the plateaus and measures
// RSS, goroutines and threads at each (idle.go's settle), and the ramp's
// connections per second.
func (p *peersRun) idle(ctx context.Context, srv *serverProc, def peerDef, res *peerResult) error {
	if err := srv.freeOSMemory(ctx); err != nil {
		return err
	}
	var err error
	if res.BaselineRSS, err = procRSS(srv.pid()); err != nil {
		return err
	}
	prev := 0
	var openMs int64
	for _, n := range p.counts {
		cmd := clientCmd{Cmd: "open", Total: n - prev, Add: prev > 0, Target: srv.wsAddr,
			Path: "/ws?ch=" + broadcastChannel + "&format=raw", Hello: def.hello}
		if err := p.fr.client.send(cmd); err != nil {
			return err
		}
		ev, err := p.fr.client.expect(ctx, 5*time.Minute, "opened")
		if err != nil {
			return err
		}
		if ev.Open != n {
			return fmt.Errorf("client holds %d connections, want %d (errors %v)", ev.Open, n, ev.Errors)
		}
		openMs += ev.Millis
		pl, err := settle(ctx, srv, n, 60*time.Second, 0)
		if err != nil {
			return fmt.Errorf("%w\n%s", err, srv.tail(10))
		}
		pl.OpenSecs = float64(ev.Millis) / 1000
		if ev.Millis > 0 {
			pl.ConnsPerS = float64(n-prev) / pl.OpenSecs
		}
		p.h.logf("%s: %d subscribers, RSS %s MiB, goroutines %d, %.0f conns/s", def.name, n, mib(pl.RSSBytes), pl.Goroutines, pl.ConnsPerS)
		res.Plateaus = append(res.Plateaus, pl)
		prev = n
	}
	first, last := res.Plateaus[0], res.Plateaus[len(res.Plateaus)-1]
	res.BytesPerConn = (float64(last.RSSBytes) - float64(first.RSSBytes)) / float64(last.Conns-first.Conns)
	if openMs > 0 {
		res.ConnsPerSec = float64(last.Conns) / (float64(openMs) / 1000)
	}
	if def.kind != "node" {
		res.Goroutines = last.Goroutines
	}
	if res.Threads, err = procThreads(srv.pid()); err != nil {
		return err
	}
	if p.profiling(def) {
		top, err := p.h.profileTop(ctx, srv, "/debug/pprof/heap", p.f.date+"-"+def.name+"-idle-heap.pb.gz", 20)
		p.keepProfile(res, "heap", fmt.Sprintf("heap (inuse_space) at %d idle subscribers", last.Conns), top, err)
		g, err := goroutineSummary(ctx, srv)
		p.keepProfile(res, "goroutines", fmt.Sprintf("goroutines at %d idle subscribers (count, outermost frame)", last.Conns), g, err)
	}
	return nil
}

// broadcast publishes single messages to the top plateau's subscribers:
// one capture round (the frame every subscriber must then receive byte for
// byte), then -repeat measured rounds.
func (p *peersRun) broadcast(ctx context.Context, srv *serverProc, def peerDef, res *peerResult) error {
	fr := p.fr
	raw := append([]byte{0x81, byte(len(p.payload))}, p.payload...)
	fr.frame = raw
	defer func() { fr.frame = raw }()
	if def.kind == "pushd" {
		if err := fr.waitSubscribed(ctx, srv, false); err != nil {
			return err
		}
	}
	round, _, err := fr.round(ctx, srv, false, 1, true)
	if err != nil {
		return fmt.Errorf("capture round: %w", err)
	}
	if !bytes.Equal(round.Captured, raw) {
		// A protocol wraps the payload (centrifuge's push); the frame must
		// still be one text frame carrying it, and the same for everyone.
		if def.hello == "" || len(round.Captured) < 2 || round.Captured[0] != 0x81 || !bytes.Contains(round.Captured, p.payload) {
			return fmt.Errorf("delivered % x, want the frame % x", round.Captured, raw)
		}
		fr.frame = round.Captured
	}
	res.Frame = fr.frame
	var cpu int64
	for i := range p.f.repeat {
		_, s, err := fr.round(ctx, srv, false, 1, false)
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		res.Broadcast = append(res.Broadcast, s)
		cpu += s.ServerCPUNs
		p.h.logf("%s: broadcast round %d: last %s ms, first %s ms, server CPU %s ms", def.name, i+1, ms(s.Ns), ms(s.FirstNs), ms(s.ServerCPUNs))
	}
	top := p.counts[len(p.counts)-1]
	res.Deliveries = fanoutSummary(res.Broadcast, 1, top).DeliveriesSec
	res.CPUPerMillion = float64(cpu) / 1e9 / float64(len(res.Broadcast)*top) * 1e6
	if p.profiling(def) {
		rounds, prof, err := fr.profileRounds(ctx, srv, p.f.date+"-"+def.name+"-broadcast-cpu.pb.gz")
		p.keepProfile(res, "broadcast", fmt.Sprintf("CPU over %d back-to-back broadcasts to %d subscribers", rounds, top), prof, err)
	}
	return p.closeAll(ctx, srv, def)
}

// closeAll closes the client's connections and waits until the server
// counts none.
func (p *peersRun) closeAll(ctx context.Context, srv *serverProc, def peerDef) error {
	if err := p.fr.client.send(clientCmd{Cmd: "close"}); err != nil {
		return err
	}
	if _, err := p.fr.client.expect(ctx, time.Minute, "closed"); err != nil {
		return err
	}
	return p.waitCount(ctx, srv, def, 0, 60*time.Second)
}

// latency opens -lat-conns connections, connection i subscribed to its
// personal channel p<i>, and publishes -lat-rate messages per second round
// robin over those channels for -lat-duration; the client records
// publish→receive latency of each.
func (p *peersRun) latency(ctx context.Context, srv *serverProc, def peerDef, res *peerResult) error {
	f := p.f
	open := clientCmd{Cmd: "open", Total: f.latConns, Target: srv.wsAddr, Path: "/ws?ch=p{i}&format=raw", Hello: def.hello}
	if err := p.fr.client.send(open); err != nil {
		return err
	}
	ev, err := p.fr.client.expect(ctx, 2*time.Minute, "opened")
	if err != nil {
		return err
	}
	if ev.Open != f.latConns {
		return fmt.Errorf("opened %d of %d connections: %v", ev.Open, f.latConns, ev.Errors)
	}
	if err := p.waitCount(ctx, srv, def, f.latConns, 60*time.Second); err != nil {
		return err
	}
	total := int(float64(f.latRate) * f.latDuration.Seconds())
	res.LatExpected = total
	if err := p.fr.client.send(clientCmd{Cmd: "collect", Total: total, Ms: (f.latDuration + 10*time.Second).Milliseconds()}); err != nil {
		return err
	}
	if _, err := p.fr.client.expect(ctx, 30*time.Second, "collecting"); err != nil {
		return err
	}
	p.h.logf("%s: publishing %d messages at %d/s over %d personal channels", def.name, total, f.latRate, f.latConns)
	pubErr := p.publishPersonal(ctx, srv, total)
	ev, err = p.fr.client.expect(ctx, f.latDuration+time.Minute, "collected")
	if err != nil {
		return err
	}
	res.Latency = ev.Latency
	l := ev.Latency
	p.h.logf("%s: latency p50 %.2f ms, p99 %.2f ms, %d of %d received", def.name, float64(l.P50Us)/1000, float64(l.P99Us)/1000, l.Messages, total)
	switch {
	case pubErr != nil:
		return pubErr
	case l.Messages != int64(total) || l.Closed > 0:
		return fmt.Errorf("received %d of %d messages (%d connections closed, %d unreadable reads)", l.Messages, total, l.Closed, l.Garbled)
	}
	if p.profiling(def) {
		prof, err := p.profileLatency(ctx, srv, def)
		p.keepProfile(res, "latency", fmt.Sprintf("CPU over a second, profiled window of the same personal-channel load (%d/s)", f.latRate), prof, err)
	}
	return p.closeAll(ctx, srv, def)
}

// personalPublishers is the count of concurrent HTTP publishers of the
// latency phase: enough that one slow POST does not hold back the
// schedule.
const personalPublishers = 8

// publishPersonal publishes total messages, k-th at t0 + k/rate to channel
// p<k mod lat-conns>, each carrying its scheduled time as "@<ns>" (a JSON
// string). It returns the first publish error.
func (p *peersRun) publishPersonal(ctx context.Context, srv *serverProc, total int) error {
	type job struct {
		at int64
		ch int
	}
	jobs := make(chan job, 1024)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range personalPublishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				url := "http://" + srv.adminAddr + "/publish?ch=p" + itoa(j.ch)
				if _, err := p.fr.post(ctx, url, fmt.Appendf(nil, `"@%d"`, j.at)); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	clock := p.fr.clock
	t0 := clock.now() + int64(50*time.Millisecond)
	period := int64(time.Second) / int64(p.f.latRate)
	for k := 0; k < total && ctx.Err() == nil; k++ {
		at := t0 + int64(k)*period
		if wait := at - clock.now(); wait > 0 {
			time.Sleep(time.Duration(wait))
		}
		jobs <- job{at: at, ch: k % p.f.latConns}
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// waitCount waits until the server counts n subscribed connections (pushd:
// its subscriptions counter; the peers count subscribed connections as
// conns).
func (p *peersRun) waitCount(ctx context.Context, srv *serverProc, def peerDef, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var got int64
		if def.kind == "pushd" {
			st, err := p.fr.pushdStats(ctx, srv)
			if err != nil {
				return err
			}
			got = st["subscriptions"]
		} else {
			st, err := srv.stats(ctx)
			if err != nil {
				return err
			}
			got = st.Conns
		}
		if got == int64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s counts %d subscribers, want %d", ErrTimeout, srv.name, got, n)
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// procThreads returns the Threads: count of pid.
func procThreads(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("Threads: not in /proc/%d/status", pid)
}
