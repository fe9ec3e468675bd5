package cluster

import (
	"slices"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
)

// carried is what a pub/sub session subscribes and resyncs: exactly the
// subscribed channels whose rchan names the connection, wherever their
// shards are; yield runs outside the shard locks, and one that stops
// early leaves no shard locked.
func TestRedisCarried(t *testing.T) {
	b, client := offlineRedis(t)
	pcs := []*psConn{newPSConn(b, "", 0, client), newPSConn(b, "", 1, client)}
	if got := slices.Collect(b.carried(pcs[0])); len(got) != 0 {
		t.Fatalf("carried with no channels = %v", got)
	}
	var want [2][]string
	for i := range 200 {
		ch := "user:" + strconv.Itoa(i)
		rc := &rchan{name: ch}
		rc.conn.Store(pcs[i%2])
		b.shard(ch).channels[ch] = rc
		want[i%2] = append(want[i%2], ch)
	}
	// Moved to the other connection (rehome): carried by that one only.
	moved := b.lookup("user:7")
	moved.conn.Store(pcs[0])
	want[0] = append(want[0], "user:7")
	want[1] = slices.DeleteFunc(want[1], func(s string) bool { return s == "user:7" })
	for i, pc := range pcs {
		got := slices.Sorted(b.carried(pc))
		slices.Sort(want[i])
		if !slices.Equal(got, want[i]) {
			t.Errorf("carried(conn %d) = %d channels %v; want %d %v", i, len(got), got, len(want[i]), want[i])
		}
	}
	if got := slices.Collect(b.carried(newPSConn(b, "", 2, client))); len(got) != 0 {
		t.Errorf("carried(a connection carrying nothing) = %v", got)
	}
	for range b.carried(pcs[0]) {
		break
	}
	// yield runs outside the shard locks: it may take them.
	for ch := range b.carried(pcs[1]) {
		sh := b.shard(ch)
		sh.mu.Lock()
		sh.mu.Unlock()
		if b.lookup(ch) == nil {
			t.Fatalf("lookup(%q) inside carried = nil", ch)
		}
	}
	for i := range b.chans {
		if !b.chans[i].mu.TryLock() {
			t.Fatalf("shard %d still locked after an early break", i)
		}
		b.chans[i].mu.Unlock()
	}
}

// BenchmarkRedisCarried walks a million subscribed channels spread over
// four connections for one connection's share: what a session start, a
// resync and a lost session's count cost (ns/op per walk; each shard's
// read lock is held only to copy its pointers).
//
//	go test ./cluster -run '^$' -bench RedisCarried
func BenchmarkRedisCarried(b *testing.B) {
	br, client := offlineRedis(b)
	pcs := []*psConn{newPSConn(br, "", 0, client), newPSConn(br, "", 1, client), newPSConn(br, "", 2, client), newPSConn(br, "", 3, client)}
	for i := range 1_000_000 {
		ch := "user:" + strconv.Itoa(i)
		rc := &rchan{name: ch}
		rc.conn.Store(pcs[br.connIndex(ch)])
		br.shard(ch).channels[ch] = rc
	}
	b.ResetTimer()
	for b.Loop() {
		n := 0
		for range br.carried(pcs[0]) {
			n++
		}
		if n < 200_000 {
			b.Fatalf("carried %d of 1M channels over 4 connections", n)
		}
	}
}

// offlineRedis returns a broker on a client that is never dialed, for
// tests of its in-memory channel table.
func offlineRedis(tb testing.TB) (*Redis, *redis.Client) {
	tb.Helper()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialed
	tb.Cleanup(func() { client.Close() })
	b, err := NewRedis(RedisConfig{Client: client})
	if err != nil {
		tb.Fatal(err)
	}
	return b, client
}
