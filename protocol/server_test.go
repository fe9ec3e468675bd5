package protocol

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/poller"
)

// startStack runs the whole server stack in this process (poller +
// protocol + hub + memory broker) on 127.0.0.1:0, so -race sees the
// poller's drain goroutines, the hub's pool tasks and the handler hooks
// together.
func startStack(t *testing.T, pending int, policies []fanout.PolicyRule) (string, *fanout.Hub, *cluster.Memory) {
	t.Helper()
	mem, err := cluster.NewMemory(cluster.MemoryConfig{HistorySize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := fanout.New(fanout.Config{Broker: mem, ChunkSize: 4, Policies: policies})
	if err != nil {
		t.Fatal(err)
	}
	mem.Attach(hub)
	h, err := New(Config{Hub: hub})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := poller.New(poller.Config{Backend: os.Getenv("PUSHD_POLLER"), MaxPendingBytes: pending, Tick: 10 * time.Millisecond}, h)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return")
		}
	})
	return "ws://" + addr.String(), hub, mem
}

func wsDial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wsOp(t *testing.T, c *websocket.Conn, op string) map[string]any {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(op)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// TestStackInProcess: readers on a chunked channel get every push in
// order while a non-reading client is disconnected with 4001, and drop /
// conflate subscribers resume through the poller's Drained hook.
func TestStackInProcess(t *testing.T) {
	base, hub, mem := startStack(t, 64<<10, []fanout.PolicyRule{
		{Pattern: "feed:*", Policy: fanout.PolicyDrop}, {Pattern: "game:*", Policy: fanout.PolicyConflate},
	})
	const readers, msgs = 12, 150
	pad := strings.Repeat("p", 32<<10) // 150 × 3 × 32 KiB: far past loopback socket buffers

	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		var c *websocket.Conn
		if i%2 == 0 {
			c = wsDial(t, base+"/ws?ch=room")
			if m := wsOp(t, c, `{"op":"ping"}`); m["op"] != "pong" {
				t.Fatalf("ping: %v", m)
			}
		} else {
			c = wsDial(t, base+"/ws")
			if m := wsOp(t, c, `{"op":"sub","ch":"room"}`); m["op"] != "subok" {
				t.Fatalf("sub: %v", m)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for want := uint64(1); want <= msgs; want++ {
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, b, err := c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("reader %d at %d: %w", i, want, err)
					return
				}
				var m struct {
					Seq uint64 `json:"seq"`
				}
				if json.Unmarshal(b, &m) != nil || m.Seq != want {
					errs <- fmt.Errorf("reader %d: %.60s, want seq %d", i, b, want)
					return
				}
			}
		}()
	}
	stuck := wsDial(t, base+"/ws?ch=room,feed:1,game:1")
	wsOp(t, stuck, `{"op":"ping"}`)

	ctx := context.Background()
	for i := 1; i <= msgs; i++ {
		for _, ch := range []string{"room", "feed:1", "game:1"} {
			if _, err := mem.Publish(ctx, ch, fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, pad)); err != nil {
				t.Fatal(err)
			}
		}
		if i%10 == 0 {
			time.Sleep(2 * time.Millisecond) // let the readers keep up
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := hub.Stats()
	if st.SlowDisconnects != 1 {
		t.Errorf("SlowDisconnects = %d, want 1 (the client that never read)", st.SlowDisconnects)
	}
	t.Logf("stats %+v", st)

	// A drop and a conflate subscriber that stop reading, then catch up.
	lag := wsDial(t, base+"/ws?ch=feed:2,game:2")
	wsOp(t, lag, `{"op":"ping"}`)
	for i := 1; i <= msgs; i++ {
		_, _ = mem.Publish(ctx, "feed:2", fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, pad))
		_, _ = mem.Publish(ctx, "game:2", fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, pad))
	}
	next := map[string]uint64{"feed:2": 1, "game:2": 1}
	for next["feed:2"] <= msgs || next["game:2"] <= msgs {
		_ = lag.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := lag.ReadMessage()
		if err != nil {
			t.Fatalf("lagging client: %v (next %v)", err, next)
		}
		var m struct {
			Op, Ch        string
			Seq, From, To uint64
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Op == "gap" && m.Ch == "feed:2" && m.From == next[m.Ch] && m.To >= m.From:
			next[m.Ch] = m.To + 1
		case m.Op == "" && m.Ch == "feed:2" && m.Seq == next[m.Ch]:
			next[m.Ch]++
		case m.Op == "" && m.Ch == "game:2" && m.Seq >= next[m.Ch]:
			next[m.Ch] = m.Seq + 1
		default:
			t.Fatalf("lagging client got %.80s with next %v", b, next)
		}
	}
	st = hub.Stats()
	if st.Dropped == 0 || st.GapNotices == 0 || st.Conflated == 0 {
		t.Errorf("the lagging client was never slow: %+v", st)
	}
}
