package fanout_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
)

// TestWindowServesHeldChannels: a channel the hub holds answers subscribes
// without since, or with a since inside its window, locally (no broker
// read) with exactly the missed publications; a since before the window,
// beyond the top, of another epoch, or across a broker gap goes to the
// broker.
func TestWindowServesHeldChannels(t *testing.T) {
	h, m := newHub(t, fanout.Config{WindowSize: 4}, cluster.MemoryConfig{})
	first := newFakeSub(0)
	subscribe(t, h, first, "w", fanout.SubscribeOptions{}) // holds "w" from top 0
	for i := 1; i <= 10; i++ {
		publish(t, m, "w", strconv.Itoa(i))
	}
	// The window now holds 7..10 (WindowSize 4).
	type step struct {
		name      string
		since     *uint64
		epoch     string
		local     bool
		recovered bool
		want      []string
	}
	run := func(tc step) {
		t.Helper()
		before := h.Stats()
		f := newFakeSub(0)
		f.keep = true
		s, res := subscribe(t, h, f, "w", fanout.SubscribeOptions{Format: fanout.FormatRaw, Since: tc.since, Epoch: tc.epoch, Ack: ackFrame})
		defer h.Unsubscribe(s)
		after := h.Stats()
		local := after.LocalSubscribes - before.LocalSubscribes
		reads := after.BrokerReads - before.BrokerReads
		if tc.local && (local != 1 || reads != 0) || !tc.local && (local != 0 || reads == 0) {
			t.Errorf("%s: %d local, %d broker reads; want local=%v", tc.name, local, reads, tc.local)
		}
		if res.Recovered != tc.recovered || res.Epoch != "e1" {
			t.Errorf("%s: result %+v, want recovered %v in e1", tc.name, res, tc.recovered)
		}
		if got := f.payloads(t)[1:]; !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	for _, tc := range []step{
		{"live only", nil, "", true, true, []string{}},
		{"since at the top", u64(10), "e1", true, true, []string{}},
		{"since inside the window", u64(6), "e1", true, true, []string{"7", "8", "9", "10"}},
		{"since inside, no epoch", u64(8), "", true, true, []string{"9", "10"}},
		{"since before the window", u64(5), "e1", false, true, []string{"6", "7", "8", "9", "10"}},
		{"since beyond the top", u64(11), "e1", false, false, []string{}},
		{"another epoch, partial window", u64(8), "e0", false, false, []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}},
	} {
		run(tc)
	}

	// A broker gap (shed 11..12) restarts the window above it: a since
	// below the gap must read the broker.
	h.HandleGap("w", "e1", 11, 12)
	run(step{"since before a gap", u64(10), "e1", false, true, []string{}})
}

// TestWindowBounds: the window keeps at most WindowBytes per channel and
// WindowNodeBytes for the hub, and frees what it kept when the channel is
// retired.
func TestWindowBounds(t *testing.T) {
	h, m := newHub(t, fanout.Config{WindowSize: 100, WindowBytes: 10, WindowNodeBytes: 25, UnsubscribeDelay: 10 * time.Millisecond}, cluster.MemoryConfig{})
	for _, ch := range []string{"a", "b", "c"} {
		s, _ := subscribe(t, h, newFakeSub(16), ch, fanout.SubscribeOptions{})
		for i := 0; i < 5; i++ {
			publish(t, m, ch, "abcd") // 4 bytes: 2 fit in 10
		}
		if got := h.Stats().WindowBytes; got > 25 {
			t.Fatalf("window bytes %d over the node's 25", got)
		}
		h.Unsubscribe(s)
	}
	// a and b keep 8 bytes each; c found the node full (16+4 ≤ 25, 16+8 >
	// 25 is refused, so c keeps at most 4 bytes).
	if got := h.Stats().WindowBytes; got < 16 || got > 25 {
		t.Fatalf("window bytes %d, want 16..25", got)
	}
	// Retired channels give their windows back.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for h.Stats().WindowBytes != 0 || h.Stats().Channels != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after retiring: %+v", h.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
