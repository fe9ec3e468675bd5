package cluster_test

import (
	"context"
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

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/fanout"
)

// slowHub is a BatchHandler that delivers the "hot:" and "c:" channels
// slowly (perPub of work per publication, like writing to slow sockets)
// and records everything: delivered payloads per channel, gap notices,
// the quiet channel's arrival times.
type slowHub struct {
	perPub time.Duration

	mu        sync.Mutex
	delivered map[string][]string
	gaps      map[string]int
	arrivals  []time.Duration // quiet: receive time - send time (in the payload)
	bad       []string
	busy      map[string]bool
}

func (h *slowHub) PolicyFor(ch string) fanout.Policy {
	if strings.HasPrefix(ch, "c:") {
		return fanout.PolicyConflate
	}
	return fanout.PolicyDrop
}

func (h *slowHub) HandlePublication(p fanout.Publication) { h.HandleBatch([]fanout.Publication{p}) }

func (h *slowHub) HandleBatch(pubs []fanout.Publication) {
	ch := pubs[0].Channel
	h.mu.Lock()
	if h.busy[ch] {
		h.bad = append(h.bad, "concurrent delivery on "+ch)
	}
	h.busy[ch] = true
	h.mu.Unlock()
	now := time.Now()
	if ch != "quiet" {
		time.Sleep(h.perPub * time.Duration(len(pubs)))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.busy[ch] = false
	for _, p := range pubs {
		h.delivered[ch] = append(h.delivered[ch], string(p.Data))
		if ch == "quiet" {
			sent, _ := strconv.ParseInt(string(p.Data), 10, 64)
			h.arrivals = append(h.arrivals, now.Sub(time.Unix(0, sent)))
		}
	}
}

func (h *slowHub) HandleGap(ch, _ string, from, to uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if from != 0 || to != 0 {
		h.bad = append(h.bad, fmt.Sprintf("gap %d..%d on %s: raw publications have no seq", from, to, ch))
	}
	h.gaps[ch]++
}

// TestRedisIngestFlood is issue 26 at the broker: a flood of raw PUBLISH
// on 40 hot channels (4 pipelined publishers) that the hub delivers far
// slower than Redis sends, on a Redis whose pub/sub output buffer limit is
// tight (8 MB hard, 2 MB for 1 s: inline delivery is cut within 2 s), plus a quiet channel published every 50 ms. The
// readers only enqueue, so Redis never cuts a connection (0 reconnects, no
// "output buffer" line in its log); the hot channels shed by policy and
// every publication is delivered or counted (delivered + ShedChannel +
// ShedNode + Conflated = published); every shed run becomes a gap notice
// (drop channels) or none (the conflating one); each channel stays in
// order; the quiet channel gets every publication, with latency logged.
// The flood lasts 2 s.
func TestRedisIngestFlood(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Args: []string{"--client-output-buffer-limit", "pubsub 8mb 2mb 1"}})
	ctx := context.Background()
	h := &slowHub{perPub: 100 * time.Microsecond, delivered: map[string][]string{}, gaps: map[string]int{}, busy: map[string]bool{}}
	cfg := cluster.RedisConfig{Client: newClient(t, srv.Addr), PubSubConns: 4, IngestWorkers: 2,
		IngestChannelBytes: 16 << 10, IngestNodeBytes: 256 << 10}
	b, err := cluster.NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.Attach(h)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(rctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := b.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		<-done
	})
	waitFor(t, 10*time.Second, "broker ready", b.Ready)

	var hot []string
	for i := range 40 {
		hot = append(hot, "hot:"+strconv.Itoa(i))
	}
	hot = append(hot, "c:1")
	for _, ch := range append(slices.Clone(hot), "quiet") {
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}

	const flood = 2 * time.Second
	var published atomic.Int64
	var seqs [4][]int // next payload index per hot channel, per publisher
	var wg sync.WaitGroup
	end := time.Now().Add(flood)
	for w := range 4 {
		seqs[w] = make([]int, len(hot))
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(t, srv.Addr)
			for i := 0; time.Now().Before(end); {
				pipe := c.Pipeline()
				var cmds []*redis.IntCmd
				for range 500 {
					k := i % len(hot)
					i++
					// payload: publisher.index, increasing per channel and publisher
					cmds = append(cmds, pipe.Publish(ctx, "pushd:{"+hot[k]+"}", strconv.Itoa(w)+"."+strconv.Itoa(seqs[w][k])))
					seqs[w][k]++
				}
				if _, err := pipe.Exec(ctx); err != nil {
					t.Error(err)
					return
				}
				for _, c := range cmds {
					published.Add(c.Val())
				}
			}
		}()
	}
	quiet := newClient(t, srv.Addr)
	sent := 0
	for time.Now().Before(end) {
		if err := quiet.Publish(ctx, "pushd:{quiet}", strconv.FormatInt(time.Now().UnixNano(), 10)).Err(); err != nil {
			t.Fatal(err)
		}
		sent++
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	t.Logf("flood over: %d published on %d hot channels, %d on the quiet one", published.Load(), len(hot), sent)

	counted := func() (int64, cluster.RedisStats) {
		st := b.Stats()
		h.mu.Lock()
		n := 0
		for _, ch := range hot {
			n += len(h.delivered[ch])
		}
		h.mu.Unlock()
		return int64(n) + int64(st.ShedChannel+st.ShedNode+st.Conflated), st
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if n, st := counted(); n >= published.Load() || time.Now().After(deadline) {
			t.Logf("settled: delivered + shed %d, published %d, stats %+v", n, published.Load(), st)
			break
		}
	}
	n, st := counted()
	t.Logf("stats: %+v", st)
	if n != published.Load() {
		t.Fatalf("delivered + shed = %d, published %d", n, published.Load())
	}
	if st.Reconnects != 0 || st.AffectedChannels != 0 {
		t.Fatalf("%d reconnects, %d affected channels: Redis cut a pub/sub connection", st.Reconnects, st.AffectedChannels)
	}
	log, err := os.ReadFile(filepath.Join(srv.Dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), "output buffer") {
		t.Fatalf("Redis closed a client for its output buffer:\n%s", log)
	}
	if st.ShedChannel+st.ShedNode == 0 || st.Conflated == 0 || !st.Overloaded {
		t.Fatalf("the flood was not shed (stats %+v): the test did not overload the ingest", st)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.bad) > 0 {
		t.Fatal(h.bad[:min(len(h.bad), 5)])
	}
	if got := len(h.delivered["quiet"]); got != sent {
		t.Fatalf("quiet channel: %d of %d publications", got, sent)
	}
	gaps := 0
	for _, ch := range hot {
		gaps += h.gaps[ch]
		// Order per channel: each publisher's indexes increase.
		last := map[string]int{}
		for _, p := range h.delivered[ch] {
			w, idx, _ := strings.Cut(p, ".")
			i, _ := strconv.Atoi(idx)
			if prev, ok := last[w]; ok && i <= prev {
				t.Fatalf("%s: %s after %s.%d: out of order", ch, p, w, prev)
			}
			last[w] = i
		}
	}
	if h.gaps["c:1"] != 0 || gaps == 0 {
		t.Fatalf("gap notices: %d on drop channels (want > 0), %d on the conflating one (want 0)", gaps, h.gaps["c:1"])
	}
	lat := slices.Clone(h.arrivals)
	slices.Sort(lat)
	p99 := lat[min(len(lat)-1, len(lat)*99/100)]
	for _, d := range lat {
		if d > 5*time.Second {
			t.Fatalf("a quiet publication took %v during the flood", d)
		}
	}
	t.Logf("quiet channel: %d/%d delivered, p50 %v, p99 %v, max %v; %d shed (channel %d, node %d), %d conflated, %d gap notices",
		len(lat), sent, lat[len(lat)/2], p99, lat[len(lat)-1], st.ShedChannel+st.ShedNode, st.ShedChannel, st.ShedNode, st.Conflated, gaps)
}

