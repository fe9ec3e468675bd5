package fanout_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/panjf2000/ants/v2"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
)

// TestAllocsPerPublication proves the allocation promise: a steady-state
// publication through the memory broker allocates a constant number of
// objects (the JSON frame; the raw frame when raw subscribers exist) and
// nothing per subscriber, at 1 and at 1,000 subscribers, inline and in
// pool chunks.
func TestAllocsPerPublication(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under -race")
	}
	pool, err := ants.NewPool(4, ants.WithNonblocking(true))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Release()
	payload := []byte(`{"score":[1,2],"t":"x"}`)
	for _, tc := range []struct {
		name   string
		subs   int
		chunk  int
		pool   bool
		raw    bool
		hist   int
		allocs float64
	}{
		{"subs=1", 1, 0, false, false, -1, 1},
		{"subs=1/history=100", 1, 0, false, false, 100, 1},
		{"subs=1000/inline", 1000, 1000, false, false, -1, 1},
		{"subs=1000/chunks=4", 1000, 250, true, false, -1, 1},
		{"subs=1000/chunks=4/history=100", 1000, 250, true, false, 100, 1},
		{"subs=1000/json+raw", 1000, 1000, false, true, -1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fanout.Config{ChunkSize: tc.chunk}
			if tc.pool {
				cfg.Pool = pool
			}
			// With history the broker's ring fills during the warm-up
			// (100 publications) and is reused afterwards.
			h, m := newHub(t, cfg, cluster.MemoryConfig{HistorySize: tc.hist})
			subs := make([]*fakeSub, tc.subs)
			for i := range subs {
				subs[i] = newFakeSub(64)
				f := fanout.FormatJSON
				if tc.raw && i%2 == 1 {
					f = fanout.FormatRaw
				}
				subscribe(t, h, subs[i], "ch", fanout.SubscribeOptions{Format: f})
			}
			ctx := context.Background()
			var published uint64
			pub := func() {
				if _, err := m.Publish(ctx, "ch", payload); err != nil {
					t.Fatal(err)
				}
				// Chunked channels deliver on the pool: wait for the
				// batch so each run measures one whole publication.
				published++
				for h.Stats().Delivered < published*uint64(tc.subs) {
					runtime.Gosched()
				}
			}
			for range 100 {
				pub()
			}
			got := testing.AllocsPerRun(200, pub)
			if got != tc.allocs {
				t.Errorf("allocs per publication = %v, want %v", got, tc.allocs)
			}
			// AllocsPerRun makes one extra warm-up call.
			want := uint64(301 * tc.subs)
			if d := h.Stats().Delivered; d != want {
				t.Errorf("delivered %d, want %d", d, want)
			}
			for i, s := range subs {
				if s.n != 301 {
					t.Fatalf("subscriber %d got %d frames, want 301", i, s.n)
				}
			}
		})
	}
}

// BenchmarkPublish measures one publication to n local subscribers
// through the memory broker (subscribers are fakes that record a
// reference: this is the hub's own cost, without syscalls).
func BenchmarkPublish(b *testing.B) {
	pool, err := ants.NewPool(64, ants.WithNonblocking(true))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Release()
	payload := []byte(`{"score":[1,2],"t":"x","pad":"0123456789abcdef"}`)
	for _, n := range []int{1, 100, 1000, 10000} {
		for _, chunked := range []bool{false, true} {
			if chunked && n < 1000 {
				continue
			}
			name := fmt.Sprintf("subs=%d/chunks=%v", n, chunked)
			b.Run(name, func(b *testing.B) {
				cfg := fanout.Config{ChunkSize: n}
				if chunked {
					cfg.Pool, cfg.ChunkSize = pool, 512
				}
				h, m := newHub(b, cfg, cluster.MemoryConfig{HistorySize: -1})
				var left atomic.Int64
				done := make(chan struct{}, 1)
				for range n {
					f := newFakeSub(8)
					f.left, f.done = &left, done
					subscribe(b, h, f, "ch", fanout.SubscribeOptions{})
				}
				ctx := context.Background()
				b.ReportAllocs()
				b.SetBytes(int64(len(payload)))
				for b.Loop() {
					// Each op is one publication delivered to every
					// subscriber: chunked channels deliver on the pool,
					// so wait (blocked, not spinning) for the last one.
					left.Store(int64(n))
					if _, err := m.Publish(ctx, "ch", payload); err != nil {
						b.Fatal(err)
					}
					<-done
				}
				b.ReportMetric(float64(n), "subs/op")
			})
		}
	}
}

// BenchmarkPublishReference is the floor BenchmarkPublish is judged
// against in the same run: one pre-encoded frame queued and flushed to n
// fake subscribers by a plain loop (no broker, no hub, no encoding).
func BenchmarkPublishReference(b *testing.B) {
	frame := []byte(`{"ch":"ch","seq":1,"data":{"score":[1,2],"t":"x","pad":"0123456789abcdef"}}`)
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			subs := make([]*fakeSub, n)
			for i := range subs {
				subs[i] = newFakeSub(8)
			}
			b.ReportAllocs()
			for b.Loop() {
				for _, s := range subs {
					_ = s.Queue(frame)
					s.Flush()
				}
			}
		})
	}
}

// BenchmarkPublishParallel publishes from GOMAXPROCS goroutines over 256
// channels with 10 subscribers each.
func BenchmarkPublishParallel(b *testing.B) {
	h, m := newHub(b, fanout.Config{}, cluster.MemoryConfig{HistorySize: -1})
	const nch = 256
	names := make([]string, nch)
	for i := range names {
		names[i] = fmt.Sprintf("topic:%d", i)
		for range 10 {
			subscribe(b, h, newFakeSub(8), names[i], fanout.SubscribeOptions{})
		}
	}
	payload := []byte(`{"v":1}`)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := m.Publish(ctx, names[i%nch], payload); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
