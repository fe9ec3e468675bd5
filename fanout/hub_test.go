package fanout_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/ants/v2"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/codec"
	"github.com/pushd/pushd/fanout"
)

func TestMatchPattern(t *testing.T) {
	for _, tc := range []struct {
		pat, name string
		want      bool
	}{
		{"*", "", true}, {"*", "anything:at/all", true},
		{"game:*", "game:1", true}, {"game:*", "game:", true}, {"game:*", "gam", false},
		{"game:*", "xgame:1", false}, {"*:live", "score:live", true}, {"*:live", "score:liv", false},
		{"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false}, {"a?c", "abc", true},
		{"a?c", "ac", false}, {"exact", "exact", true}, {"exact", "exact2", false},
		{"**", "x", true}, {"a*", "a", true},
	} {
		if got := fanout.MatchPattern(tc.pat, tc.name); got != tc.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", tc.pat, tc.name, got, tc.want)
		}
	}
}

func TestEncoding(t *testing.T) {
	h, m := newHub(t, fanout.Config{}, cluster.MemoryConfig{})
	js, raw := newFakeSub(0), newFakeSub(0)
	js.keep, raw.keep = true, true
	subscribe(t, h, js, `we"ird\ch`, fanout.SubscribeOptions{})
	subscribe(t, h, raw, `we"ird\ch`, fanout.SubscribeOptions{Format: fanout.FormatRaw})
	for _, p := range []string{`{"hi":1}`, `not json`, "tab\tand\x01ctl\xff", `[1, 2]`, ``, `"s"`} {
		publish(t, m, `we"ird\ch`, p)
	}
	got := js.payloads(t)
	if len(got) != 6 {
		t.Fatalf("json subscriber got %d frames, want 6", len(got))
	}
	// Not valid UTF-8: base64 with "b64":true, byte-exact.
	wantData := []any{map[string]any{"hi": 1.0}, "not json", base64.StdEncoding.EncodeToString([]byte("tab\tand\x01ctl\xff")), []any{1.0, 2.0}, "", "s"}
	for i, g := range got {
		var push struct {
			Ch   string `json:"ch"`
			Seq  uint64 `json:"seq"`
			Data any    `json:"data"`
			B64  bool   `json:"b64"`
		}
		if err := json.Unmarshal([]byte(g), &push); err != nil {
			t.Fatalf("frame %d %q is not JSON: %v", i, g, err)
		}
		if push.Ch != `we"ird\ch` || push.Seq != uint64(i+1) || fmt.Sprint(push.Data) != fmt.Sprint(wantData[i]) || push.B64 != (i == 2) {
			t.Errorf("frame %d = %+v, want seq %d data %v b64 %v", i, push, i+1, wantData[i], i == 2)
		}
	}
	if got[0] != `{"ch":"we\"ird\\ch","epoch":"e1","seq":1,"data":{"hi":1}}` {
		t.Errorf("verbatim JSON embedding: %s", got[0])
	}
	raw.mu.Lock()
	defer raw.mu.Unlock()
	if len(raw.log) != 6 {
		t.Fatalf("raw subscriber got %d frames", len(raw.log))
	}
	h2, _, _ := codec.ParseHeader(raw.log[2])
	h0, _, _ := codec.ParseHeader(raw.log[0])
	if h0.OpCode != ws.OpText || h2.OpCode != ws.OpBinary {
		t.Errorf("raw opcodes: %v (utf-8) %v (invalid utf-8), want text, binary", h0.OpCode, h2.OpCode)
	}
	if p := string(framePayload(t, raw.log[2])); p != "tab\tand\x01ctl\xff" {
		t.Errorf("raw payload %q", p)
	}
}