// TestRedisConnsSpreadAndBreak: with PubSubConns 4, 200 channels spread
// over 4 pub/sub connections (CLIENT LIST: each carries some, none all);
// a CLIENT KILL of one of them touches only its channels: AffectedChannels
// is exactly its share, one reconnect, and every durable publication made
// while it was down still reaches the hub once, in order (resync from the
// streams).
func TestRedisConnsSpreadAndBreak(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	bt := startBroker(t, newClient(t, srv.Addr), cluster.RedisConfig{PubSubConns: 4, HistorySize: 100})
	const n = 200
	for i := range n {
		if err := bt.b.Subscribe(ctx, "s:"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	type psClient struct {
		id   string
		subs int
	}
	list := func() []psClient {
		var out []psClient
		for _, line := range strings.Split(strings.TrimSpace(srv.MustDo(t, "CLIENT", "LIST", "TYPE", "pubsub")), "\n") {
			if line == "" {
				continue
			}
			var c psClient
			for _, f := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(f, "id="); ok {
					c.id = v
				}
				if v, ok := strings.CutPrefix(f, "sub="); ok {
					c.subs, _ = strconv.Atoi(v)
				}
			}
			out = append(out, c)
		}
		return out
	}
	clients := list()
	if len(clients) != 4 {
		t.Fatalf("%d pub/sub clients in Redis, want 4: %+v", len(clients), clients)
	}
	total := 0
	for _, c := range clients {
		chans := (c.subs - 1) / 2 // raw + durable name per channel, plus the canary
		if chans <= 0 || chans >= n {
			t.Fatalf("a connection carries %d of %d channels: %+v", chans, n, clients)
		}
		total += chans
	}
	if total != n {
		t.Fatalf("connections carry %d channels in all, want %d: %+v", total, n, clients)
	}
	victim := clients[0]
	srv.MustDo(t, "CLIENT", "KILL", "ID", victim.id)
	backend := newClient(t, srv.Addr)
	for i := range n {
		if err := backend.FCall(ctx, "pushd_publish", []string{"pushd:{s:" + strconv.Itoa(i) + "}"}, "m", 60, 100).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "every channel's publication", func() bool {
		for i := range n {
			if len(bt.log.get("s:"+strconv.Itoa(i))) < 1 {
				return false
			}
		}
		return true
	})
	waitFor(t, 10*time.Second, "ready again", bt.b.Ready)
	time.Sleep(200 * time.Millisecond)
	for i := range n {
		if got := seqs(bt.log.get("s:" + strconv.Itoa(i))); !slices.Equal(got, []uint64{1}) {
			t.Fatalf("s:%d got seqs %v, want [1]", i, got)
		}
	}
	st := bt.b.Stats()
	if want := uint64((victim.subs - 1) / 2); st.AffectedChannels != want || st.Reconnects != 1 {
		t.Fatalf("stats %+v: want %d affected channels (the killed connection's), 1 reconnect", st, want)
	}
	t.Logf("CLIENT KILL of 1 of 4 pub/sub connections: %d of %d channels affected, %d recoveries", st.AffectedChannels, n, st.Recoveries)
}
