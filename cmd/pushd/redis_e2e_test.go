package main_test

// End-to-end tests of the Redis broker (issue 5): real pushd binaries with
// -redis against a real redis-server started by the test. Acceptance 1
// (three nodes, redis-cli PUBLISH / FCALL, PUBSUB CHANNELS follows local
// demand, publish-before-subscribe) and acceptance 2 (CLIENT KILL and a
// Redis restart with AOF during a durable stream: resubscribe within 2 s,
// /readyz 503 while broken, 0 lost and 0 duplicated acknowledged durable
// messages). -redis.long runs the fault test at 5k msg/s for longer.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

var redisLong = flag.Bool("redis.long", false, "run the Redis fault tests longer and at 5k msg/s")

// startNodes starts n pushd nodes on one Redis and waits for /readyz.
func startNodes(t *testing.T, n int, args ...string) []*pushdtest.Proc {
	t.Helper()
	bin := pushdtest.Build(t)
	var nodes []*pushdtest.Proc
	for i := 0; i < n; i++ {
		nodes = append(nodes, pushdtest.Start(t, bin, pushdtest.Options{Args: args}))
	}
	for _, p := range nodes {
		waitReady(t, p, 200, 10*time.Second)
	}
	return nodes
}

func readyz(p *pushdtest.Proc) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(p.AdminURL("/readyz"))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitReady(t *testing.T, p *pushdtest.Proc, status int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for readyz(p) != status {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz of %s not %d within %v\n%s", p.AdminAddr, status, d, p.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pubsubChannels(t *testing.T, srv *redistest.Server) []string {
	t.Helper()
	out := strings.Fields(srv.MustDo(t, "PUBSUB", "CHANNELS", "pushd:{*"))
	slices.Sort(out)
	return out
}

func TestRedisThreeNodes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	nodes := startNodes(t, 3, "-redis", "redis://"+srv.Addr+"/0")
	a, b, c := nodes[0], nodes[1], nodes[2]
	if got := pubsubChannels(t, srv); len(got) != 0 {
		t.Fatalf("PUBSUB CHANNELS before any subscriber: %q", got)
	}

	cb := dial(t, b, "/ws?ch=room:1")
	ready(t, cb)
	if got, want := pubsubChannels(t, srv), []string{"pushd:{room:1}", "pushd:{room:1}:d"}; !slices.Equal(got, want) {
		t.Fatalf("PUBSUB CHANNELS = %q, want %q", got, want)
	}
	// Only node B subscribes: one subscriber per name.
	if got := srv.MustDo(t, "PUBSUB", "NUMSUB", "pushd:{room:1}", "pushd:{room:1}:d"); strings.Join(strings.Fields(got), " ") != "pushd:{room:1} 1 pushd:{room:1}:d 1" {
		t.Fatalf("PUBSUB NUMSUB = %q", got)
	}
	srv.MustDo(t, "PUBLISH", "pushd:{room:1}", "hello")
	expectPush(t, cb, "room:1", 0, `"hello"`)
	if got := srv.MustDo(t, "FCALL", "pushd_publish", "1", "pushd:{room:1}", "hi"); got != "1" {
		t.Fatalf("FCALL = %q", got)
	}
	expectPush(t, cb, "room:1", 1, `"hi"`)
	// POST /publish on node A reaches the client on node B through Redis.
	seq := mustPublish(t, a, "room:1", `{"n":2}`)
	expectPush(t, cb, "room:1", seq, `{"n":2}`)

	// Publish-before-subscribe through Redis: node A publishes, a QR-login
	// page on node C subscribes afterwards with since=0.
	seq = mustPublish(t, a, "login:7f3a", `{"token":"abc"}`)
	cc := dial(t, c, "/ws?ch=login:7f3a&since=0")
	expectPush(t, cc, "login:7f3a", seq, `{"token":"abc"}`)
	want := []string{"pushd:{login:7f3a}", "pushd:{login:7f3a}:d", "pushd:{room:1}", "pushd:{room:1}:d"}
	if got := pubsubChannels(t, srv); !slices.Equal(got, want) {
		t.Fatalf("PUBSUB CHANNELS = %q, want %q", got, want)
	}
	// Resume on another node with since.
	for i := 0; i < 3; i++ {
		mustPublish(t, a, "room:1", fmt.Sprint(10+i))
	}
	for i := 0; i < 3; i++ {
		readJSON(t, cb)
	}
	cc2 := dial(t, c, "/ws?ch=room:1&since=2")
	for i, d := range []string{"10", "11", "12"} {
		expectPush(t, cc2, "room:1", uint64(3+i), d)
	}
	st := b.Stats(t)
	if st.Subscriptions != 1 {
		t.Fatalf("node B subscriptions %d", st.Subscriptions)
	}
	// The last local subscriber of login:7f3a leaves: after the hub's
	// unsubscribe delay (5 s) its names leave PUBSUB CHANNELS; room:1,
	// still followed on B and C, stays.
	cc.Close()
	left := time.Now()
	want = []string{"pushd:{room:1}", "pushd:{room:1}:d"}
	for !slices.Equal(pubsubChannels(t, srv), want) {
		if time.Since(left) > 10*time.Second {
			t.Fatalf("PUBSUB CHANNELS = %q 10 s after the last subscriber left, want %q", pubsubChannels(t, srv), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("UNSUBSCRIBE %v after the last local subscriber left", time.Since(left).Round(10*time.Millisecond))
}

// recvLog collects one client's pushes of a channel.
type recvLog struct {
	mu   sync.Mutex
	seqs []uint64
	err  error
}

func (r *recvLog) snapshot() ([]uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seqs), r.err
}

func collect(t *testing.T, p *pushdtest.Proc, ch string) *recvLog {
	t.Helper()
	c := dial(t, p, "/ws?ch="+ch)
	ready(t, c)
	_ = c.SetReadDeadline(time.Time{}) // ready set one
	r := &recvLog{}
	go func() {
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				r.mu.Lock()
				r.err = err
				r.mu.Unlock()
				return
			}
			var m push
			if json.Unmarshal(b, &m) != nil || m.Op != "" {
				continue
			}
			r.mu.Lock()
			r.seqs = append(r.seqs, m.Seq)
			r.mu.Unlock()
		}
	}()
	return r
}

