package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
)

// recorder is a PublicationHandler that records what it is handed.
type recorder struct {
	mu   sync.Mutex
	pubs map[string][]uint64
}

func (r *recorder) HandlePublication(p fanout.Publication) {
	r.mu.Lock()
	if r.pubs == nil {
		r.pubs = map[string][]uint64{}
	}
	r.pubs[p.Channel] = append(r.pubs[p.Channel], p.Seq)
	r.mu.Unlock()
}

// clock is a manual time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func u64(v uint64) *uint64 { return &v }

func TestMemoryPublishNeedsHandler(t *testing.T) {
	m, err := cluster.NewMemory(cluster.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Publish(context.Background(), "a", nil); err != cluster.ErrNoHandler {
		t.Fatalf("Publish before Attach: %v", err)
	}
	if _, err := cluster.NewMemory(cluster.MemoryConfig{HistoryTTL: -1}); err == nil {
		t.Fatal("negative TTL accepted")
	}
}

func TestMemoryHistory(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	m, err := cluster.NewMemory(cluster.MemoryConfig{HistorySize: 3, HistoryTTL: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	var r recorder
	m.Attach(&r)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		seq, err := m.Publish(ctx, "c", []byte(fmt.Sprint(i)))
		if err != nil || seq != uint64(i) {
			t.Fatalf("Publish %d: seq %d err %v", i, seq, err)
		}
		clk.Add(time.Second)
	}
	for _, tc := range []struct {
		since     *uint64
		seqs      []uint64
		top       uint64
		recovered bool
	}{
		{nil, nil, 5, true},
		{u64(0), []uint64{3, 4, 5}, 5, false},
		{u64(1), []uint64{3, 4, 5}, 5, false},
		{u64(2), []uint64{3, 4, 5}, 5, true},
		{u64(4), []uint64{5}, 5, true},
		{u64(5), nil, 5, true},
		{u64(6), nil, 5, false},
	} {
		res, err := m.History(ctx, "c", tc.since)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, p := range res.Pubs {
			seqs = append(seqs, p.Seq)
			if string(p.Data) != fmt.Sprint(p.Seq) {
				t.Errorf("seq %d data %q", p.Seq, p.Data)
			}
		}
		if fmt.Sprint(seqs) != fmt.Sprint(tc.seqs) || res.Top != tc.top || res.Recovered != tc.recovered {
			t.Errorf("since %v: seqs %v top %d recovered %v, want %v %d %v", tc.since, seqs, res.Top, res.Recovered, tc.seqs, tc.top, tc.recovered)
		}
	}
	// Unknown channel: nothing published, since 0 is fully recovered.
	res, _ := m.History(ctx, "none", u64(0))
	if res.Top != 0 || !res.Recovered || len(res.Pubs) != 0 {
		t.Errorf("unknown channel: %+v", res)
	}
	// TTL: after a minute everything expired; since=2 is no longer recovered.
	clk.Add(time.Minute)
	res, _ = m.History(ctx, "c", u64(2))
	if len(res.Pubs) != 0 || res.Recovered || res.Top != 5 {
		t.Errorf("after TTL: %+v", res)
	}
	if fmt.Sprint(r.pubs["c"]) != "[1 2 3 4 5]" {
		t.Errorf("handler saw %v", r.pubs["c"])
	}
}

func TestMemorySweepKeepsSubscribedChannels(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	m, err := cluster.NewMemory(cluster.MemoryConfig{HistoryTTL: 10 * time.Millisecond, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(&recorder{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	_ = m.Subscribe(ctx, "kept")
	_, _ = m.Publish(ctx, "kept", []byte("x"))
	_, _ = m.Publish(ctx, "gone", []byte("x"))
	clk.Add(time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for m.Channels() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := m.Channels(); n != 1 {
		t.Fatalf("Channels = %d, want 1 (the subscribed one)", n)
	}
	if seq, _ := m.Publish(ctx, "kept", []byte("y")); seq != 2 {
		t.Errorf("subscribed channel restarted its sequence: %d", seq)
	}
	if seq, _ := m.Publish(ctx, "gone", []byte("y")); seq != 1 {
		t.Errorf("forgotten channel continues at %d, want 1", seq)
	}
}

// TestMemoryConcurrentOrder: concurrent publishers on shared channels; the
// handler sees each channel's sequence numbers strictly in order.
func TestMemoryConcurrentOrder(t *testing.T) {
	m, err := cluster.NewMemory(cluster.MemoryConfig{HistorySize: 16})
	if err != nil {
		t.Fatal(err)
	}
	var r recorder
	m.Attach(&r)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				_, _ = m.Publish(context.Background(), fmt.Sprintf("c%d", (g+i)%4), []byte("p"))
			}
		}()
	}
	wg.Wait()
	total := 0
	for ch, seqs := range r.pubs {
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Fatalf("%s: position %d has seq %d", ch, i, s)
			}
		}
		total += len(seqs)
	}
	if total != 4000 {
		t.Errorf("handled %d publications, want 4000", total)
	}
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Publish(context.Background(), "c0", nil); err != cluster.ErrClosed {
		t.Errorf("Publish after Shutdown: %v", err)
	}
}

type nopHandler struct{}

func (nopHandler) HandlePublication(fanout.Publication) {}

// BenchmarkMemoryPublish measures the broker alone (sequence, history
// ring, handler call) with history on and off.
func BenchmarkMemoryPublish(b *testing.B) {
	for _, size := range []int{-1, 100} {
		b.Run(fmt.Sprintf("history=%d", max(size, 0)), func(b *testing.B) {
			m, err := cluster.NewMemory(cluster.MemoryConfig{HistorySize: size})
			if err != nil {
				b.Fatal(err)
			}
			m.Attach(nopHandler{})
			data := []byte(`{"v":1}`)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Publish(ctx, "c", data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
