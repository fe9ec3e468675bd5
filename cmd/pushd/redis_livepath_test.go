package main_test

// Issue 15, acceptance 2: durable publications while a node's pub/sub
// connection is killed and while Redis is paused (SIGSTOP 3 s) reach every
// one of 2 nodes × 1k clients exactly once, in order: the nodes recover
// what pub/sub dropped from the streams, never leave a silent hole.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// seqCounter follows one client's pushes of one channel without keeping
// them: the next expected seq, and the lost and duplicated ones.
type seqCounter struct {
	mu         sync.Mutex
	next       uint64 // next expected seq
	lost, dups uint64
	epochs     int // distinct epochs seen after the first
	epoch      string
	err        error
}

func (s *seqCounter) add(epoch string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch != s.epoch {
		if s.epoch != "" {
			s.epochs++
		}
		s.epoch, s.next = epoch, 1
	}
	switch {
	case seq < s.next:
		s.dups++
		return
	case seq > s.next:
		s.lost += seq - s.next
	}
	s.next = seq + 1
}

// pushField extracts "key":"value" or "key":N from a push frame without a
// JSON decoder (2k clients under -race).
func pushField(b []byte, key string) []byte {
	k := []byte(`"` + key + `":`)
	i := bytes.Index(b, k)
	if i < 0 {
		return nil
	}
	rest := b[i+len(k):]
	if len(rest) > 0 && rest[0] == '"' {
		if j := bytes.IndexByte(rest[1:], '"'); j >= 0 {
			return rest[1 : 1+j]
		}
		return nil
	}
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	return rest[:j]
}

// counterClients connects n clients to p on /ws?ch=ch, each read by a
// goroutine into a seqCounter. They are ready when this returns (ping
// answered: the URL subscription is live).
func counterClients(t *testing.T, p *pushdtest.Proc, ch string, n int) []*seqCounter {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDial: (&net.Dialer{}).Dial}
	out := make([]*seqCounter, n)
	for i := range out {
		c, _, err := d.Dial(p.URL("/ws?ch="+ch), nil)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		ready(t, c)
		_ = c.SetReadDeadline(time.Time{})
		sc := &seqCounter{}
		out[i] = sc
		go func() {
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					sc.mu.Lock()
					sc.err = err
					sc.mu.Unlock()
					return
				}
				seq, err := strconv.ParseUint(string(pushField(b, "seq")), 10, 64)
				if err != nil || seq == 0 {
					continue // not a durable push
				}
				sc.add(string(pushField(b, "epoch")), seq)
			}
		}()
	}
	return out
}

// waitCounters waits until every client expects top+1 (or the deadline)
// and returns the totals.
func waitCounters(t *testing.T, cs []*seqCounter, top uint64, d time.Duration) (behind int, lost, dups uint64, epochs int) {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, c := range cs {
		for {
			c.mu.Lock()
			next, err := c.next, c.err
			c.mu.Unlock()
			if next > top || time.Now().After(deadline) {
				break
			}
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, c := range cs {
		c.mu.Lock()
		if c.next <= top {
			behind++
			lost += top + 1 - c.next
		}
		lost += c.lost
		dups += c.dups
		epochs += c.epochs
		c.mu.Unlock()
	}
	return behind, lost, dups, epochs
}

// TestRedisLivePathFaults: 2 nodes × 1k clients on one channel; a backend
// publishes durable messages (FCALL pushd_publish) throughout; first every
// node's pub/sub connection is killed (CLIENT KILL TYPE pubsub), then Redis
// is paused for 3 s (SIGSTOP, SIGCONT). Every client gets every
// acknowledged publication exactly once, in order, in one epoch.
func TestRedisLivePathFaults(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	nodes := startNodes(t, 2, "-redis", "redis://"+srv.Addr+"/0")
	const perNode = 1000
	var clients []*seqCounter
	for _, p := range nodes {
		clients = append(clients, counterClients(t, p, "live", perNode)...)
	}
	backend := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, Protocol: 2})
	defer backend.Close()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
	defer admin.Close()

	// 50 durable publications a second: 2k clients read every one.
	stop := make(chan struct{})
	s := startStream(context.Background(), backend, "live", 50, stop)
	time.Sleep(time.Second)
	var killed atomic.Int64
	if n, err := admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Int64(); err != nil || n < 2 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d killed, %v", n, err)
	} else {
		killed.Store(n)
	}
	for _, p := range nodes {
		waitReady(t, p, 200, 10*time.Second)
	}
	time.Sleep(time.Second)
	if err := srv.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	time.Sleep(3 * time.Second)
	if err := srv.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("Redis paused for %v", time.Since(paused).Round(time.Millisecond))
	for _, p := range nodes {
		waitReady(t, p, 200, 10*time.Second)
	}
	time.Sleep(time.Second)
	close(stop)
	<-s.done
	if len(s.acked) == 0 {
		t.Fatal("no publication was acknowledged")
	}
	top := s.acked[0]
	for _, a := range s.acked {
		top = max(top, a)
	}
	start := time.Now()
	behind, lost, dups, epochs := waitCounters(t, clients, top, 30*time.Second)
	var stats []string
	for _, p := range nodes {
		stats = append(stats, fmt.Sprintf("reconnects %v recoveries %v recovered %v", brokerStat(t, p, "broker_reconnects"),
			brokerStat(t, p, "broker_recoveries"), brokerStat(t, p, "broker_recovered")))
	}
	t.Logf("%d clients, %d durable publications acknowledged (%d publish attempts failed, %d pub/sub connections killed); "+
		"caught up %v after the last; lost %d, duplicated %d, epoch changes %d; nodes: %v",
		len(clients), len(s.acked), s.failed, killed.Load(), time.Since(start).Round(time.Millisecond), lost, dups, epochs, stats)
	if behind != 0 || lost != 0 || dups != 0 || epochs != 0 {
		t.Fatalf("%d clients behind; %d lost, %d duplicated, %d epoch changes; want 0", behind, lost, dups, epochs)
	}
	for i, p := range nodes {
		if r := brokerStat(t, p, "broker_reconnects"); r < 1 {
			t.Fatalf("node %d: %v reconnects, want >= 1 (the kill did not reach it)", i, r)
		}
	}
}
