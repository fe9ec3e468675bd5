package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/cluster/redistest"
)

// TestRedisFenceLostWrites: the counter of a subscribed channel goes back
// in the same epoch while the node's pub/sub connection is down (what a
// failover to a replica that missed acknowledged writes looks like). The
// node fences the channel with a new epoch when it resubscribes, so the
// seqs numbered again reach the hub in that new epoch (clients are told
// recovered:false), never as duplicates of the old numbering.
func TestRedisFenceLostWrites(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	bt := startBroker(t, newClient(t, srv.Addr), cluster.RedisConfig{})
	if err := bt.b.Subscribe(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := bt.b.Publish(ctx, "f", []byte("a")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "5 publications", func() bool { return len(bt.log.get("f")) == 5 })
	old := bt.log.get("f")[4].Epoch
	// Redis "forgets" seqs 4 and 5 but keeps the epoch.
	srv.MustDo(t, "SET", "pushd:{f}:seq", "3")
	srv.MustDo(t, "CLIENT", "KILL", "TYPE", "pubsub")
	waitFor(t, 10*time.Second, "the fence", func() bool {
		e, _ := srv.Do("GET", "pushd:{f}:e")
		return e != old
	})
	waitFor(t, 10*time.Second, "ready again", bt.b.Ready)
	seq, err := bt.b.Publish(ctx, "f", []byte("b"))
	if err != nil || seq != 4 {
		t.Fatalf("publish after the loss: seq %d, %v; want 4", seq, err)
	}
	waitFor(t, 5*time.Second, "the publication after the fence", func() bool { return len(bt.log.get("f")) == 6 })
	p := bt.log.get("f")[5]
	if p.Seq != 4 || p.Epoch == old || p.Epoch == "" || string(p.Data) != "b" {
		t.Fatalf("after the fence the hub got %+v; want seq 4 of a new epoch (old %s)", p, old)
	}
	if st := bt.b.Stats(); st.Resets == 0 {
		t.Fatalf("stats %+v: the fence is not counted in Resets", st)
	}
	t.Logf("counter back from 5 to 3 in epoch %s: fenced, seq 4 delivered in epoch %s", old, p.Epoch)
}
