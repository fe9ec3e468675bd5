package main_test

// Acceptance 3 of issue 5: kill -9 one of three pushd nodes under a
// durable stream; its clients (a resuming Go client: reconnect to another
// node after a jittered pause with since=<last seq>) lose and duplicate
// nothing.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// resumeClient follows ch on nodes[first], and on any error reconnects to
// a random node after a jittered pause, resuming with since=<last seq>.
// It records every push as received, without deduplicating.
func resumeClient(ctx context.Context, nodes []*pushdtest.Proc, first int, ch string, log *recvLog, moved *int64) {
	node := first
	var last uint64
	d := websocket.Dialer{HandshakeTimeout: 2 * time.Second}
	for ctx.Err() == nil {
		c, _, err := d.Dial(nodes[node].URL(fmt.Sprintf("/ws?ch=%s&since=%d", ch, last)), nil)
		if err == nil {
			stop := context.AfterFunc(ctx, func() { c.Close() })
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					break
				}
				var m push
				if json.Unmarshal(b, &m) != nil || m.Op != "" || m.Ch != ch {
					continue
				}
				log.mu.Lock()
				log.seqs = append(log.seqs, m.Seq)
				log.mu.Unlock()
				last = m.Seq
			}
			stop()
			c.Close()
		}
		if ctx.Err() != nil {
			return
		}
		// Full jitter before trying another node.
		time.Sleep(time.Duration(rand.N(200)) * time.Millisecond)
		node = rand.N(len(nodes))
		log.mu.Lock()
		*moved++
		log.mu.Unlock()
	}
}

func TestRedisNodeKill(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	nodes := startNodes(t, 3, "-redis", "redis://"+srv.Addr+"/0")
	victim := 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const clients = 30
	logs := make([]*recvLog, clients)
	moved := make([]int64, clients)
	done := make(chan struct{}, clients)
	for i := range logs {
		logs[i] = &recvLog{}
		go func() {
			defer func() { done <- struct{}{} }()
			// Two thirds on the victim, the rest spread over the others.
			first := victim
			if i%3 == 0 {
				first = i % 2
			}
			resumeClient(ctx, nodes, first, "stream", logs[i], &moved[i])
		}()
	}
	backend := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, Protocol: 2})
	defer backend.Close()
	rate, warm := faultParams()
	stop := make(chan struct{})
	s := startStream(context.Background(), backend, "stream", rate, stop)
	time.Sleep(warm + 200*time.Millisecond)
	if err := syscall.Kill(nodes[victim].Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * warm)
	close(stop)
	<-s.done
	checkExactlyOnce(t, logs, s.acked)
	cancel()
	for range logs {
		<-done
	}
	total := int64(0)
	for i := range moved {
		total += moved[i]
	}
	if total < clients*2/3 {
		t.Fatalf("%d reconnects, want at least one per client of the killed node (%d)", total, clients*2/3)
	}
	t.Logf("kill -9 of 1 of 3 nodes: %d durable messages acknowledged (%.0f/s), %d clients (%d on the killed node) reconnected %d times, 0 lost, 0 duplicated",
		len(s.acked), s.rate(), clients, clients*2/3, total)
}
