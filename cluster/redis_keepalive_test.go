package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/fanout"
)

// TestRedisKeepAliveCountedChannelsOnly: a node keeps the sequence counter
// of a channel it holds alive past the history TTL, and spends keep-alive
// commands only on channels that have a counter. A personal channel that
// was never published to (a QR-login page waiting) has no counter to keep,
// so 200 of them cost Redis nothing between subscribe and unsubscribe
// (counted by Redis itself, INFO commandstats).
func TestRedisKeepAliveCountedChannelsOnly(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	const ttl = 4 * time.Second // keep-alive every ttl/3
	br, hub := startHubBroker(t, srv.Addr, cluster.RedisConfig{HistoryTTL: ttl})

	const quiet = 200
	for i := range quiet {
		if _, _, err := hub.Subscribe(ctx, &recSub{}, fmt.Sprintf("user:%d", i), fanout.SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	busy := &recSub{}
	if _, _, err := hub.Subscribe(ctx, busy, "room:busy", fanout.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := br.Publish(ctx, "room:busy", []byte(`"x"`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the push delivered", func() bool { return len(busy.pushes(t)) == 1 })

	srv.MustDo(t, "CONFIG", "RESETSTAT")
	t0 := time.Now()
	// Watch the counter through 2.5 of its TTLs: only the keep-alive
	// keeps it.
	for time.Since(t0) < 10*time.Second {
		if srv.MustDo(t, "EXISTS", "pushd:{room:busy}:seq") != "1" {
			t.Fatalf("room:busy's counter expired %v after the last publish, while subscribed", time.Since(t0)+ttl)
		}
		time.Sleep(250 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	calls := commandCalls(t, srv)["expire"]
	// Two EXPIREs (counter, epoch) per counted channel per round.
	rounds := int(elapsed/(ttl/3)) + 2
	t.Logf("%d EXPIRE in %v (%d keep-alive rounds at most) for 1 counted and %d uncounted channels", calls, elapsed.Round(time.Millisecond), rounds, quiet)
	if calls > 2*rounds {
		t.Errorf("%d EXPIRE in %v: more than 2 per round for the one channel with a counter; the keep-alive touches channels that have none", calls, elapsed)
	}
}
