package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/cluster/redistest"
)

// TestRedisClusterSharded runs the broker on a real 3-primary Redis
// Cluster (two pub/sub connections per primary): the function library is
// loaded on every primary, 10,000
// subscribed channels spread over the primaries (each carries 33% ± 10% of
// the shard channels, measured with PUBSUB SHARDCHANNELS on every node),
// and SPUBLISH, FCALL pushd_publish and Publish deliver on every slot
// owner.
func TestRedisClusterSharded(t *testing.T) {
	t.Parallel()
	rc := redistest.StartCluster(t, 3)
	ctx := context.Background()
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRetries: -1, Protocol: 2})
	t.Cleanup(func() { client.Close() })
	bt := startBroker(t, client, cluster.RedisConfig{PubSubConns: 2})
	if st := bt.b.Stats(); st.Conns != 6 {
		t.Fatalf("%d pub/sub connections, want PubSubConns (2) per primary (3)", st.Conns)
	}
	for _, n := range rc.Nodes {
		if out := n.MustDo(t, "FUNCTION", "LIST", "LIBRARYNAME", "pushd"); !strings.Contains(out, "pushd_publish") {
			t.Fatalf("library not loaded on %s: %q", n.Addr, out)
		}
	}

	const channels = 10000
	names := make(chan string, channels)
	for i := 0; i < channels; i++ {
		names <- fmt.Sprintf("room:%d", i)
	}
	close(names)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ch := range names {
				if err := bt.b.Subscribe(ctx, ch); err != nil {
					errs <- fmt.Errorf("%s: %w (stats %+v)", ch, err, bt.b.Stats())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d channels subscribed in %v", channels, time.Since(start).Round(time.Millisecond))

	total := 0
	counts := make([]int, len(rc.Nodes))
	for i, n := range rc.Nodes {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2})
		list, err := nc.Do(ctx, "PUBSUB", "SHARDCHANNELS", "pushd:{*").StringSlice()
		nc.Close()
		if err != nil {
			t.Fatal(err)
		}
		counts[i] = len(list)
		total += len(list)
	}
	if total != 2*channels {
		t.Fatalf("%d shard channels over the primaries (%v), want %d", total, counts, 2*channels)
	}
	for i, c := range counts {
		share := float64(c) / float64(total)
		t.Logf("primary %s: %d shard channels (%.1f%%)", rc.Nodes[i].Addr, c, 100*share)
		if share < 0.2333 || share > 0.4333 {
			t.Fatalf("primary %s carries %.1f%% of the subscriptions, want 33%% ± 10%%", rc.Nodes[i].Addr, 100*share)
		}
	}

	// Delivery on every slot owner: SPUBLISH (raw), FCALL (durable),
	// Publish (durable through the broker).
	const sample = 300
	for i := 0; i < sample; i++ {
		ch := fmt.Sprintf("room:%d", i*channels/sample)
		if err := client.SPublish(ctx, "pushd:{"+ch+"}", "raw").Err(); err != nil {
			t.Fatal(err)
		}
		if err := client.FCall(ctx, "pushd_publish", []string{"pushd:{" + ch + "}"}, "fcall").Err(); err != nil {
			t.Fatal(err)
		}
		if seq, err := bt.b.Publish(ctx, ch, []byte("publish")); err != nil || seq != 2 {
			t.Fatalf("Publish(%s) = %d, %v", ch, seq, err)
		}
	}
	for i := 0; i < sample; i++ {
		ch := fmt.Sprintf("room:%d", i*channels/sample)
		waitFor(t, 5*time.Second, ch+" deliveries", func() bool { return len(bt.log.get(ch)) == 3 })
		got := bt.log.get(ch)
		if got[0].Seq != 0 || string(got[0].Data) != "raw" || got[1].Seq != 1 || string(got[1].Data) != "fcall" || got[2].Seq != 2 {
			t.Fatalf("%s: %v", ch, got)
		}
	}
	// History through FCALL_RO on the slot owner.
	zero := uint64(0)
	hr, err := bt.b.History(ctx, "room:0", &zero)
	if err != nil || hr.Top != 2 || len(hr.Pubs) != 2 || !hr.Recovered {
		t.Fatalf("History(room:0, 0) = %+v, %v", hr, err)
	}
	// A channel name without a usable hash tag is refused.
	if _, err := bt.b.Publish(ctx, "}x", []byte("x")); err == nil {
		t.Fatal("Publish(\"}x\") succeeded in cluster mode")
	}
}

