package main_test

// Issue 18, acceptance 4: two pushd nodes reach Redis through Sentinel
// (-redis-sentinel, go-redis' failover client). A backend publishes
// durable messages throughout; the primary is killed with kill -9 and the
// sentinels promote its replica. /readyz is 503 on every node during the
// gap, both nodes resubscribe on the new primary, and every client either
// gets every acknowledged publication exactly once, in order, or sees the
// channel's epoch change (recovered:false) — never a silent hole.

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// pushTrace is one client's pushes of a channel: epoch, seq and payload.
type pushTrace struct {
	mu     sync.Mutex
	epochs []string
	seqs   []uint64
	data   []string
	err    error
}

func traceClients(t *testing.T, p *pushdtest.Proc, ch string, n int) []*pushTrace {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDial: (&net.Dialer{}).Dial}
	out := make([]*pushTrace, n)
	for i := range out {
		c, _, err := d.Dial(p.URL("/ws?ch="+ch), nil)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		ready(t, c)
		_ = c.SetReadDeadline(time.Time{})
		tr := &pushTrace{}
		out[i] = tr
		go func() {
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					tr.mu.Lock()
					tr.err = err
					tr.mu.Unlock()
					return
				}
				seq, err := strconv.ParseUint(string(pushField(b, "seq")), 10, 64)
				if err != nil || seq == 0 {
					continue
				}
				tr.mu.Lock()
				tr.epochs = append(tr.epochs, string(pushField(b, "epoch")))
				tr.seqs = append(tr.seqs, seq)
				tr.data = append(tr.data, string(pushField(b, "data")))
				tr.mu.Unlock()
			}
		}()
	}
	return out
}

func TestRedisSentinelFailover(t *testing.T) {
	g := redistest.StartSentinels(t, redistest.SentinelOptions{DownAfter: time.Second, FailoverTimeout: 3 * time.Second})
	sentinels := strings.Join(g.SentinelAddrs(), ",")
	nodes := startNodes(t, 2, "-redis-sentinel", g.Master+"@"+sentinels)
	var traces []*pushTrace
	for _, p := range nodes {
		traces = append(traces, traceClients(t, p, "stream", 10)...)
	}
	backend := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: g.Master, SentinelAddrs: g.SentinelAddrs(),
		MaxRetries: -1, Protocol: 2, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond,
	})
	defer backend.Close()

	// The backend: 5 durable publications every 10 ms, each payload
	// unique; acked records those the primary acknowledged.
	var (
		mu     sync.Mutex
		acked  = map[string]bool{}
		failed int
	)
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		n := 0
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			pipe := backend.Pipeline()
			cmds := make([]*redis.Cmd, 5)
			names := make([]string, 5)
			for i := range cmds {
				n++
				names[i] = "m" + strconv.Itoa(n)
				cmds[i] = pipe.FCall(ctx, "pushd_publish", []string{"pushd:{stream}"}, `"`+names[i]+`"`, 300, 100000)
			}
			_, _ = pipe.Exec(ctx)
			cancel()
			mu.Lock()
			for i, c := range cmds {
				if c.Err() == nil {
					acked[names[i]] = true
				} else {
					failed++
				}
			}
			mu.Unlock()
		}
	}()
	time.Sleep(700 * time.Millisecond)

	old := g.Primary.Addr
	if err := g.Primary.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for _, p := range nodes {
		waitReady(t, p, 503, 10*time.Second)
	}
	t.Logf("every node's /readyz 503 %v after kill -9 of the primary", time.Since(killed).Round(time.Millisecond))
	for _, p := range nodes {
		waitReady(t, p, 200, 30*time.Second)
	}
	promoted := g.MasterAddr()
	if promoted == old || promoted == "" {
		t.Fatalf("sentinels name %q as the primary, want the promoted replica (old %s)", promoted, old)
	}
	t.Logf("sentinels promoted %s; every node ready again %v after the kill", promoted, time.Since(killed).Round(time.Millisecond))
	time.Sleep(time.Second)
	close(stop)
	<-pubDone

	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 100 {
		t.Fatalf("only %d publications acknowledged", len(acked))
	}
	// Every client: within an epoch, seqs follow one another (no hole, no
	// repeat); no payload twice; every acknowledged payload received,
	// unless the client saw the epoch change (recovered:false).
	deadline := time.Now().Add(20 * time.Second)
	var lostTotal, epochChanges int
	for i, tr := range traces {
		for {
			tr.mu.Lock()
			got := 0
			for _, d := range tr.data {
				if acked[d] {
					got++
				}
			}
			err := tr.err
			tr.mu.Unlock()
			if got >= len(acked) || time.Now().After(deadline) {
				break
			}
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		tr.mu.Lock()
		seen := map[string]bool{}
		changes := 0
		for k := range tr.seqs {
			if seen[tr.data[k]] {
				t.Errorf("client %d: %s twice", i, tr.data[k])
			}
			seen[tr.data[k]] = true
			if k == 0 {
				continue
			}
			if tr.epochs[k] != tr.epochs[k-1] {
				changes++
				continue
			}
			if tr.seqs[k] != tr.seqs[k-1]+1 {
				t.Errorf("client %d: seq %d after %d in epoch %s: a silent hole or repeat", i, tr.seqs[k], tr.seqs[k-1], tr.epochs[k])
			}
		}
		lost := 0
		for d := range acked {
			if !seen[d] {
				lost++
			}
		}
		tr.mu.Unlock()
		if lost > 0 && changes == 0 {
			t.Errorf("client %d: %d acknowledged publications lost without an epoch change", i, lost)
		}
		lostTotal += lost
		epochChanges += changes
	}
	t.Logf("%d durable publications acknowledged (%d attempts failed during the failover); %d clients on 2 nodes: %d lost (with recovered:false), %d epoch changes seen",
		len(acked), failed, len(traces), lostTotal, epochChanges)
}
