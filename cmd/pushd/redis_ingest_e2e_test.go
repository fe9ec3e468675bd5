package main_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster/redistest"
)

// TestRedisIngestFloodE2E is issue 26 end to end: one pushd node on one
// real redis-server, 1,000 WebSocket clients (gorilla, format=raw) each on
// its own personal channel, 4 backend connections pipelining plain PUBLISH
// to those channels as fast as they can for 3 s, and a quiet channel that
// gets one publication every 100 ms from a fifth connection. Redis runs
// with its default pub/sub output buffer limit. Checked: Redis never
// closes pushd's pub/sub connections (broker_reconnects 0, no "output
// buffer" line in its log), delivered + counted drops = published (every
// drop by reason in /stats), and the quiet client gets every publication;
// its latency is logged (bench ingest reports it at full rate). It runs
// with the default ingest budgets and with tiny ones (1 KiB per channel,
// 64 KiB per node), where the channels shed: the drops are then counted
// and the clients get gap notices from the real hub.
func TestRedisIngestFloodE2E(t *testing.T) {
	t.Run("default", func(t *testing.T) { floodE2E(t) })
	t.Run("tiny-budgets", func(t *testing.T) {
		floodE2E(t, "-redis-ingest-channel-bytes", "1024", "-redis-ingest-node-bytes", "65536")
	})
}

func floodE2E(t *testing.T, extra ...string) {
	srv := redistest.Start(t, redistest.Options{})
	p := startNodes(t, 1, append([]string{"-redis", "redis://" + srv.Addr + "/0", "-policy", "*=drop"}, extra...)...)[0]
	const clients = 1000
	const flood = 3 * time.Second

	var delivered, gaps atomic.Int64
	var wg sync.WaitGroup
	var conns []*websocket.Conn
	dial := func(ch string) *websocket.Conn {
		var c *websocket.Conn
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			c, _, err = websocket.DefaultDialer.Dial(p.URL("/ws?ch="+ch+"&format=raw"), nil)
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("dial %s: %v", ch, err)
		}
		// ping/pong: the URL subscription is live.
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		return c
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	channels := make([]string, clients)
	for i := range channels {
		channels[i] = "user:" + strconv.Itoa(i)
		c := dial(channels[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					return
				}
				if strings.HasPrefix(string(b), `{"op":"gap"`) {
					gaps.Add(1)
				} else {
					delivered.Add(1)
				}
			}
		}()
	}
	var qmu sync.Mutex
	var quietLat []time.Duration
	quietGot := 0
	qc := dial("login:quiet")
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			_, b, err := qc.ReadMessage()
			if err != nil {
				return
			}
			now := time.Now()
			sent, err := strconv.ParseInt(string(b), 10, 64)
			qmu.Lock()
			quietGot++
			if err == nil {
				quietLat = append(quietLat, now.Sub(time.Unix(0, sent)))
			}
			qmu.Unlock()
		}
	}()
	waitStatWithin(t, p, "broker_channels", 30*time.Second, func(v float64) bool { return v >= clients+1 })

	ctx := context.Background()
	var published atomic.Int64
	end := time.Now().Add(flood)
	var pw sync.WaitGroup
	for w := range 4 {
		pw.Add(1)
		go func() {
			defer pw.Done()
			c := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
			defer c.Close()
			payload := strings.Repeat("x", 32)
			for i := w; time.Now().Before(end); {
				pipe := c.Pipeline()
				cmds := make([]*redis.IntCmd, 0, 1000)
				for range 1000 {
					cmds = append(cmds, pipe.Publish(ctx, "pushd:{"+channels[i%clients]+"}", payload))
					i += 7
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
	quiet := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
	defer quiet.Close()
	sent := 0
	var maxOmem, maxQueued int64
	for time.Now().Before(end) {
		for _, line := range strings.Split(srv.MustDo(t, "CLIENT", "LIST", "TYPE", "pubsub"), "\n") {
			if v, err := strconv.ParseInt(field(line, "omem"), 10, 64); err == nil {
				maxOmem = max(maxOmem, v)
			}
		}
		maxQueued = max(maxQueued, int64(brokerStat(t, p, "broker_ingest_queued_bytes")))
		n, err := quiet.Publish(ctx, "pushd:{login:quiet}", strconv.FormatInt(time.Now().UnixNano(), 10)).Result()
		if err != nil || n != 1 {
			t.Fatalf("quiet publish: %d receivers, %v", n, err)
		}
		sent++
		time.Sleep(100 * time.Millisecond)
	}
	pw.Wait()
	pub := published.Load()
	t.Logf("during the flood: Redis output buffer of a pushd pub/sub connection up to %d bytes; pushd ingest queues up to %d bytes", maxOmem, maxQueued)
	t.Logf("flood: %d PUBLISH received by pushd in %v (%.0f/s) on %d channels, %d on the quiet one", pub, flood, float64(pub)/flood.Seconds(), clients, sent)

	drops := func() (float64, map[string]float64) {
		m := stats(t, p)
		out := map[string]float64{}
		var sum float64
		for _, k := range []string{"broker_shed_channel", "broker_shed_node", "broker_conflated", "dropped", "mailbox_overflows", "broker_lost", "slow_disconnects"} {
			v, _ := m[k].(float64)
			out[k] = v
			sum += v
		}
		return sum, out
	}
	total := func() int64 {
		d, _ := drops()
		qmu.Lock()
		defer qmu.Unlock()
		return delivered.Load() + int64(quietGot) + int64(d)
	}
	want := pub + int64(sent)
	deadline := time.Now().Add(60 * time.Second)
	for total() < want && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // nothing more may arrive
	d, byReason := drops()
	qmu.Lock()
	got, lat := quietGot, slices.Clone(quietLat)
	qmu.Unlock()
	t.Logf("delivered %d, counted drops %.0f %v, gap notices received %d", delivered.Load(), d, byReason, gaps.Load())
	if byReason["slow_disconnects"] != 0 {
		t.Fatalf("%v slow consumers disconnected: their pushes are neither delivered nor counted", byReason["slow_disconnects"])
	}
	if n := delivered.Load() + int64(got) + int64(d); n != want {
		t.Fatalf("delivered %d + quiet %d + counted drops %.0f = %d, published %d", delivered.Load(), got, d, n, want)
	}
	if r := brokerStat(t, p, "broker_reconnects"); r != 0 {
		t.Fatalf("%v pub/sub reconnects during the flood", r)
	}
	log, err := os.ReadFile(filepath.Join(srv.Dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), "output buffer") {
		t.Fatalf("Redis closed a client for its output buffer:\n%s", log)
	}
	if got != sent {
		t.Fatalf("quiet channel: %d of %d publications", got, sent)
	}
	slices.Sort(lat)
	t.Logf("quiet channel: %d/%d, latency p50 %v p99 %v max %v", got, sent, lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], lat[len(lat)-1])
	for _, l := range lat {
		if l > 5*time.Second {
			t.Fatalf("a quiet publication took %v", l)
		}
	}
}
