package cluster_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
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
// fanout.Hub and Redis broker against a real redis-server; heap in use
// after a GC, before and after, divided by n. -personal.heapprofile <file>
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
	before := heap()
	b.ReportAllocs()
	b.ResetTimer()
	sem := make(chan struct{}, 256)
	errc := make(chan error, 1)
	for i := range b.N {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			s, _, err := hub.Subscribe(ctx, subs[i], fmt.Sprintf("user:%d", i), fanout.SubscribeOptions{})
			if err != nil {
				select {
				case errc <- err:
				default:
				}
				return
			}
			held[i] = s
		}()
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	b.StopTimer()
	select {
	case err := <-errc:
		b.Fatal(err)
	default:
	}
	after := heap()
	b.ReportMetric(float64(after-before)/float64(b.N), "heap-B/channel")
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
