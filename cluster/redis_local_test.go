package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/fanout"
)

// recSub is a Subscriber that keeps every frame it is given.
type recSub struct {
	mu     sync.Mutex
	frames [][]byte
}

func (r *recSub) Queue(b []byte) error {
	r.mu.Lock()
	r.frames = append(r.frames, b)
	r.mu.Unlock()
	return nil
}
func (r *recSub) Flush()                                   {}
func (r *recSub) Close(code ws.StatusCode, _ string) error { return nil }

type push struct {
	Ch    string `json:"ch"`
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
	Data  string `json:"data"`
}

// pushes decodes the recorded JSON push frames (short, unmasked server
// frames: a 2- or 4-byte header).
func (r *recSub) pushes(t *testing.T) []push {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]push, 0, len(r.frames))
	for _, f := range r.frames {
		h := 2
		if f[1]&0x7f == 126 {
			h = 4
		}
		var p push
		if err := json.Unmarshal(f[h:], &p); err != nil {
			t.Fatalf("frame %q: %v", f, err)
		}
		out = append(out, p)
	}
	return out
}

// commandCalls returns calls= of every command in INFO commandstats.
func commandCalls(t *testing.T, srv *redistest.Server) map[string]int {
	t.Helper()
	out := srv.MustDo(t, "INFO", "commandstats")
	calls := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, _ := strconv.Atoi(v)
				calls[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return calls
}

// startHubBroker runs a Redis broker on a new client of addr with a hub
// attached (so subscribes take the hub's path: SubscribeTop and the
// node-local window) and waits until it is ready.
func startHubBroker(t *testing.T, addr string, cfg cluster.RedisConfig) (*cluster.Redis, *fanout.Hub) {
	t.Helper()
	cfg.Client = newClient(t, addr)
	br, err := cluster.NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := fanout.New(fanout.Config{Broker: br})
	if err != nil {
		t.Fatal(err)
	}
	br.Attach(hub)
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- br.Run(rctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := br.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		<-done
	})
	waitFor(t, 20*time.Second, "broker ready", br.Ready)
	return br, hub
}

