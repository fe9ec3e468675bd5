package cluster

import (
	"slices"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
)

// carried is what a pub/sub session subscribes and resyncs: exactly the
// subscribed channels whose rchan names the connection, wherever their
// shards are; a yield that stops early leaves no shard locked.
func TestRedisCarried(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialed
	defer client.Close()
	b, err := NewRedis(RedisConfig{Client: client})
	if err != nil {
		t.Fatal(err)
	}
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
	for i := range b.chans {
		if !b.chans[i].mu.TryLock() {
			t.Fatalf("shard %d still locked after an early break", i)
		}
		b.chans[i].mu.Unlock()
	}
}
