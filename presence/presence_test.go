package presence_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/presence"
)

type eventLog struct {
	mu  sync.Mutex
	evs []string
}

func (l *eventLog) add(ev presence.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev.Kind.String()+":"+ev.Channel+":"+ev.User)
	l.mu.Unlock()
}

func (l *eventLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

func run(t *testing.T, cfg presence.Config) *presence.Tracker {
	t.Helper()
	tr, err := presence.NewTracker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return tr
}

func waitStats(t *testing.T, tr *presence.Tracker, ch string, want presence.Stats) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := tr.Stats(context.Background(), ch)
		if err == nil && st == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats of %s: %+v %v, want %+v", ch, st, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTrackerGraceAndEvents: a user's several connections count once;
// a reconnect within the grace period emits nothing; the last leave
// emits after the grace; channels outside EventChannels emit nothing.
func TestTrackerGraceAndEvents(t *testing.T) {
	var log eventLog
	tr := run(t, presence.Config{Store: presence.NewMemoryStore(), Flush: 5 * time.Millisecond, Grace: 200 * time.Millisecond,
		EventChannels: []string{"room:*"}, Emit: log.add})
	tr.Join("room:1", "alice")
	tr.Join("room:1", "alice")
	tr.Join("room:1", "")
	tr.Join("quiet", "bob")
	waitStats(t, tr, "room:1", presence.Stats{Conns: 3, Users: 1})
	waitStats(t, tr, "quiet", presence.Stats{Conns: 1, Users: 1})
	tr.Leave("room:1", "alice")
	tr.Leave("room:1", "alice") // last connection: grace starts
	tr.Join("room:1", "alice")  // back within the grace period
	time.Sleep(400 * time.Millisecond)
	if got := log.get(); !slices.Equal(got, []string{"join:room:1:alice"}) {
		t.Fatalf("events %v: a reconnect within the grace period must emit nothing", got)
	}
	tr.Leave("room:1", "alice")
	tr.Leave("quiet", "bob")
	waitStats(t, tr, "room:1", presence.Stats{Conns: 1, Users: 0})
	waitStats(t, tr, "quiet", presence.Stats{})
	if got := log.get(); !slices.Equal(got, []string{"join:room:1:alice", "leave:room:1:alice"}) {
		t.Fatalf("events %v", got)
	}
	tr.Leave("room:1", "")
	tr.Leave("room:1", "") // unbalanced: ignored
	waitStats(t, tr, "room:1", presence.Stats{})
	if c := tr.Counters(); c.Channels != 0 || c.InGrace != 0 || c.Emitted != 2 {
		t.Fatalf("counters %+v: state must be released", c)
	}
	pg, err := tr.Members(context.Background(), "room:1", 0, 0)
	if err != nil || len(pg.Users) != 0 || pg.Cursor != 0 {
		t.Fatalf("empty page %+v %v", pg, err)
	}
}

// TestTrackerStormBounded: a churn storm emits at most EventRate per
// second (plus the burst), drops the rest, counted, and Join/Leave stay
// quick; the node's state returns to empty.
func TestTrackerStormBounded(t *testing.T) {
	var log eventLog
	tr := run(t, presence.Config{Store: presence.NewMemoryStore(), Flush: 5 * time.Millisecond,
		EventChannels: []string{"*"}, EventRate: 50, Emit: log.add})
	start := time.Now()
	const n = 5000
	for i := range n {
		u := fmt.Sprintf("u%d", i)
		tr.Join("storm", u)
		if i%2 == 1 {
			tr.Leave("storm", u)
		}
	}
	took := time.Since(start)
	waitStats(t, tr, "storm", presence.Stats{Conns: n / 2, Users: n / 2})
	elapsed := time.Since(start)
	c := tr.Counters()
	limit := uint64(100 + 50*elapsed.Seconds() + 50) // burst + rate × time, one second of slack
	if c.Emitted > limit || c.Emitted+c.Dropped == 0 {
		t.Fatalf("emitted %d, dropped %d over %v: want at most %d", c.Emitted, c.Dropped, elapsed, limit)
	}
	t.Logf("storm of %d joins and %d leaves: Join/Leave took %v in all; %d events emitted, %d dropped by the rate bound", n, n/2, took, c.Emitted, c.Dropped)
	// Paging through 2500 users, 1000 at most per page.
	seen := 0
	for cursor := uint64(0); ; {
		pg, err := tr.Members(context.Background(), "storm", cursor, 5000)
		if err != nil || len(pg.Users) > presence.MaxPageSize {
			t.Fatalf("page of %d: %v", len(pg.Users), err)
		}
		seen += len(pg.Users)
		if cursor = pg.Cursor; cursor == 0 {
			break
		}
	}
	if seen != n/2 {
		t.Fatalf("paged %d users, want %d", seen, n/2)
	}
}

func TestTrackerConfig(t *testing.T) {
	if _, err := presence.NewTracker(presence.Config{}); err == nil {
		t.Fatal("no store accepted")
	}
	if _, err := presence.NewTracker(presence.Config{Store: presence.NewMemoryStore(), Grace: -1}); err == nil {
		t.Fatal("negative grace accepted")
	}
}

// TestTrackerMemory10k measures the node's own state for a 10k-member
// channel (after the members were written to the store) and checks it is
// released when they leave.
func TestTrackerMemory10k(t *testing.T) {
	tr, err := presence.NewTracker(presence.Config{Store: presence.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	users := make([]string, 10_000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%05d", i)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for _, u := range users {
		tr.Join("big", u)
	}
	after := heap()
	if c := tr.Counters(); c.Channels != 1 {
		t.Fatalf("counters %+v", c)
	}
	if per := (int64(after) - int64(before)) / 10_000; per > 1024 {
		t.Fatalf("%d B per member on the node, want well under 1 KiB", per)
	}
	for _, u := range users {
		tr.Leave("big", u)
	}
	t.Logf("node state for a 10k-member channel: %d bytes (%.0f B/member, pending writes included; the user ids are shared with the caller)",
		int64(after)-int64(before), float64(int64(after)-int64(before))/10_000)
	runtime.KeepAlive(users)
}