// TestRedisSubscribeStormIsLocal proves node-local subscribe and
// coalescing against a real redis-server, counted by Redis itself (INFO
// commandstats, not our counters): 10,000 concurrent subscribes to the
// same 10 channels on one node cost at most one SUBSCRIBE command and one
// history read per channel; a second wave with a since inside the node's
// window is answered with no Redis command at all and recovers exactly the
// missed publications; a since before the window still reads Redis.
func TestRedisSubscribeStormIsLocal(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	br, hub := startHubBroker(t, srv.Addr, cluster.RedisConfig{})

	const channels, clients = 10, 10000
	names := make([]string, channels)
	for i := range names {
		names[i] = fmt.Sprintf("room:%d", i)
		for j := 1; j <= 3; j++ { // published before this node holds the channel
			if _, err := br.Publish(ctx, names[i], []byte(fmt.Sprintf(`"%s-%d"`, names[i], j))); err != nil {
				t.Fatal(err)
			}
		}
	}
	epochs := map[string]string{}
	for _, n := range names {
		hr, err := br.History(ctx, n, nil)
		if err != nil || hr.Top != 3 || hr.Epoch == "" {
			t.Fatalf("History(%s) = %+v, %v; want top 3 with an epoch", n, hr, err)
		}
		epochs[n] = hr.Epoch
	}

	// wave runs clients subscribes released at once (workers goroutines:
	// the race detector allows at most 8128 of them).
	wave := func(opts func(i int) fanout.SubscribeOptions) ([]*recSub, []fanout.SubscribeResult) {
		t.Helper()
		subs := make([]*recSub, clients)
		res := make([]fanout.SubscribeResult, clients)
		errs := make([]error, clients)
		const workers = 2000
		start := make(chan struct{})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := w; i < clients; i += workers {
					subs[i] = &recSub{}
					_, res[i], errs[i] = hub.Subscribe(ctx, subs[i], names[i%channels], opts(i))
				}
			}()
		}
		t0 := time.Now()
		close(start)
		wg.Wait()
		t.Logf("%d subscribes in %v", clients, time.Since(t0))
		for i, err := range errs {
			if err != nil {
				t.Fatalf("subscribe %d: %v", i, err)
			}
		}
		return subs, res
	}
	since := func(v uint64) *uint64 { return &v }

	srv.MustDo(t, "CONFIG", "RESETSTAT")
	before := hub.Stats()
	subs1, res1 := wave(func(i int) fanout.SubscribeOptions {
		ch := names[i%channels]
		switch i % 3 {
		case 0:
			return fanout.SubscribeOptions{}
		case 1:
			return fanout.SubscribeOptions{Since: since(3), Epoch: epochs[ch]}
		}
		return fanout.SubscribeOptions{Since: since(3)}
	})
	calls := commandCalls(t, srv)
	t.Logf("wave 1 (first subscribes): Redis commandstats %v; hub: %d local, %d broker reads",
		calls, hub.Stats().LocalSubscribes-before.LocalSubscribes, hub.Stats().BrokerReads-before.BrokerReads)
	if calls["subscribe"] > channels || calls["fcall_ro"] > channels {
		t.Errorf("wave 1: %d SUBSCRIBE and %d FCALL_RO for %d channels; want at most %d of each",
			calls["subscribe"], calls["fcall_ro"], channels, channels)
	}
	if calls["subscribe"] == 0 || calls["fcall_ro"] == 0 {
		t.Errorf("wave 1: Redis saw no SUBSCRIBE or no FCALL_RO (%v): the count measures nothing", calls)
	}
	for i, r := range res1 {
		if ch := names[i%channels]; r.Seq != 3 || r.Epoch != epochs[ch] || !r.Recovered {
			t.Fatalf("wave 1 subscribe %d: %+v, want seq 3 of %s recovered", i, r, epochs[ch])
		}
	}

	check := func(subs []*recSub, chOf func(k int) string, want []uint64, what string) {
		t.Helper()
		waitFor(t, 30*time.Second, what, func() bool {
			for _, s := range subs {
				s.mu.Lock()
				n := len(s.frames)
				s.mu.Unlock()
				if n < len(want) {
					return false
				}
			}
			return true
		})
		time.Sleep(50 * time.Millisecond) // a duplicate would show up by now
		for k, s := range subs {
			ch := chOf(k)
			ps := s.pushes(t)
			if len(ps) != len(want) {
				t.Fatalf("%s: subscriber %d of %s got %+v, want seqs %v", what, k, ch, ps, want)
			}
			for j, p := range ps {
				if p.Ch != ch || p.Seq != want[j] || p.Epoch != epochs[ch] || p.Data != fmt.Sprintf("%s-%d", ch, want[j]) {
					t.Fatalf("%s: subscriber %d push %d = %+v, want seq %d of %s", what, k, j, p, want[j], ch)
				}
			}
		}
	}
	// Two live publications per channel: every subscriber gets both, once.
	for _, n := range names {
		for j := 4; j <= 5; j++ {
			if _, err := br.Publish(ctx, n, []byte(fmt.Sprintf(`"%s-%d"`, n, j))); err != nil {
				t.Fatal(err)
			}
		}
	}
	check(subs1, func(i int) string { return names[i%channels] }, []uint64{4, 5}, "wave 1 live pushes")

	// Wave 2: reconnects from inside the window (since 3 or 4) and
	// live-only joins: no Redis command at all.
	srv.MustDo(t, "CONFIG", "RESETSTAT")
	before = hub.Stats()
	subs2, res2 := wave(func(i int) fanout.SubscribeOptions {
		if i%2 == 0 {
			return fanout.SubscribeOptions{Since: since(3), Epoch: epochs[names[i%channels]]}
		}
		return fanout.SubscribeOptions{}
	})
	calls = commandCalls(t, srv)
	t.Logf("wave 2 (held channels): Redis commandstats %v; hub: %d local, %d broker reads",
		calls, hub.Stats().LocalSubscribes-before.LocalSubscribes, hub.Stats().BrokerReads-before.BrokerReads)
	if calls["subscribe"] != 0 || calls["fcall_ro"] != 0 {
		t.Errorf("wave 2: %d SUBSCRIBE and %d FCALL_RO; want none (node-local)", calls["subscribe"], calls["fcall_ro"])
	}
	var recovering, live []*recSub
	for i, r := range res2 {
		if ch := names[i%channels]; r.Seq != 5 || r.Epoch != epochs[ch] || !r.Recovered {
			t.Fatalf("wave 2 subscribe %d: %+v, want seq 5 of %s recovered", i, r, epochs[ch])
		}
		if i%2 == 0 {
			recovering = append(recovering, subs2[i])
		} else {
			live = append(live, subs2[i])
		}
	}
	// One more live publication: the recovering half holds exactly 4, 5
	// (from the window), 6; the live half exactly 6.
	for _, n := range names {
		if _, err := br.Publish(ctx, n, []byte(fmt.Sprintf(`"%s-6"`, n))); err != nil {
			t.Fatal(err)
		}
	}
	// recovering[k] is subscriber 2k, live[k] subscriber 2k+1.
	check(recovering, func(k int) string { return names[(2*k)%channels] }, []uint64{4, 5, 6}, "wave 2 recovered + live")
	check(live, func(k int) string { return names[(2*k+1)%channels] }, []uint64{6}, "wave 2 live-only")

	// A since before the window (the node held the channel from seq 3)
	// must read Redis, and gets exactly 3, 4, 5 from the stream.
	srv.MustDo(t, "CONFIG", "RESETSTAT")
	old := &recSub{}
	_, r, err := hub.Subscribe(ctx, old, names[0], fanout.SubscribeOptions{Since: since(2), Epoch: epochs[names[0]]})
	if err != nil || r.Seq != 6 || !r.Recovered {
		t.Fatalf("subscribe since 2 = %+v, %v", r, err)
	}
	if ps := old.pushes(t); len(ps) != 4 || ps[0].Seq != 3 || ps[3].Seq != 6 {
		t.Fatalf("since 2 got %+v, want seqs 3, 4, 5, 6", ps)
	}
	if calls = commandCalls(t, srv); calls["fcall_ro"] != 1 {
		t.Errorf("since before the window: %d FCALL_RO, want 1 (%v)", calls["fcall_ro"], calls)
	}
}