// durableStream publishes durable messages (history 100000) at rate per
// second until stop is closed and records the acknowledged sequence
// numbers.
type durableStream struct {
	acked   []uint64
	failed  int
	elapsed time.Duration
	done    chan struct{}
}

// rate is the acknowledged publications per second.
func (s *durableStream) rate() float64 { return float64(len(s.acked)) / s.elapsed.Seconds() }

func startStream(ctx context.Context, client *redis.Client, ch string, rate int, stop <-chan struct{}) *durableStream {
	s := &durableStream{done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(s.done)
		defer func() { s.elapsed = time.Since(start) }()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		prev := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			// As many as the time since the last round asks for (ticks
			// are late on a loaded machine), at most 100 ms worth.
			now := time.Now()
			per := max(min(int(float64(rate)*now.Sub(prev).Seconds()), rate/10), 1)
			prev = now
			// One pipelined round trip per tick: the rate holds under -race.
			cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			pipe := client.Pipeline()
			cmds := make([]*redis.Cmd, per)
			for i := range cmds {
				cmds[i] = pipe.FCall(cctx, "pushd_publish", []string{"pushd:{" + ch + "}"}, "m", 300, 100000)
			}
			_, _ = pipe.Exec(cctx)
			cancel()
			for _, c := range cmds {
				seq, err := c.Int64()
				if err != nil {
					s.failed++
					continue
				}
				s.acked = append(s.acked, uint64(seq))
			}
		}
	}()
	return s
}

