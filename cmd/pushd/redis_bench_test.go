package main_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// BenchmarkRedisNodeForward is acceptance 5 of issue 5 end to end: a
// backend pipelines b.N raw PUBLISH pushd:{bench} into a real redis-server;
// one pushd node (-redis) forwards them to 1 or 4 local WebSocket subscribers
// (format=raw, gorilla clients in this process). msgs/s is per subscriber
// (every subscriber got every message; frames/s = subscribers × msgs/s), measured
// from the first PUBLISH to the last receipt. redis-benchmark's own PUBLISH
// rate on the same Redis and channel, in the same run, is the reference:
// ratio = msgs/s ÷ redis-benchmark-publish/s. Everything shares the host's
// cores (Redis, pushd, backend, clients).
//
//	go test ./cmd/pushd -run '^$' -bench RedisNodeForward -benchtime 500000x
func BenchmarkRedisNodeForward(b *testing.B) {
	for _, subs := range []int{1, 4} {
		b.Run("subscribers="+strconv.Itoa(subs), func(b *testing.B) { benchNodeForward(b, subs) })
	}
}

func benchNodeForward(b *testing.B, subs int) {
	srv := redistest.Start(b, redistest.Options{})
	bin := pushdtest.Build(b)
	p := pushdtest.Start(b, bin, pushdtest.Options{Args: []string{"-redis", "redis://" + srv.Addr + "/0", "-max-pending", strconv.Itoa(64 << 20)}})
	deadline := time.Now().Add(10 * time.Second)
	for readyz(p) != 200 {
		if time.Now().After(deadline) {
			b.Fatalf("pushd not ready\n%s", p.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	conns := make([]*websocket.Conn, subs)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(p.URL("/ws?ch=bench&format=raw"), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil { // pong: the subscription is live
			b.Fatal(err)
		}
		conns[i] = c
	}
	backend := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
	defer backend.Close()
	ctx := context.Background()
	payload := []byte(`{"price":123.45,"sym":"ABC"}`)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, subs)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
			for got := 0; got < b.N; got++ {
				// NextReader discards the previous message unread.
				if _, _, err := c.NextReader(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for sent := 0; sent < b.N; {
		n := min(1000, b.N-sent)
		pipe := backend.Pipeline()
		for i := 0; i < n; i++ {
			pipe.Publish(ctx, "pushd:{bench}", payload)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatalf("subscriber: %v\n%s", err, p.Log())
	}
	rate := float64(b.N) / elapsed.Seconds()
	ref := srv.PublishRate(b, max(b.N, 100000))
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(rate*float64(subs), "frames/s")
	b.ReportMetric(ref, "redis-benchmark-publish/s")
	b.ReportMetric(rate/ref, "ratio")
}
