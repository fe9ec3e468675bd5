package cluster_test

import (
	"context"
	"flag"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/fanout"
)

// BenchmarkRedisPersonalChannelHeap measures the heap one personal
// channel costs a node through Redis, sockets aside: n subscribers, each
// alone on its own channel (user:<i>), subscribed through a real
// fanout.Hub and Redis broker against a real redis-server; the slope of
// the heap in use after a GC between n/6 and n channels. -personal.heapprofile <file>
// writes the heap profile at the top.
//
//	go test ./cluster -run '^$' -bench RedisPersonalChannelHeap -benchtime 10000x
var personalHeapProfile = flag.String("personal.heapprofile", "", "BenchmarkRedisPersonalChannelHeap writes the heap profile at its top here")

func BenchmarkRedisPersonalChannelHeap(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, Protocol: 2, PoolSize: 64})
	defer client.Close()
	br, err := cluster.NewRedis(cluster.RedisConfig{Client: client})
	if err != nil {
		b.Fatal(err)
	}
	hub, err := fanout.New(fanout.Config{Broker: br})
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
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !br.Ready() {
		if time.Now().After(deadline) {
			b.Fatal("broker not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	subs := make([]*countSub, b.N)
	for i := range subs {
		subs[i] = &countSub{}
	}
	held := make([]*fanout.Subscription, b.N)
	var failed atomic.Value
	subscribeRange := func(lo, hi int) {
		sem := make(chan struct{}, 256)
		for i := lo; i < hi; i++ {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				s, _, err := hub.Subscribe(ctx, subs[i], "user:"+strconv.Itoa(i), fanout.SubscribeOptions{})
				if err != nil {
					failed.Store(err)
					return
				}
				held[i] = s
			}()
		}
		for range cap(sem) {
			sem <- struct{}{}
		}
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
	}
	// A slope, like the RSS slope of the idle benchmark: the first sixth
	// warms the fixed costs (go-redis' pool, map buckets).
	first := b.N / 6
	b.ReportAllocs()
	b.ResetTimer()
	subscribeRange(0, first)
	b.StopTimer()
	h1 := heap()
	b.StartTimer()
	subscribeRange(first, b.N)
	b.StopTimer()
	h2 := heap()
	if b.N-first > 0 {
		b.ReportMetric(float64(int64(h2)-int64(h1))/float64(b.N-first), "heap-B/channel")
	}
	if f := *personalHeapProfile; f != "" {
		out, err := os.Create(f)
		if err == nil {
			_ = pprof.WriteHeapProfile(out)
			out.Close()
		}
	}
	runtime.KeepAlive(held)
	runtime.KeepAlive(subs)
}