// checkExactlyOnce verifies that every client saw 1..top once, in order,
// with top ≥ every acknowledged seq.
func checkExactlyOnce(t *testing.T, logs []*recvLog, acked []uint64) {
	t.Helper()
	if len(acked) == 0 {
		t.Fatal("no publication was acknowledged")
	}
	top := slices.Max(acked)
	deadline := time.Now().Add(10 * time.Second)
	for i, l := range logs {
		for {
			got, err := l.snapshot()
			if len(got) > 0 && got[len(got)-1] >= top || time.Now().After(deadline) {
				break
			}
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		got, _ := l.snapshot()
		dups, lost := 0, 0
		var prev uint64
		for _, s := range got {
			switch {
			case s <= prev:
				dups++
				continue
			case s > prev+1:
				lost += int(s - prev - 1)
			}
			prev = s
		}
		if prev < top {
			lost += int(top - prev)
		}
		if dups != 0 || lost != 0 {
			t.Fatalf("client %d: %d received, %d lost, %d duplicated (acked top %d)", i, len(got), lost, dups, top)
		}
	}
}

// faultParams: the durable stream's target rate (acceptance 2: 5k msg/s)
// and how long it runs before, between and after faults.
func faultParams() (rate int, warm time.Duration) {
	if *redisLong {
		return 5000, 2 * time.Second
	}
	return 5000, 300 * time.Millisecond
}

// TestRedisClientKill: CLIENT KILL of every pushd connection during a
// durable stream, twice.
func TestRedisClientKill(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	nodes := startNodes(t, 3, "-redis", "redis://"+srv.Addr+"/0")
	var logs []*recvLog
	for _, p := range nodes {
		logs = append(logs, collect(t, p, "stream"), collect(t, p, "stream"))
	}
	backend := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, Protocol: 2})
	defer backend.Close()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
	defer admin.Close()
	rate, warm := faultParams()
	stop := make(chan struct{})
	s := startStream(context.Background(), backend, "stream", rate, stop)
	saw503 := make([]atomic.Bool, len(nodes))
	for round := 0; round < 2; round++ {
		time.Sleep(warm)
		// Each node: 503 while its pub/sub path is broken, then 200 within
		// 2 s of the kill. The pollers start before the kill.
		readyAt := make([]time.Duration, len(nodes))
		for i := range saw503 {
			saw503[i].Store(false)
		}
		var wg sync.WaitGroup
		kill := time.Now().Add(20 * time.Millisecond)
		for i, p := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(kill) < 2*time.Second {
					switch readyz(p) {
					case 503:
						saw503[i].Store(true)
					case 200:
						if saw503[i].Load() || time.Since(kill) > 500*time.Millisecond {
							readyAt[i] = time.Since(kill)
							return
						}
					}
					time.Sleep(time.Millisecond)
				}
			}()
		}
		time.Sleep(time.Until(kill))
		// Every client connection but the admin one (SKIPME yes):
		// the nodes' pub/sub and command connections and the backend's.
		for _, typ := range []string{"pubsub", "normal"} {
			if err := admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", typ).Err(); err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		for i, d := range readyAt {
			if d == 0 {
				t.Fatalf("node %d not ready within 2 s after CLIENT KILL\n%s", i, nodes[i].Log())
			}
		}
		t.Logf("round %d: nodes ready again %v after CLIENT KILL (503 seen: %v %v %v)", round, readyAt,
			saw503[0].Load(), saw503[1].Load(), saw503[2].Load())
	}
	time.Sleep(warm)
	close(stop)
	<-s.done
	checkExactlyOnce(t, logs, s.acked)
	var reconnects []float64
	for _, p := range nodes {
		reconnects = append(reconnects, brokerStat(t, p, "broker_reconnects"))
	}
	for i, r := range reconnects {
		if r < 2 {
			t.Fatalf("node %d: %v reconnects, want >= 2", i, r)
		}
	}
	t.Logf("%d durable messages acknowledged (%.0f/s; %d publish attempts failed), 6 clients, 0 lost, 0 duplicated; reconnects %v",
		len(s.acked), s.rate(), s.failed, reconnects)
}