func TestSubscribeAckFirstAndRecovery(t *testing.T) {
	h, m := newHub(t, fanout.Config{}, cluster.MemoryConfig{HistorySize: 3})
	// Publish before anyone subscribes (QR login).
	for i := 1; i <= 5; i++ {
		publish(t, m, "login:1", fmt.Sprintf(`%d`, i))
	}
	for _, tc := range []struct {
		name  string
		since *uint64
		want  []string
	}{
		{"live", nil, []string{"subok:5:true"}},
		{"since0-truncated", u64(0), []string{"subok:5:false", "3", "4", "5"}},
		{"since2", u64(2), []string{"subok:5:true", "3", "4", "5"}},
		{"since4", u64(4), []string{"subok:5:true", "5"}},
		{"since5", u64(5), []string{"subok:5:true"}},
		{"future", u64(9), []string{"subok:5:false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeSub(0)
			f.keep = true
			s, res := subscribe(t, h, f, "login:1", fanout.SubscribeOptions{Format: fanout.FormatRaw, Since: tc.since, Ack: ackFrame})
			defer h.Unsubscribe(s)
			if res.Seq != 5 {
				t.Errorf("Seq = %d, want 5", res.Seq)
			}
			if got := f.payloads(t); !slices.Equal(got, tc.want) {
				t.Errorf("frames %q, want %q", got, tc.want)
			}
		})
	}
	// Live path after recovery: no duplicate, no gap.
	f := newFakeSub(0)
	f.keep = true
	s, _ := subscribe(t, h, f, "login:1", fanout.SubscribeOptions{Format: fanout.FormatRaw, Since: u64(3), Ack: ackFrame})
	publish(t, m, "login:1", "6")
	h.Unsubscribe(s)
	publish(t, m, "login:1", "7")
	if got, want := f.payloads(t), []string{"subok:5:true", "4", "5", "6"}; !slices.Equal(got, want) {
		t.Errorf("frames %q, want %q", got, want)
	}
	st := h.Stats()
	if st.Subscriptions != 0 || st.Channels != 1 || st.Published != 7 {
		t.Errorf("stats %+v", st)
	}
}

func TestUnknownChannelAndFreshSubscribe(t *testing.T) {
	h, m := newHub(t, fanout.Config{}, cluster.MemoryConfig{})
	f := newFakeSub(0)
	f.keep = true
	_, res := subscribe(t, h, f, "fresh", fanout.SubscribeOptions{Since: u64(0), Ack: ackFrame})
	if res.Seq != 0 || !res.Recovered {
		t.Errorf("fresh channel result %+v", res)
	}
	publish(t, m, "fresh", "1")
	// A second subscriber takes the fast path (the hub saw seq 1).
	g := newFakeSub(0)
	g.keep = true
	_, res = subscribe(t, h, g, "fresh", fanout.SubscribeOptions{Format: fanout.FormatRaw, Ack: ackFrame})
	if res.Seq != 1 {
		t.Errorf("fast path Seq = %d, want 1", res.Seq)
	}
	publish(t, m, "fresh", "2")
	if got := g.payloads(t); !slices.Equal(got, []string{"subok:1:true", "2"}) {
		t.Errorf("fast path frames %q", got)
	}
	if got := f.payloads(t); len(got) != 3 || got[0] != "subok:0:true" || frameSeq([]byte(got[2])) != 2 {
		t.Errorf("first subscriber frames %q", got)
	}
}

