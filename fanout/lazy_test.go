package fanout

import (
	"context"
	"testing"

	"github.com/gobwas/ws"
)

// lazyBroker is a Broker whose channels are at top 0 of epoch "e".
type lazyBroker struct{}

func (lazyBroker) Publish(context.Context, string, []byte) (uint64, error) { return 0, nil }
func (lazyBroker) Subscribe(context.Context, string) error                 { return nil }
func (lazyBroker) Unsubscribe(context.Context, string) error               { return nil }
func (lazyBroker) History(context.Context, string, *uint64) (HistoryResult, error) {
	return HistoryResult{Epoch: "e", Recovered: true}, nil
}

// lazySub takes up to room frames.
type lazySub struct{ room, queued int }

func (s *lazySub) Queue([]byte) error {
	if s.queued >= s.room {
		return ErrQueueFull
	}
	s.queued++
	return nil
}
func (*lazySub) Flush()                            {}
func (*lazySub) Close(ws.StatusCode, string) error { return nil }

// TestLazyChannelState: an idle channel and a subscription that never
// overflowed carry no mailbox, delivery scratch, window ring or held
// state (issue 18); each is allocated on first use, and the held state is
// emptied, not freed, once queued, and dropped by Unsubscribe.
func TestLazyChannelState(t *testing.T) {
	h, err := New(Config{Broker: lazyBroker{}, Policies: []PolicyRule{{Pattern: "slow", Policy: PolicyConflate}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sub := &lazySub{room: 100}
	s, _, err := h.Subscribe(ctx, sub, "idle", SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := s.ch
	c.mu.Lock()
	if !c.held || c.dl != nil || c.win != nil {
		t.Errorf("idle channel: held %v dl %p win %p, want held and nothing allocated", c.held, c.dl, c.win)
	}
	c.mu.Unlock()

	h.HandlePublication(Publication{Channel: "idle", Epoch: "e", Seq: 1, Data: []byte(`{}`)})
	c.mu.Lock()
	if c.dl == nil || c.win == nil || c.win.n != 1 || c.winBase != 0 || c.lastSeq != 1 {
		t.Errorf("after one publication: dl %p win %+v winBase %d lastSeq %d", c.dl, c.win, c.winBase, c.lastSeq)
	}
	c.mu.Unlock()
	s.mu.Lock()
	if sub.queued != 1 || s.held || s.hold != nil {
		t.Errorf("queued %d held %v hold %+v, want 1 frame and nothing held", sub.queued, s.held, s.hold)
	}
	s.mu.Unlock()

	slow := &lazySub{room: 1}
	ss, _, err := h.Subscribe(ctx, slow, "slow", SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.HandlePublication(Publication{Channel: "slow", Epoch: "e", Seq: 1, Data: []byte(`1`)})
	h.HandlePublication(Publication{Channel: "slow", Epoch: "e", Seq: 2, Data: []byte(`2`)})
	ss.mu.Lock()
	if !ss.held || ss.hold == nil || ss.hold.latest == nil {
		t.Errorf("conflated: held %v hold %+v, want the latest frame held", ss.held, ss.hold)
	}
	ss.mu.Unlock()
	slow.queued = 0 // the subscriber drained its queue
	if !h.Resume(ss) {
		t.Fatal("Resume queued nothing")
	}
	ss.mu.Lock()
	if hs := ss.hold; ss.held || hs == nil || hs.latest != nil || hs.gapFrom != 0 || hs.gapTo != 0 || hs.gapEpoch != "" {
		t.Errorf("after Resume: held %v hold %+v, want kept and empty", ss.held, ss.hold)
	}
	ss.mu.Unlock()
	h.Unsubscribe(ss)
	ss.mu.Lock()
	if ss.hold != nil {
		t.Errorf("after Unsubscribe: hold %+v, want nil", ss.hold)
	}
	ss.mu.Unlock()
	h.Unsubscribe(s)
}
