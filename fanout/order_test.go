package fanout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/ants/v2"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/codec"
	"github.com/pushd/pushd/fanout"
)

// TestOrderUnderChurn is acceptance 4: N publishers × M channels × K
// subscribers with random subscribe/unsubscribe churn (live-only and
// since-resume subscriptions, chunked parallel fan-out). Every
// subscription window must see its channel's publications exactly once,
// in order, with no hole: from the subscribe point (or since+1) to the
// unsubscribe, or to the channel's last publication for windows still open.
func TestOrderUnderChurn(t *testing.T) {
	const (
		publishers = 4
		channels   = 6
		subsN      = 40
		perPub     = 400
	)
	pool, err := ants.NewPool(16, ants.WithNonblocking(true))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Release()
	// ChunkSize 4: channels with more than 4 subscribers fan out in
	// parallel chunks on the pool.
	h, m := newHub(t, fanout.Config{Pool: pool, ChunkSize: 4, MaxChunks: 64}, cluster.MemoryConfig{HistorySize: 4096})
	names := make([]string, channels)
	for i := range names {
		names[i] = fmt.Sprintf("room:%d", i)
	}
	subs := make([]*fakeSub, subsN)
	for i := range subs {
		subs[i] = newFakeSub(0)
		subs[i].keep = true
	}

	stop := make(chan struct{})
	var churn sync.WaitGroup
	for i, f := range subs {
		churn.Add(1)
		go func() {
			defer churn.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			active := map[string]*fanout.Subscription{}
			last := map[string]uint64{} // last seq seen per channel, for since-resume
			for ops := 0; ; ops++ {
				// At least 12 toggles each, however fast the publishers are.
				select {
				case <-stop:
					if ops >= 12 {
						return
					}
				default:
				}
				ch := names[rng.IntN(channels)]
				if s, ok := active[ch]; ok {
					h.Unsubscribe(s)
					last[ch] = f.mark(ch)
					delete(active, ch)
				} else {
					opts := fanout.SubscribeOptions{Ack: func(res fanout.SubscribeResult) []byte {
						return ackJSON(ch, res.Seq, nil)
					}}
					if l, ok := last[ch]; ok && rng.IntN(2) == 0 {
						since := l
						opts.Since = &since
						opts.Ack = func(res fanout.SubscribeResult) []byte {
							if !res.Recovered {
								t.Errorf("since %d on %s not recovered", since, ch)
							}
							return ackJSON(ch, res.Seq, &since)
						}
					}
					s, _, err := h.Subscribe(context.Background(), f, ch, opts)
					if err != nil {
						t.Error(err)
						return
					}
					active[ch] = s
				}
				time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			}
		}()
	}
	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 99))
			for i := range perPub {
				ch := names[rng.IntN(channels)]
				if _, err := m.Publish(context.Background(), ch, fmt.Appendf(nil, `{"p":%d,"i":%d}`, p, i)); err != nil {
					t.Error(err)
					return
				}
				if i%16 == 0 {
					time.Sleep(100 * time.Microsecond)
				}
			}
		}()
	}
	pubs.Wait()
	close(stop)
	churn.Wait()
	// Wait for the pool to finish the last batches.
	prev := ^uint64(0)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		d := h.Stats().Delivered
		if d == prev {
			break
		}
		prev = d
	}
	top := map[string]uint64{}
	for _, ch := range names {
		res, err := m.History(context.Background(), ch, nil)
		if err != nil {
			t.Fatal(err)
		}
		top[ch] = res.Top
	}
	windows, frames := 0, 0
	for i, f := range subs {
		w, n := verifyLog(t, i, f, top)
		windows += w
		frames += n
	}
	st := h.Stats()
	t.Logf("%d publications, %d subscription windows, %d frames verified; stats %+v", publishers*perPub, windows, frames, st)
	if windows < subsN*5 {
		t.Errorf("only %d subscription windows: not enough churn to judge", windows)
	}
	if st.Published != publishers*perPub {
		t.Errorf("Published = %d, want %d", st.Published, publishers*perPub)
	}
}

// ackJSON is the test's subscribe reply: it marks a window's start.
func ackJSON(ch string, seq uint64, since *uint64) []byte {
	b, _ := json.Marshal(map[string]any{"op": "subok", "ch": ch, "seq": seq, "since": since})
	return codec.CompileFrame(ws.OpText, b)
}

// mark appends an unsubscribe marker to f's log (the hub queues nothing
// for the channel after Unsubscribe returned) and returns the last seq of
// ch seen in the window it closes.
func (f *fakeSub) mark(ch string) uint64 {
	b, _ := json.Marshal(map[string]any{"op": "unsubbed", "ch": ch})
	f.mu.Lock()
	defer f.mu.Unlock()
	var last uint64
	for i := len(f.log) - 1; i >= 0; i-- {
		var e logEntry
		_ = json.Unmarshal(f.log[i][2:], &e)
		if e.Ch != ch {
			continue
		}
		if e.Op == "" {
			last = e.Seq
		} else if e.Op == "subok" && last == 0 {
			last = e.Seq
			if e.Since != nil && *e.Since > last {
				last = *e.Since
			}
		}
		break
	}
	f.log = append(f.log, codec.CompileFrame(ws.OpText, b))
	return last
}

type logEntry struct {
	Op    string  `json:"op"`
	Ch    string  `json:"ch"`
	Seq   uint64  `json:"seq"`
	Since *uint64 `json:"since"`
}

// verifyLog checks one subscriber's log window by window; it returns the
// number of windows and push frames seen.
func verifyLog(t *testing.T, idx int, f *fakeSub, top map[string]uint64) (windows, frames int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	next := map[string]uint64{} // channel → expected next seq (open window)
	for i, b := range f.log {
		var e logEntry
		if err := json.Unmarshal(framePayload(t, b), &e); err != nil {
			t.Fatalf("sub %d frame %d: %v", idx, i, err)
		}
		switch e.Op {
		case "subok":
			if _, open := next[e.Ch]; open {
				t.Fatalf("sub %d: subok for %s inside an open window", idx, e.Ch)
			}
			windows++
			if e.Since != nil {
				next[e.Ch] = *e.Since + 1
			} else {
				next[e.Ch] = e.Seq + 1
			}
		case "unsubbed":
			delete(next, e.Ch)
		case "":
			frames++
			want, open := next[e.Ch]
			if !open {
				t.Fatalf("sub %d frame %d: push %s seq %d outside a subscription window", idx, i, e.Ch, e.Seq)
			}
			if e.Seq != want {
				t.Fatalf("sub %d frame %d: %s seq %d, want %d (duplicate, reorder or hole)", idx, i, e.Ch, e.Seq, want)
			}
			next[e.Ch] = want + 1
		}
	}
	for ch, want := range next {
		if want != top[ch]+1 {
			t.Errorf("sub %d: open window on %s ends at seq %d, channel top is %d (missing)", idx, ch, want-1, top[ch])
		}
	}
	return windows, frames
}
