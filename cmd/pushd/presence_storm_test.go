package main_test

// A join/leave storm on a presence channel (issue 21): delivery on other
// channels keeps its latency, the node emits at most -presence-event-rate
// events (the rest dropped, counted), and the storm's subscribers get
// only that many.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster/redistest"
)

var presenceP99 = flag.Bool("presence.p99", false, "TestPresenceStorm: fail when the storm's delivery p99 on another channel exceeds 2x its baseline")

// latencyRun publishes n raw messages on ch at every, each carrying its
// send time, and returns the publish→receive latencies c observed.
func latencyRun(t *testing.T, rc *redis.Client, c *websocket.Conn, ch string, n int, every time.Duration) []time.Duration {
	t.Helper()
	got := make(chan time.Duration, n)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(time.Duration(n)*every + 20*time.Second))
		for i := 0; i < n; {
			_, b, err := c.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			var m struct {
				Ch   string          `json:"ch"`
				Data json.RawMessage `json:"data"`
			}
			if json.Unmarshal(b, &m) != nil || m.Ch != ch {
				continue
			}
			sent, err := strconv.ParseInt(string(m.Data), 10, 64)
			if err != nil {
				continue
			}
			got <- time.Since(time.Unix(0, sent))
			i++
		}
		close(got)
	}()
	for range n {
		if err := rc.Publish(context.Background(), "pushd:{"+ch+"}", strconv.FormatInt(time.Now().UnixNano(), 10)).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(every)
	}
	var lat []time.Duration
	for l := range got {
		lat = append(lat, l)
	}
	if len(lat) != n {
		t.Fatalf("%d of %d publications on %s arrived", len(lat), n, ch)
	}
	slices.Sort(lat)
	return lat
}

func p99(lat []time.Duration) time.Duration { return lat[min(len(lat)-1, len(lat)*99/100)] }

func TestPresenceStorm(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	secret := strings.Repeat("presence-storm-key-", 2)
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	const rate = 50
	p := startNodes(t, 1, "-redis", "redis://"+srv.Addr+"/0", "-jwt-hs256-secret-file", file, "-public", "other",
		"-presence", "room:*", "-presence-events", "room:*", "-presence-event-rate", strconv.Itoa(rate), "-presence-grace", "0s")[0]
	waitLog(t, p, "control channel subscribed")
	dial := func(sub, url string) *websocket.Conn {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "channels": []string{"room:*"}, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := websocket.DefaultDialer.Dial("ws://"+p.WSAddr+url+"token="+tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	watcher := dial("watcher", "/ws?ch=other&")
	if m := wsJSON(t, watcher, `{"op":"ping"}`); m["op"] != "pong" {
		t.Fatal(m)
	}
	listener := dial("listener", "/ws?ch=room:storm&")
	var events atomic.Int64
	go func() {
		for {
			_, b, err := listener.ReadMessage()
			if err != nil {
				return
			}
			if strings.Contains(string(b), `"op":"join"`) || strings.Contains(string(b), `"op":"leave"`) {
				events.Add(1)
			}
		}
	}()
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
	defer rc.Close()

	const n, every = 200, 10 * time.Millisecond
	base := latencyRun(t, rc, watcher, "other", n, every)

	// The storm: 40 users each join and leave room:storm every 20 ms
	// (about 2,000 joins and leaves per second, distinct users, no grace).
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var toggles atomic.Int64
	for i := range 40 {
		c := dial(fmt.Sprintf("storm-%02d", i), "/ws?")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				for _, op := range []string{`{"op":"sub","ch":"room:storm"}`, `{"op":"unsub","ch":"room:storm"}`} {
					if c.WriteMessage(websocket.TextMessage, []byte(op)) != nil {
						return
					}
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
					toggles.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	stormStart := time.Now()
	storm := latencyRun(t, rc, watcher, "other", n, every)
	stormFor := time.Since(stormStart)
	cancel()
	wg.Wait()
	time.Sleep(500 * time.Millisecond)

	st := stats(t, p)
	emitted, _ := st["presence_events"].(float64)
	dropped, _ := st["presence_events_dropped"].(float64)
	t.Logf("storm: %d sub/unsub ops (%.0f/s); events emitted %.0f, dropped by the rate bound %.0f, received by a subscriber %d",
		toggles.Load(), float64(toggles.Load())/(stormFor+300*time.Millisecond).Seconds(), emitted, dropped, events.Load())
	t.Logf("delivery on another channel: baseline p50 %v p99 %v; during the storm p50 %v p99 %v (p99 ratio %.2f)",
		base[len(base)/2], p99(base), storm[len(storm)/2], p99(storm), float64(p99(storm))/float64(p99(base)))
	if dropped == 0 {
		t.Fatal("the storm dropped no event: it did not exceed the rate bound")
	}
	if v, ok := metricValue(parseMetrics(t, p), "pushd_presence_events_dropped_total", "reason", "rate"); !ok || v < dropped {
		t.Fatalf("pushd_presence_events_dropped_total{reason=rate} = %v (present %v), /stats says %v", v, ok, dropped)
	}
	// Burst 2×rate plus rate per second of storm (and a second of slack).
	if limit := 2*rate + rate*(stormFor.Seconds()+2); emitted > limit {
		t.Fatalf("%.0f events emitted, want at most %.0f", emitted, limit)
	}
	if got := events.Load(); got > int64(emitted) || got == 0 {
		t.Fatalf("the storm's subscriber got %d events, %v emitted", got, emitted)
	}
	// The claim: the storm does not slow delivery elsewhere, p99 within
	// 2× the baseline (10 ms floor). Timing on a shared 2-core machine is
	// noise-prone (the storm's own 4,000 ops/s share the cores), so the
	// default run only logs it; -presence.p99 asserts it (run it alone).
	if lim := max(2*p99(base), 10*time.Millisecond); *presenceP99 && p99(storm) > lim {
		t.Fatalf("p99 on another channel %v during the storm, want at most %v (2× the baseline %v)", p99(storm), lim, p99(base))
	}
}
