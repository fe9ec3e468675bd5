package main

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// TestReconnectHintHonoured: a {"op":"reconnect","after_ms":N} before the
// close makes the reconnect wait N ms (plus at most 10% jitter), not the
// backoff.
func TestReconnectHintHonoured(t *testing.T) {
	clock, err := newMonoClock()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &workerConfig{Total: 1, Seed: 3, MaxAttempts: 3, HandshakeTimeout: time.Second}
	l, err := newLoop(cfg, clock, 0, []uint32{0}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.stopAndClose()
	c := &l.conns[0]
	c.state = stOpen
	l.openNow.Store(1)
	l.message(c, []byte(`{"op":"reconnect","after_ms":1500}`), 0)
	if c.hintMs != 1500 {
		t.Fatalf("hint %d", c.hintMs)
	}
	now := clock.now()
	l.drop(0, "close_1012", now)
	if len(l.retries) != 1 {
		t.Fatalf("%d retries scheduled", len(l.retries))
	}
	if d := time.Duration(l.retries[0].at - now); d < 1500*time.Millisecond || d > 1650*time.Millisecond {
		t.Fatalf("reconnect after %v, want 1.5s..1.65s", d)
	}
	if l.stats.reconnects != 1 || l.stats.errors["close_1012"] != 1 || l.openNow.Load() != 0 {
		t.Fatalf("stats %+v open %d", l.stats, l.openNow.Load())
	}
}

// TestReconnectAfterGoingAway: two pushd nodes share one port
// (SO_REUSEPORT) and a real Redis; the first is stopped mid-run, closes its
// connections with 1001, and every one of them reconnects (to the other).
func TestReconnectAfterGoingAway(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Options{})
	bin := pushdtest.Build(t)
	redisURL := "redis://" + rs.Addr + "/0"
	a := pushdtest.Start(t, bin, pushdtest.Options{Args: []string{"-reuseport", "-redis", redisURL}})
	b := pushdtest.Start(t, bin, pushdtest.Options{Args: []string{"-reuseport", "-redis", redisURL, "-listen", a.WSAddr}})

	// The listening line comes before the node's Redis connection is up:
	// wait for /readyz, or the first subscriptions get 500.
	for _, p := range []*pushdtest.Proc{a, b} {
		waitReady(t, p)
	}
	js := filepath.Join(t.TempDir(), "report.json")
	done := make(chan int, 1)
	var out, errs string
	go func() {
		var code int
		code, out, errs = runInProcess(t, "-target", a.URL("/ws"), "-redis", redisURL, "-conns", "100",
			"-ramp", "1000", "-rate", "200", "-duration", "3s", "-json", js, "-seed", "9")
		done <- code
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var onA int64
	for ctx.Err() == nil {
		sa, err1 := a.FetchStats(ctx)
		sb, err2 := b.FetchStats(ctx)
		if err1 == nil && err2 == nil && sa.Conns+sb.Conns == 100 {
			onA = sa.Conns
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if onA == 0 {
		code := <-done
		t.Fatalf("no connection landed on the first node; loadtest exit %d\n%s\n%s\nnode a:\n%s\nnode b:\n%s", code, out, errs, a.Tail(20), b.Tail(20))
	}
	time.Sleep(700 * time.Millisecond) // into the measured window
	a.Shutdown()
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	r := readReport(t, js)
	if r.CloseCodes["1001"] != uint64(onA) || r.Reconnects != uint64(onA) {
		t.Fatalf("%d on the stopped node; close codes %v, reconnects %d", onA, r.CloseCodes, r.Reconnects)
	}
	if r.OpenAtEnd != 100 || r.Failed != 0 || r.Duplicates != 0 {
		t.Fatalf("open at end %d, failed %d, duplicates %d, errors %v", r.OpenAtEnd, r.Failed, r.Duplicates, r.Errors)
	}
	if r.Delivered == 0 || r.Lost > r.Expected/2 {
		t.Fatalf("delivered %d of %d; errors %v reconnects %d latency %+v", r.Delivered, r.Expected, r.Errors, r.Reconnects, r.Latency)
	}
	t.Logf("%d conns moved: close 1001 ×%d, %d reconnects, delivery %.4f (%d lost while away); errors %v; latency %+v",
		onA, r.CloseCodes["1001"], r.Reconnects, r.DeliveryRatio, r.Lost, r.Errors, r.Latency)
}

func waitReady(t *testing.T, p *pushdtest.Proc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.AdminURL("/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pushd %s not ready after 10s\n%s", p.WSAddr, p.Tail(20))
}