// TestRedisRestart stops Redis (AOF on) during a durable stream: /readyz is
// 503 on every node while it is down, every node is ready within 2 s after
// it is back, and the clients lose and duplicate nothing acknowledged.
func TestRedisRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	nodes := startNodes(t, 3, "-redis", "redis://"+srv.Addr+"/0")
	var logs []*recvLog
	for _, p := range nodes {
		logs = append(logs, collect(t, p, "stream"))
	}
	backend := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, Protocol: 2, DialTimeout: 200 * time.Millisecond})
	defer backend.Close()
	rate, warm := faultParams()
	stop := make(chan struct{})
	s := startStream(context.Background(), backend, "stream", rate, stop)
	time.Sleep(warm)
	srv.Stop()
	for _, p := range nodes {
		waitReady(t, p, 503, 5*time.Second)
	}
	// Publishing through pushd fails fast while Redis is down.
	start := time.Now()
	if status, _ := httpPublish(t, nodes[0], "stream", []byte("x")); status != http.StatusServiceUnavailable {
		t.Fatalf("POST /publish during the outage: %d, want 503", status)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("POST /publish during the outage took %v", d)
	}
	time.Sleep(500 * time.Millisecond)
	for _, p := range nodes {
		if readyz(p) != 503 {
			t.Fatalf("/readyz of %s not 503 while Redis is down", p.AdminAddr)
		}
	}
	srv.Restart(t)
	back := time.Now()
	for _, p := range nodes {
		waitReady(t, p, 200, 2*time.Second-time.Since(back))
	}
	t.Logf("every node ready %v after Redis restarted", time.Since(back).Round(time.Millisecond))
	time.Sleep(warm)
	close(stop)
	<-s.done
	checkExactlyOnce(t, logs, s.acked)
	if v := brokerStat(t, nodes[0], "broker_publish_unavailable"); v < 1 {
		t.Fatalf("broker_publish_unavailable = %v", v)
	}
	t.Logf("%d durable messages acknowledged (%.0f/s), %d publish attempts failed during the outage; 3 clients, 0 lost, 0 duplicated",
		len(s.acked), s.rate(), s.failed)
}

func brokerStat(t *testing.T, p *pushdtest.Proc, key string) float64 {
	t.Helper()
	m := stats(t, p)
	v, ok := m[key].(float64)
	if !ok {
		t.Fatalf("/stats has no %s: %v", key, m)
	}
	return v
}

// field returns key=value's value from a CLIENT LIST line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// TestRedisClusterNodes: two pushd nodes with -redis-cluster on a real
// 3-primary Redis Cluster; SPUBLISH and FCALL from a backend and POST
// /publish on node A reach a client on node B, on channels of every
// primary; publish-before-subscribe with since=0 works.
func TestRedisClusterNodes(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	// One pub/sub connection per primary, so the count below names the
	// primaries (TestRedisConnsSpreadAndBreak covers -redis-pubsub-conns).
	nodes := startNodes(t, 2, "-redis-cluster", strings.Join(rc.Addrs(), ","), "-redis-pubsub-conns", "1")
	a, b := nodes[0], nodes[1]
	backend := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRetries: -1, Protocol: 2})
	defer backend.Close()
	ctx := context.Background()
	owners := map[string]bool{}
	for i := 0; i < 12; i++ {
		ch := fmt.Sprintf("room:%d", i)
		owner, err := backend.MasterForKey(ctx, "pushd:{"+ch+"}")
		if err != nil {
			t.Fatal(err)
		}
		owners[owner.Options().Addr] = true
		c := dial(t, b, "/ws?ch="+ch)
		ready(t, c)
		if err := backend.SPublish(ctx, "pushd:{"+ch+"}", "hello").Err(); err != nil {
			t.Fatal(err)
		}
		expectPush(t, c, ch, 0, `"hello"`)
		if seq, err := backend.FCall(ctx, "pushd_publish", []string{"pushd:{" + ch + "}"}, "hi").Int64(); err != nil || seq != 1 {
			t.Fatalf("FCALL: %d %v", seq, err)
		}
		expectPush(t, c, ch, 1, `"hi"`)
		seq := mustPublish(t, a, ch, `{"n":2}`)
		expectPush(t, c, ch, seq, `{"n":2}`)
	}
	if len(owners) != 3 {
		t.Fatalf("channels covered %d primaries, want 3", len(owners))
	}
	seq := mustPublish(t, a, "login:qr", `{"token":"abc"}`)
	cc := dial(t, b, "/ws?ch=login:qr&since=0")
	expectPush(t, cc, "login:qr", seq, `{"token":"abc"}`)
	if v := brokerStat(t, b, "broker_conns"); v != 3 {
		t.Fatalf("node B has %v pub/sub connections, want 3 (one per primary)", v)
	}
}
