package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/presence"
)

func newPresence(t *testing.T, addr, node string, beat time.Duration) *cluster.RedisPresence {
	t.Helper()
	p, err := cluster.NewRedisPresence(cluster.RedisPresenceConfig{Client: newClient(t, addr), NodeID: node, Heartbeat: beat})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func allMembers(t *testing.T, p *cluster.RedisPresence, ch string) []string {
	t.Helper()
	var out []string
	var cursor uint64
	for {
		pg, err := p.Members(context.Background(), ch, cursor, 100)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pg.Users...)
		if cursor = pg.Cursor; cursor == 0 {
			break
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestRedisPresenceTwoNodes: cluster-wide join/leave transitions across
// two nodes, and a node that stops heartbeating loses its members within
// two heartbeats (TTL), reported as left by the other node's heartbeat.
func TestRedisPresenceTwoNodes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	const beat = 300 * time.Millisecond
	a := newPresence(t, srv.Addr, "node-a", beat)
	b := newPresence(t, srv.Addr, "node-b", beat)
	ctx := context.Background()
	ch := "room:1"
	must := func(j, l []string, err error) ([]string, []string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return j, l
	}
	if j, _ := must(a.Update(ctx, ch, presence.Update{Conns: 2, Add: []string{"alice"}})); !slices.Equal(j, []string{"alice"}) {
		t.Fatalf("alice joined: %v", j)
	}
	if j, _ := must(b.Update(ctx, ch, presence.Update{Conns: 2, Add: []string{"bob", "alice"}})); !slices.Equal(j, []string{"bob"}) {
		t.Fatalf("bob joined (alice already was): %v", j)
	}
	st, err := a.Stats(ctx, ch)
	if err != nil || st != (presence.Stats{Conns: 4, Users: 2}) {
		t.Fatalf("stats %+v %v", st, err)
	}
	if m := allMembers(t, b, ch); !slices.Equal(m, []string{"alice", "bob"}) {
		t.Fatalf("members %v", m)
	}
	// alice leaves node a but is still on b: no leave.
	if _, l := must(a.Update(ctx, ch, presence.Update{Conns: 1, Remove: []string{"alice"}})); len(l) != 0 {
		t.Fatalf("alice left while on node b: %v", l)
	}
	if _, l := must(b.Update(ctx, ch, presence.Update{Conns: 1, Remove: []string{"alice"}})); !slices.Equal(l, []string{"alice"}) {
		t.Fatalf("alice's last connection: %v", l)
	}
	// carol on a; a dies (stops heartbeating). b keeps beating.
	must(a.Update(ctx, ch, presence.Update{Conns: 2, Add: []string{"carol"}}))
	died := time.Now()
	var left []string
	for time.Since(died) < 10*beat {
		l, err := b.Heartbeat(ctx, ch, 1, []string{"bob"}, false)
		if err != nil {
			t.Fatal(err)
		}
		left = append(left, l...)
		if m := allMembers(t, b, ch); !slices.Contains(m, "carol") {
			break
		}
		time.Sleep(beat / 10)
	}
	gone := time.Since(died)
	if gone > 2*beat+500*time.Millisecond { // 2 heartbeats (the TTL, on Redis's clock), plus slack for the polls on a busy machine
		t.Fatalf("carol still listed %v after her node died (heartbeat %v)", gone, beat)
	}
	st, _ = b.Stats(ctx, ch)
	if st != (presence.Stats{Conns: 1, Users: 1}) {
		t.Fatalf("stats after node a died: %+v", st)
	}
	// The next heartbeat after expiry prunes and reports carol.
	deadline := time.Now().Add(10 * beat)
	for !slices.Contains(left, "carol") && time.Now().Before(deadline) {
		time.Sleep(beat / 2)
		l, err := b.Heartbeat(ctx, ch, 1, []string{"bob"}, false)
		if err != nil {
			t.Fatal(err)
		}
		left = append(left, l...)
	}
	if !slices.Equal(left, []string{"carol"}) {
		t.Fatalf("left reported by heartbeats: %v, want [carol] once", left)
	}
	t.Logf("a dead node's member vanished from /presence %v after its last write (heartbeat %v)", gone.Round(time.Millisecond), beat)
	// b leaves: nothing remains but TTL'd keys that are gone with the node.
	must(b.Update(ctx, ch, presence.Update{Conns: 0, Remove: []string{"bob"}}))
	if st, _ := b.Stats(ctx, ch); st != (presence.Stats{}) {
		t.Fatalf("empty channel stats %+v", st)
	}
	for _, k := range []string{"pushd:{room:1}:pn", "pushd:{room:1}:pc", "pushd:{room:1}:pm:node-b"} {
		if n := srv.MustDo(t, "EXISTS", k); n != "0" {
			t.Fatalf("%s still exists after the last node left", k)
		}
	}
	if ttl, _ := strconv.Atoi(srv.MustDo(t, "PTTL", "pushd:{room:1}:pm:node-a")); ttl > int(2*beat/time.Millisecond) {
		t.Fatalf("dead node's set has PTTL %d ms, want at most the 2-heartbeat TTL", ttl)
	}
	if _, err := a.Stats(ctx, "}bad"); err == nil {
		t.Fatal("channel starting with '}' accepted")
	}
}

// TestRedisPresence10k: a 10k-member channel on two nodes: stats stay
// cheap, the listing pages through everyone, and the memory it takes in
// Redis is measured.
func TestRedisPresence10k(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newPresence(t, srv.Addr, "node-a", 5*time.Second)
	b := newPresence(t, srv.Addr, "node-b", 5*time.Second)
	ctx := context.Background()
	used := func() int {
		for _, l := range strings.Split(srv.MustDo(t, "INFO", "memory"), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		t.Fatal("no used_memory")
		return 0
	}
	before := used()
	const n = 10_000
	for i := 0; i < n; i += 1000 {
		users := make([]string, 0, 1000)
		for j := i; j < i+1000; j++ {
			users = append(users, fmt.Sprintf("user-%05d", j))
		}
		p := a
		if i%2000 != 0 {
			p = b
		}
		if _, _, err := p.Update(ctx, "big", presence.Update{Conns: i/2 + 1000, Add: users}); err != nil {
			t.Fatal(err)
		}
	}
	after := used()
	start := time.Now()
	st, err := a.Stats(ctx, "big")
	statsTook := time.Since(start)
	if err != nil || st.Users != n || st.Conns == 0 {
		t.Fatalf("stats %+v %v", st, err)
	}
	start = time.Now()
	pg, err := a.Members(ctx, "big", 0, 100)
	pageTook := time.Since(start)
	if err != nil || len(pg.Users) == 0 || len(pg.Users) > 200 || pg.Cursor == 0 {
		t.Fatalf("first page: %d users, cursor %d, %v", len(pg.Users), pg.Cursor, err)
	}
	if m := allMembers(t, b, "big"); len(m) != n {
		t.Fatalf("paged through %d distinct users, want %d", len(m), n)
	}
	start = time.Now()
	if _, err := a.Heartbeat(ctx, "big", 5000, nil, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("10k-member channel over 2 nodes: %d bytes in Redis (%.0f B/member); stats %v, one page of %d %v, an empty heartbeat %v",
		after-before, float64(after-before)/n, statsTook, len(pg.Users), pageTook, time.Since(start))
}

// TestRedisPresenceOutage: a Tracker on Redis keeps counting while Redis
// is down (Join/Leave never block), and after a restart that lost the data
// its heartbeats rebuild the node's membership: the listing converges to
// exactly the users connected now.
func TestRedisPresenceOutage(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	const beat = 200 * time.Millisecond
	store := newPresence(t, srv.Addr, "node-a", beat)
	tr, err := presence.NewTracker(presence.Config{Store: store, Heartbeat: beat, Flush: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tr.Run(ctx) }()
	defer func() { cancel(); <-done }()
	converge := func(want []string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			pg, err := store.Members(context.Background(), "room:1", 0, 1000)
			slices.Sort(pg.Users)
			if err == nil && slices.Equal(pg.Users, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("members %v (%v), want %v", pg.Users, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	tr.Join("room:1", "alice")
	tr.Join("room:1", "bob")
	converge([]string{"alice", "bob"})
	srv.Stop()
	start := time.Now()
	tr.Leave("room:1", "bob")
	tr.Join("room:1", "carol")
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Join/Leave took %v while Redis was down", took)
	}
	time.Sleep(3 * beat) // failed flushes and heartbeats
	srv.Restart(t)
	converge([]string{"alice", "carol"})
	if c := tr.Counters(); c.StoreErrors == 0 {
		t.Fatalf("counters %+v: the outage was not counted", c)
	}
	// Shutdown removes the node's members.
	cancel()
	<-done
	converge(nil)
}
