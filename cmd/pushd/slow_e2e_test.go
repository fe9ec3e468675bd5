package main_test

// Slow consumers through the real poller and the built binary: a client
// that stops reading meets its channel's policy (disconnect with 4001,
// drop + gap notice, conflate to the latest) while a reading client of the
// same channel receives everything; /stats counts every action.

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/internal/pushdtest"
)

const (
	slowMsgs    = 300
	slowPayload = 32 << 10 // 300 × 32 KiB ≈ 9.4 MiB: far beyond loopback socket buffers
)

func bigPayload(i int) string {
	return fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", slowPayload))
}

// readAll reads n pushes of ch in a goroutine and reports the seqs; got
// counts them as they arrive.
func readAll(t *testing.T, c *websocket.Conn, n int, got *atomic.Int64) <-chan []uint64 {
	t.Helper()
	out := make(chan []uint64, 1)
	go func() {
		defer got.Store(1 << 40) // unblock a waiting publisher
		var seqs []uint64
		for len(seqs) < n {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil {
				break
			}
			var m push
			if json.Unmarshal(b, &m) == nil && m.Op == "" {
				seqs = append(seqs, m.Seq)
				got.Add(1)
			}
		}
		out <- seqs
	}()
	return out
}

func checkContiguous(t *testing.T, who string, seqs []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(seqs)) != to-from+1 {
		t.Fatalf("%s got %d pushes, want %d", who, len(seqs), to-from+1)
	}
	for i, s := range seqs {
		if s != from+uint64(i) {
			t.Fatalf("%s push %d has seq %d, want %d", who, i, s, from+uint64(i))
		}
	}
}

func TestSlowConsumerPolicies(t *testing.T) {
	bin := pushdtest.Build(t)
	// The 4001 close frame waits behind the slow client's unread queue
	// until the client reads; -close-timeout bounds that wait. The client
	// starts reading only after the whole burst (seconds on a busy
	// machine), so give it ample time: with the default 2 s it found TCP
	// closed (1006) in a loaded CI run. The write timeout likewise: the
	// kicked client's socket stays full until it reads.
	p := pushdtest.Start(t, bin, pushdtest.Options{Args: []string{
		"-max-pending", "262144", "-policy", "feed:*=drop,game:*=conflate",
		"-close-timeout", "30s", "-write-timeout", "60s",
	}})

	t.Run("disconnect", func(t *testing.T) {
		slow := dial(t, p, "/ws?ch=news")
		fast := dial(t, p, "/ws?ch=news")
		ready(t, slow)
		ready(t, fast)
		var n atomic.Int64
		got := readAll(t, fast, slowMsgs, &n)
		for i := 1; i <= slowMsgs; i++ {
			// Keep the reading client within a few messages (it may be
			// slow itself under -race); the other one never reads.
			for n.Load() < int64(i-4) {
				time.Sleep(time.Millisecond)
			}
			mustPublish(t, p, "news", bigPayload(i))
		}
		checkContiguous(t, "reading client", <-got, 1, slowMsgs)
		waitStat(t, p, "slow_disconnects", func(v float64) bool { return v == 1 })
		// The slow client finds the close after what was queued before it.
		var closeErr error
		for closeErr == nil {
			_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _, closeErr = slow.ReadMessage()
		}
		if ce, ok := closeErr.(*websocket.CloseError); ok && ce.Code != 4001 {
			t.Errorf("slow client closed with %d, want 4001", ce.Code)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			c := stats(t, p)["closed_by_code"].(map[string]any)["4001"]
			if c == 1.0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("closed_by_code[4001] = %v, want 1", c)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("drop", func(t *testing.T) {
		slow := dial(t, p, "/ws?ch=feed:1")
		ready(t, slow)
		for i := 1; i <= slowMsgs; i++ {
			mustPublish(t, p, "feed:1", bigPayload(i))
		}
		// Read everything: pushes and gap notices together must name every
		// seq 1..slowMsgs exactly once, in order.
		var next uint64 = 1
		gaps := 0
		for next <= slowMsgs {
			_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, b, err := slow.ReadMessage()
			if err != nil {
				t.Fatalf("read after %d: %v (gaps %d)", next-1, err, gaps)
			}
			var m struct {
				push
				From uint64 `json:"from"`
				To   uint64 `json:"to"`
			}
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			switch m.Op {
			case "gap":
				if m.From != next || m.To < m.From {
					t.Fatalf("gap %d-%d, want from %d", m.From, m.To, next)
				}
				gaps++
				next = m.To + 1
			case "":
				if m.Seq != next {
					t.Fatalf("push seq %d, want %d", m.Seq, next)
				}
				next++
			default:
				t.Fatalf("unexpected %s", b)
			}
		}
		if gaps == 0 {
			t.Fatal("no gap notice: the client was never slow (raise slowMsgs)")
		}
		seq := mustPublish(t, p, "feed:1", `"after"`)
		expectPush(t, slow, "feed:1", seq, `"after"`)
		st := stats(t, p)
		if st["dropped"].(float64) < 1 || st["gap_notices"].(float64) != float64(gaps) {
			t.Errorf("dropped %v gap_notices %v, client saw %d gaps", st["dropped"], st["gap_notices"], gaps)
		}
	})

	t.Run("conflate", func(t *testing.T) {
		slow := dial(t, p, "/ws?ch=game:1")
		ready(t, slow)
		for i := 1; i <= slowMsgs; i++ {
			mustPublish(t, p, "game:1", bigPayload(i))
		}
		// Increasing seqs, and the latest state arrives.
		var last uint64
		n := 0
		for last < slowMsgs {
			_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, b, err := slow.ReadMessage()
			if err != nil {
				t.Fatalf("read after seq %d: %v", last, err)
			}
			var m push
			if err := json.Unmarshal(b, &m); err != nil || m.Op != "" || m.Seq <= last {
				t.Fatalf("after seq %d: %.80s", last, b)
			}
			last = m.Seq
			n++
		}
		if n >= slowMsgs {
			t.Fatal("nothing was conflated: the client was never slow")
		}
		if c := stats(t, p)["conflated"].(float64); c < float64(slowMsgs-n) {
			t.Errorf("conflated = %v, client missed %d", c, slowMsgs-n)
		}
		t.Logf("conflate: client received %d of %d pushes, ending with the latest", n, slowMsgs)
	})
}