// TestRedisClusterReshard migrates a subscribed channel's slot (with its
// keys) to another primary: the old owner drops the shard subscription
// (SUNSUBSCRIBE), the broker subscribes on the new owner and delivers
// what was published meanwhile from the stream, in order, once.
func TestRedisClusterReshard(t *testing.T) {
	t.Parallel()
	rc := redistest.StartCluster(t, 3)
	ctx := context.Background()
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRetries: -1, Protocol: 2})
	t.Cleanup(func() { client.Close() })
	bt := startBroker(t, client, cluster.RedisConfig{})
	const ch = "moving"
	key := "pushd:{" + ch + "}"
	if err := bt.b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, err := bt.b.Publish(ctx, ch, []byte("1")); err != nil {
		t.Fatal(err)
	}
	byAddr := map[string]*redistest.Server{}
	for _, n := range rc.Nodes {
		byAddr[n.Addr] = n
	}
	owner, err := client.MasterForKey(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	src := byAddr[owner.Options().Addr]
	var dst *redistest.Server
	for _, n := range rc.Nodes {
		if n != src {
			dst = n
			break
		}
	}
	slot := src.MustDo(t, "CLUSTER", "KEYSLOT", key)
	srcID, dstID := src.MustDo(t, "CLUSTER", "MYID"), dst.MustDo(t, "CLUSTER", "MYID")
	dst.MustDo(t, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID)
	src.MustDo(t, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID)
	for _, k := range strings.Fields(src.MustDo(t, "CLUSTER", "GETKEYSINSLOT", slot, "100")) {
		src.MustDo(t, "MIGRATE", "127.0.0.1", fmt.Sprint(dst.Port), k, "0", "5000")
	}
	for _, n := range []*redistest.Server{dst, src} {
		n.MustDo(t, "CLUSTER", "SETSLOT", slot, "NODE", dstID)
	}
	for _, n := range rc.Nodes {
		if n != src && n != dst {
			n.MustDo(t, "CLUSTER", "SETSLOT", slot, "NODE", dstID)
		}
	}
	// Published on the new owner before the broker moved over.
	for i := 2; i <= 3; i++ {
		if err := client.FCall(ctx, "pushd_publish", []string{key}, fmt.Sprint(i)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "subscription on the new owner", func() bool {
		return strings.Contains(dst.MustDo(t, "PUBSUB", "SHARDCHANNELS", "pushd:{*"), key+":d")
	})
	if err := client.FCall(ctx, "pushd_publish", []string{key}, "4").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "4 publications", func() bool { return len(bt.log.get(ch)) >= 4 })
	time.Sleep(50 * time.Millisecond)
	if got := seqs(bt.log.get(ch)); fmt.Sprint(got) != "[1 2 3 4]" {
		t.Fatalf("after resharding: %v, want [1 2 3 4]", got)
	}
	if out := src.MustDo(t, "PUBSUB", "SHARDCHANNELS", "pushd:{*"); strings.Contains(out, key) {
		t.Fatalf("old owner still carries %q", out)
	}
	st := bt.b.Stats()
	if st.Recoveries == 0 || st.Lost != 0 {
		t.Fatalf("stats %+v: want a recovery check after the move, nothing lost", st)
	}
	t.Logf("slot %s moved %s → %s: %d recoveries, %d publications recovered from the stream, %d live",
		slot, src.Addr, dst.Addr, st.Recoveries, st.RecoveredPubs, st.DurableIn)
}
