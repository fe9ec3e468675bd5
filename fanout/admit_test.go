package fanout_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/ants/v2"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
)

// blockingSub blocks its first Queue until release is closed: it stands
// for a fan-out that is behind its publishers.
type blockingSub struct {
	entered chan struct{}
	release chan struct{}
	first   bool
}

func (b *blockingSub) Queue([]byte) error {
	if !b.first {
		b.first = true
		close(b.entered)
		<-b.release
	}
	return nil
}
func (b *blockingSub) Flush()                            {}
func (b *blockingSub) Close(ws.StatusCode, string) error { return nil }

// TestAdmitBackpressure: while a channel's delivery is stuck, its mailbox
// fills to MaxMailboxBytes and further publishes fail fast with
// cluster.ErrOverloaded (no unbounded buffering, no silent loss); once
// delivery resumes publishing is admitted again and nothing admitted was
// lost.
func TestAdmitBackpressure(t *testing.T) {
	pool, err := ants.NewPool(4, ants.WithNonblocking(true))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Release()
	h, m := newHub(t, fanout.Config{Pool: pool, ChunkSize: 1, MaxMailboxBytes: 4 << 10}, cluster.MemoryConfig{HistorySize: -1})
	blk := &blockingSub{entered: make(chan struct{}), release: make(chan struct{})}
	rec := newFakeSub(0)
	rec.keep = true
	subscribe(t, h, blk, "hot", fanout.SubscribeOptions{})
	subscribe(t, h, rec, "hot", fanout.SubscribeOptions{})
	ctx := context.Background()
	msg := make([]byte, 1<<10)
	if _, err := m.Publish(ctx, "hot", msg); err != nil {
		t.Fatal(err)
	}
	<-blk.entered // the delivery task is stuck in the first batch
	admitted := 1
	var refused error
	for range 10 {
		if _, err := m.Publish(ctx, "hot", msg); err != nil {
			refused = err
			break
		}
		admitted++
	}
	if !errors.Is(refused, cluster.ErrOverloaded) || admitted != 5 {
		t.Fatalf("admitted %d then %v; want 5 (1 in flight + 4 KiB mailbox) then ErrOverloaded", admitted, refused)
	}
	if h.Stats().Refused != 1 {
		t.Errorf("Refused = %d, want 1", h.Stats().Refused)
	}
	close(blk.release)
	deadline := time.Now().Add(5 * time.Second)
	for h.Stats().Delivered < uint64(2*admitted) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := m.Publish(ctx, "hot", msg); err != nil {
		t.Fatalf("publish after the fan-out caught up: %v", err)
	}
	admitted++
	for h.Stats().Delivered < uint64(2*admitted) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.log) != admitted {
		t.Fatalf("recorder got %d pushes, want every admitted one (%d)", len(rec.log), admitted)
	}
	for i, b := range rec.log {
		if frameSeq(framePayload(t, b)) != uint64(i+1) {
			t.Fatalf("push %d has seq %d", i, frameSeq(framePayload(t, b)))
		}
	}
}

// TestBurstLargerThanBudget: a batch (or a recovered history) bigger than
// a subscriber's byte budget must not count as slowness when the
// subscriber's socket takes everything on flush: the hub flushes and
// retries before applying the policy.
func TestBurstLargerThanBudget(t *testing.T) {
	pool, err := ants.NewPool(4, ants.WithNonblocking(true))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Release()
	h, m := newHub(t, fanout.Config{Pool: pool, ChunkSize: 1}, cluster.MemoryConfig{HistorySize: 100})
	ctx := context.Background()
	msg := make([]byte, 1<<10)
	for range 20 {
		if _, err := m.Publish(ctx, "burst", msg); err != nil {
			t.Fatal(err)
		}
	}
	// Recovery: 20 KiB of history into a 4 KiB budget.
	rec := newFakeSub(0)
	rec.keep, rec.budget = true, 4<<10
	subscribe(t, h, rec, "burst", fanout.SubscribeOptions{Since: u64(0), Ack: ackFrame})
	// A live batch of 20 while the delivery task is held up by another
	// subscriber.
	blk := &blockingSub{entered: make(chan struct{}), release: make(chan struct{})}
	subscribe(t, h, blk, "burst", fanout.SubscribeOptions{})
	if _, err := m.Publish(ctx, "burst", msg); err != nil {
		t.Fatal(err)
	}
	<-blk.entered
	for range 20 {
		if _, err := m.Publish(ctx, "burst", msg); err != nil {
			t.Fatal(err)
		}
	}
	close(blk.release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.log)
		rec.mu.Unlock()
		if n == 1+41 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if rec.closed {
		t.Fatal("a subscriber that takes everything on flush was disconnected as slow")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.log) != 1+41 {
		t.Fatalf("got %d frames, want the reply + 41 pushes", len(rec.log))
	}
	for i, b := range rec.log[1:] {
		if frameSeq(framePayload(t, b)) != uint64(i+1) {
			t.Fatalf("push %d has seq %d", i, frameSeq(framePayload(t, b)))
		}
	}
	if st := h.Stats(); st.SlowDisconnects != 0 {
		t.Errorf("SlowDisconnects = %d", st.SlowDisconnects)
	}
}