func TestPolicies(t *testing.T) {
	cfg := fanout.Config{Policies: []fanout.PolicyRule{
		{Pattern: "feed:*", Policy: fanout.PolicyDrop},
		{Pattern: "game:*", Policy: fanout.PolicyConflate},
	}}
	h, m := newHub(t, cfg, cluster.MemoryConfig{})
	frameLen := len(codec.CompileFrame(ws.OpText, []byte("m1")))

	t.Run("disconnect", func(t *testing.T) {
		f := newFakeSub(0)
		f.budget, f.stalled = 2*frameLen, true
		subscribe(t, h, f, "news", fanout.SubscribeOptions{Format: fanout.FormatRaw})
		before := h.Stats().SlowDisconnects
		for i := 1; i <= 4; i++ {
			publish(t, m, "news", fmt.Sprintf("m%d", i))
		}
		if !f.closed || f.code != fanout.StatusSlowConsumer {
			t.Fatalf("closed=%v code=%d, want closed with 4001", f.closed, f.code)
		}
		if d := h.Stats().SlowDisconnects - before; d != 1 {
			t.Errorf("SlowDisconnects delta %d, want 1", d)
		}
	})
	pad := func(i int) string { return fmt.Sprintf("m%d%s", i, strings.Repeat(".", 38)) }
	t.Run("drop", func(t *testing.T) {
		f := newFakeSub(0)
		f.keep, f.budget, f.stalled = true, 100, true
		s, _ := subscribe(t, h, f, "feed:1", fanout.SubscribeOptions{Format: fanout.FormatRaw})
		for i := 1; i <= 5; i++ {
			publish(t, m, "feed:1", pad(i))
		}
		f.drain()
		if !h.Resume(s) {
			t.Fatal("Resume queued nothing")
		}
		f.Flush()
		publish(t, m, "feed:1", pad(6))
		want := []string{pad(1), pad(2), `{"op":"gap","ch":"feed:1","epoch":"e1","from":3,"to":5}`, pad(6)}
		if got := f.payloads(t); !slices.Equal(got, want) {
			t.Errorf("frames %q, want %q", got, want)
		}
		if st := h.Stats(); st.Dropped != 3 || st.GapNotices != 1 {
			t.Errorf("Dropped %d GapNotices %d, want 3, 1", st.Dropped, st.GapNotices)
		}
	})
	t.Run("drop-next-publication", func(t *testing.T) {
		f := newFakeSub(0)
		f.keep, f.budget, f.stalled = true, 100, true
		subscribe(t, h, f, "feed:2", fanout.SubscribeOptions{Format: fanout.FormatRaw})
		for i := 1; i <= 3; i++ {
			publish(t, m, "feed:2", pad(i))
		}
		f.drain() // no Resume: the next publication sends the gap first
		publish(t, m, "feed:2", pad(4))
		want := []string{pad(1), pad(2), `{"op":"gap","ch":"feed:2","epoch":"e1","from":3,"to":3}`, pad(4)}
		if got := f.payloads(t); !slices.Equal(got, want) {
			t.Errorf("frames %q, want %q", got, want)
		}
	})
	t.Run("conflate", func(t *testing.T) {
		f := newFakeSub(0)
		f.keep, f.budget, f.stalled = true, frameLen, true
		s, _ := subscribe(t, h, f, "game:1", fanout.SubscribeOptions{Format: fanout.FormatRaw})
		for i := 1; i <= 5; i++ {
			publish(t, m, "game:1", fmt.Sprintf("m%d", i))
		}
		f.drain()
		if !h.Resume(s) {
			t.Fatal("Resume queued nothing")
		}
		if h.Resume(s) {
			t.Error("second Resume queued again")
		}
		if got, want := f.payloads(t), []string{"m1", "m5"}; !slices.Equal(got, want) {
			t.Errorf("frames %q, want %q", got, want)
		}
		if st := h.Stats(); st.Conflated != 4 {
			t.Errorf("Conflated %d, want 4", st.Conflated)
		}
	})
}

func TestChunkedFanoutOrder(t *testing.T) {
	pool, err := ants.NewPool(8, ants.WithNonblocking(true))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Release()
	h, m := newHub(t, fanout.Config{Pool: pool, ChunkSize: 16, MaxChunks: 64}, cluster.MemoryConfig{})
	const nsubs, npubs = 300, 200
	subs := make([]*fakeSub, nsubs)
	for i := range subs {
		subs[i] = newFakeSub(0)
		subs[i].keep = true
		f := fanout.FormatJSON
		if i%3 == 0 {
			f = fanout.FormatRaw
		}
		subscribe(t, h, subs[i], "big", fanout.SubscribeOptions{Format: f})
	}
	for i := 1; i <= npubs; i++ {
		publish(t, m, "big", fmt.Sprintf(`{"n":%d}`, i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.Stats().Delivered < nsubs*npubs && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for i, f := range subs {
		got := f.payloads(t)
		if len(got) != npubs {
			t.Fatalf("sub %d got %d frames, want %d", i, len(got), npubs)
		}
		for j, p := range got {
			want := fmt.Sprintf(`{"n":%d}`, j+1)
			if i%3 != 0 {
				want = fmt.Sprintf(`{"ch":"big","epoch":"e1","seq":%d,"data":{"n":%d}}`, j+1, j+1)
			}
			if p != want {
				t.Fatalf("sub %d frame %d = %s, want %s", i, j, p, want)
			}
		}
	}
}

func TestHubRunSweepsIdleChannels(t *testing.T) {
	h, m := newHub(t, fanout.Config{UnsubscribeDelay: 20 * time.Millisecond}, cluster.MemoryConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	s, _ := subscribe(t, h, newFakeSub(4), "tmp", fanout.SubscribeOptions{})
	publish(t, m, "tmp", "1")
	h.Unsubscribe(s)
	deadline := time.Now().Add(5 * time.Second)
	for h.Stats().Channels != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := h.Stats().Channels; n != 0 {
		t.Errorf("Channels = %d after the unsubscribe delay, want 0", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := h.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Subscribe(context.Background(), newFakeSub(1), "x", fanout.SubscribeOptions{}); err != fanout.ErrHubClosed {
		t.Errorf("Subscribe after Shutdown: %v", err)
	}
}
