package fanout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
)

// callBroker wraps the memory broker and checks the hub's Subscribe/
// Unsubscribe protocol per channel: strictly alternating, starting with
// Subscribe, never overlapping.
type callBroker struct {
	*cluster.Memory
	t      *testing.T
	mu     sync.Mutex
	state  map[string]bool // subscribed at the broker
	inCall map[string]bool
	calls  int
}

func (b *callBroker) enter(ch string, sub bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inCall[ch] {
		b.t.Errorf("%s: overlapping broker calls", ch)
	}
	if b.state[ch] == sub {
		b.t.Errorf("%s: Subscribe=%v twice in a row", ch, sub)
	}
	b.inCall[ch] = true
	b.calls++
}

func (b *callBroker) leave(ch string, sub bool) {
	b.mu.Lock()
	b.inCall[ch] = false
	b.state[ch] = sub
	b.mu.Unlock()
}

func (b *callBroker) Subscribe(ctx context.Context, ch string) error {
	b.enter(ch, true)
	time.Sleep(50 * time.Microsecond) // a network round trip, shortened
	b.leave(ch, true)
	return b.Memory.Subscribe(ctx, ch)
}

func (b *callBroker) Unsubscribe(ctx context.Context, ch string) error {
	b.enter(ch, false)
	time.Sleep(50 * time.Microsecond)
	b.leave(ch, false)
	return b.Memory.Unsubscribe(ctx, ch)
}

// TestSweepBrokerProtocol churns subscriptions while the sweep retires
// idle channels every millisecond: the broker sees alternating
// Subscribe/Unsubscribe per channel, and every channel with a subscriber
// at the end is subscribed at the broker.
func TestSweepBrokerProtocol(t *testing.T) {
	mem, err := cluster.NewMemory(cluster.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b := &callBroker{Memory: mem, t: t, state: map[string]bool{}, inCall: map[string]bool{}}
	h, err := fanout.New(fanout.Config{Broker: b, UnsubscribeDelay: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mem.Attach(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()

	const workers, channels = 3, 12
	final := make([]map[string]*fanout.Subscription, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			active := map[string]*fanout.Subscription{}
			sub := newFakeSub(4)
			for range 300 {
				ch := fmt.Sprintf("c%d", rng.IntN(channels))
				if s, ok := active[ch]; ok {
					h.Unsubscribe(s)
					delete(active, ch)
				} else {
					s, _, err := h.Subscribe(context.Background(), sub, ch, fanout.SubscribeOptions{})
					if err != nil {
						t.Error(err)
						return
					}
					active[ch] = s
				}
				time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond)
			}
			final[w] = active
		}()
	}
	wg.Wait()
	time.Sleep(20 * time.Millisecond) // let sweeps run against the final state
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, active := range final {
		for ch := range active {
			if !b.state[ch] {
				t.Errorf("%s has local subscribers but is unsubscribed at the broker", ch)
			}
		}
	}
	if b.calls < 4 {
		t.Errorf("only %d broker calls: the sweep never retired a channel", b.calls)
	}
	t.Logf("%d broker calls", b.calls)
}
