package cluster_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/fanout"
)

// countSub is a fanout.Subscriber that counts the frames queued to it.
type countSub struct{ n atomic.Int64 }

func (s *countSub) Queue([]byte) error                { s.n.Add(1); return nil }
func (s *countSub) Flush()                            {}
func (s *countSub) Close(ws.StatusCode, string) error { return nil }

// BenchmarkRedisForward measures one node forwarding raw publications from
// Redis to local subscribers: a backend pipelines b.N PUBLISH pushd:{bench}
// commands (1000 per round trip) into a real redis-server; the node's
// Redis broker reads them and hands them to a real fanout.Hub with 10
// subscribers. msgs/s is the node's forwarding rate (every subscriber got
// every message); redis-benchmark's PUBLISH rate on the same Redis, same
// channel (so also with the node subscribed), is measured in the same run
// as the reference: ratio = node/redis-benchmark.
//
//	go test ./cluster -run '^$' -bench RedisForward -benchtime 1000000x
func BenchmarkRedisForward(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, Protocol: 2})
	defer client.Close()
	br, err := cluster.NewRedis(cluster.RedisConfig{Client: client})
	if err != nil {
		b.Fatal(err)
	}
	hub, err := fanout.New(fanout.Config{Broker: br, MaxMailbox: 1 << 20, MaxMailboxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	br.Attach(hub)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = br.Run(ctx) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = br.Shutdown(sctx)
		_ = hub.Shutdown(sctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !br.Ready() {
		if time.Now().After(deadline) {
			b.Fatal("broker not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	subs := make([]*countSub, 10)
	for i := range subs {
		subs[i] = &countSub{}
		if _, _, err := hub.Subscribe(ctx, subs[i], "bench", fanout.SubscribeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	backend := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2})
	defer backend.Close()
	payload := []byte(`{"price":123.45,"sym":"ABC"}`)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
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
	deadline = time.Now().Add(60 * time.Second)
	for _, s := range subs {
		for s.n.Load() < int64(b.N) {
			if time.Now().After(deadline) {
				b.Fatalf("subscriber got %d of %d", s.n.Load(), b.N)
			}
			time.Sleep(time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "msgs/s")
	ref := srv.PublishRate(b, max(b.N, 100000))
	b.ReportMetric(ref, "redis-benchmark-publish/s")
	b.ReportMetric(rate/ref, "ratio")
}
