package fanout_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/ants/v2"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
)

// TestObserveDelivery: the hook runs once per delivered batch with the
// subscriber count and a positive duration, inline and in pool chunks,
// and a steady-state publication with it set still allocates only its
// frame.
func TestObserveDelivery(t *testing.T) {
	pool, err := ants.NewPool(4, ants.WithNonblocking(true))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Release()
	for _, tc := range []struct {
		name  string
		subs  int
		chunk int
	}{
		{"inline", 3, 0},
		{"chunks", 1000, 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls, subsSeen, badDur atomic.Int64
			cfg := fanout.Config{ChunkSize: tc.chunk, Pool: pool, ObserveDelivery: func(d time.Duration, n int) {
				calls.Add(1)
				subsSeen.Store(int64(n))
				if d <= 0 {
					badDur.Add(1)
				}
			}}
			h, m := newHub(t, cfg, cluster.MemoryConfig{HistorySize: -1})
			for range tc.subs {
				subscribe(t, h, newFakeSub(64), "ch", fanout.SubscribeOptions{})
			}
			payload := []byte(`{"a":1}`)
			var published uint64
			pub := func() {
				if _, err := m.Publish(context.Background(), "ch", payload); err != nil {
					t.Fatal(err)
				}
				published++
				for h.Stats().Delivered < published*uint64(tc.subs) {
					runtime.Gosched()
				}
			}
			for range 10 {
				pub()
			}
			// One publication at a time, each awaited: one batch each.
			// The hook runs after the batch's deliveries are counted, so
			// its last call may still be on its way.
			for deadline := time.Now().Add(5 * time.Second); calls.Load() < 10 && time.Now().Before(deadline); {
				runtime.Gosched()
			}
			if calls.Load() != 10 || subsSeen.Load() != int64(tc.subs) || badDur.Load() != 0 {
				t.Fatalf("calls %d (want 10), subscribers %d (want %d), non-positive durations %d",
					calls.Load(), subsSeen.Load(), tc.subs, badDur.Load())
			}
			if raceEnabled {
				return // allocation counts are not exact under -race
			}
			for range 100 {
				pub()
			}
			if got := testing.AllocsPerRun(200, pub); got != 1 {
				t.Errorf("allocs per publication with ObserveDelivery = %v, want 1", got)
			}
		})
	}
}
