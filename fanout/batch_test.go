package fanout_test

import (
	"slices"
	"testing"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
)

// TestHandleBatchOneFlush: a batch handed over at once reaches a
// subscriber in order with one flush, not one per publication.
func TestHandleBatchOneFlush(t *testing.T) {
	h, _ := newHub(t, fanout.Config{}, cluster.MemoryConfig{})
	f := newFakeSub(0)
	f.keep = true
	subscribe(t, h, f, "b", fanout.SubscribeOptions{Format: fanout.FormatRaw})
	f.mu.Lock()
	before := f.flushes
	f.mu.Unlock()
	pubs := []fanout.Publication{{Channel: "b", Data: []byte("1")}, {Channel: "b", Data: []byte("2")}, {Channel: "b", Data: []byte("3")}}
	h.HandleBatch(pubs)
	if got, want := f.payloads(t), []string{"1", "2", "3"}; !slices.Equal(got, want) {
		t.Fatalf("frames %q, want %q", got, want)
	}
	f.mu.Lock()
	flushes := f.flushes - before
	f.mu.Unlock()
	if flushes != 1 {
		t.Fatalf("%d flushes for one batch, want 1", flushes)
	}
	if st := h.Stats(); st.Published != 3 || st.Delivered != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestHandleGapInOrder: a broker-side gap reaches every subscriber between
// the publications handed before and after it, also when the subscriber's
// queue is full at the time (it is held and sent before the next push),
// and a conflating channel gets no notice.
func TestHandleGapInOrder(t *testing.T) {
	h, _ := newHub(t, fanout.Config{Policies: []fanout.PolicyRule{{Pattern: "c:*", Policy: fanout.PolicyConflate}}}, cluster.MemoryConfig{})
	a, b := newFakeSub(0), newFakeSub(0)
	a.keep, b.keep = true, true
	b.budget = 1 // one frame at a time
	subscribe(t, h, a, "g", fanout.SubscribeOptions{Format: fanout.FormatRaw})
	subscribe(t, h, b, "g", fanout.SubscribeOptions{Format: fanout.FormatRaw})
	h.HandleBatch([]fanout.Publication{{Channel: "g", Seq: 1, Epoch: "E1", Data: []byte("p1")}})
	b.mu.Lock()
	b.stalled = true // b's socket takes nothing for now and its queue is full
	b.pending = 1
	b.mu.Unlock()
	h.HandleGap("g", "E1", 2, 4)
	h.HandleGap("g", "", 0, 0) // unsequenced drops merge into the held notice
	b.drain()
	h.HandleBatch([]fanout.Publication{{Channel: "g", Seq: 5, Epoch: "E1", Data: []byte("p5")}})
	h.HandleGap("g", "", 0, 0)
	wantA := []string{"p1", `{"op":"gap","ch":"g","epoch":"E1","from":2,"to":4}`, `{"op":"gap","ch":"g","from":0,"to":0}`, "p5", `{"op":"gap","ch":"g","from":0,"to":0}`}
	if got := a.payloads(t); !slices.Equal(got, wantA) {
		t.Fatalf("a got %q, want %q", got, wantA)
	}
	wantB := []string{"p1", `{"op":"gap","ch":"g","epoch":"E1","from":2,"to":4}`, "p5", `{"op":"gap","ch":"g","from":0,"to":0}`}
	if got := b.payloads(t); !slices.Equal(got, wantB) {
		t.Fatalf("b got %q, want %q", got, wantB)
	}

	c := newFakeSub(0)
	c.keep = true
	subscribe(t, h, c, "c:1", fanout.SubscribeOptions{Format: fanout.FormatRaw})
	h.HandleGap("c:1", "E1", 1, 1)
	h.HandleBatch([]fanout.Publication{{Channel: "c:1", Seq: 2, Data: []byte("x")}})
	if got := c.payloads(t); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("conflating channel got %q", got)
	}
}
