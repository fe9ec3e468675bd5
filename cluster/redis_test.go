package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/fanout"
)

// pubLog records publications per channel, in the order handed over, and
// checks the broker's contract: never concurrently for one channel.
type pubLog struct {
	mu   sync.Mutex
	pubs map[string][]fanout.Publication
	busy map[string]bool
	bad  []string
}

func (l *pubLog) HandlePublication(p fanout.Publication) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pubs == nil {
		l.pubs, l.busy = map[string][]fanout.Publication{}, map[string]bool{}
	}
	if l.busy[p.Channel] {
		l.bad = append(l.bad, "concurrent HandlePublication on "+p.Channel)
	}
	l.pubs[p.Channel] = append(l.pubs[p.Channel], fanout.Publication{Channel: p.Channel, Epoch: p.Epoch, Seq: p.Seq, Data: slices.Clone(p.Data)})
}

func (l *pubLog) get(ch string) []fanout.Publication {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.pubs[ch])
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, Protocol: 2,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

type brokerT struct {
	b   *cluster.Redis
	log *pubLog
}

// startBroker runs a Redis broker on client and waits until it is ready.
func startBroker(t *testing.T, client redis.UniversalClient, cfg cluster.RedisConfig) brokerT {
	t.Helper()
	cfg.Client = client
	b, err := cluster.NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &pubLog{}
	b.Attach(l)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := b.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := b.Shutdown(sctx); err != nil {
			t.Errorf("second Shutdown: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, 10*time.Second, "broker ready", b.Ready)
	return brokerT{b, l}
}

func seqs(pubs []fanout.Publication) []uint64 {
	out := make([]uint64, len(pubs))
	for i, p := range pubs {
		out[i] = p.Seq
	}
	return out
}

func TestRedisDeliversRawAndDurable(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	bt := startBroker(t, newClient(t, srv.Addr), cluster.RedisConfig{})
	if err := bt.b.Subscribe(ctx, "room:1"); err != nil {
		t.Fatal(err)
	}
	// PUBSUB CHANNELS: the channel's two names and the canary, nothing else.
	chans := strings.Fields(srv.MustDo(t, "PUBSUB", "CHANNELS", "pushd:{*"))
	slices.Sort(chans)
	if want := []string{"pushd:{room:1}", "pushd:{room:1}:d"}; !slices.Equal(chans, want) {
		t.Fatalf("PUBSUB CHANNELS pushd:{* = %q, want %q", chans, want)
	}
	srv.MustDo(t, "PUBLISH", "pushd:{room:1}", "hello")
	srv.MustDo(t, "PUBLISH", "pushd:{room:1}", "p1:99:looks durable") // raw, whatever its bytes
	if got := srv.MustDo(t, "FCALL", "pushd_publish", "1", "pushd:{room:1}", "hi"); got != "1" {
		t.Fatalf("FCALL pushd_publish = %q, want 1", got)
	}
	seq, err := bt.b.Publish(ctx, "room:1", []byte(`{"n":2}`))
	if err != nil || seq != 2 {
		t.Fatalf("Publish = %d, %v; want 2", seq, err)
	}
	waitFor(t, 5*time.Second, "4 publications", func() bool { return len(bt.log.get("room:1")) == 4 })
	got := bt.log.get("room:1")
	want := []fanout.Publication{
		{Channel: "room:1", Seq: 0, Data: []byte("hello")},
		{Channel: "room:1", Seq: 0, Data: []byte("p1:99:looks durable")},
		{Channel: "room:1", Seq: 1, Data: []byte("hi")},
		{Channel: "room:1", Seq: 2, Data: []byte(`{"n":2}`)},
	}
	for i := range want {
		if got[i].Seq != want[i].Seq || string(got[i].Data) != string(want[i].Data) {
			t.Fatalf("publication %d = %d %q, want %d %q", i, got[i].Seq, got[i].Data, want[i].Seq, want[i].Data)
		}
	}
	// Not subscribed: nothing arrives; unsubscribed: the names go away.
	srv.MustDo(t, "PUBLISH", "pushd:{room:2}", "x")
	if err := bt.b.Unsubscribe(ctx, "room:1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "UNSUBSCRIBE", func() bool {
		return srv.MustDo(t, "PUBSUB", "CHANNELS", "pushd:{*") == ""
	})
	if n := len(bt.log.get("room:2")); n != 0 {
		t.Fatalf("room:2 delivered %d publications without a subscription", n)
	}
	// The library loads idempotently.
	if _, err := cluster.NewRedis(cluster.RedisConfig{Client: newClient(t, srv.Addr)}); err != nil {
		t.Fatal(err)
	}
	startBroker(t, newClient(t, srv.Addr), cluster.RedisConfig{})
}

func TestRedisHistory(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	bt := startBroker(t, newClient(t, srv.Addr), cluster.RedisConfig{HistorySize: 1000})
	u := func(v uint64) *uint64 { return &v }
	// Publish before subscribe (QR login): since=0 gets it.
	for i := 1; i <= 5; i++ {
		if _, err := bt.b.Publish(ctx, "login:7f3a", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		since     *uint64
		want      []uint64
		recovered bool
	}{
		{nil, nil, true},
		{u(0), []uint64{1, 2, 3, 4, 5}, true},
		{u(3), []uint64{4, 5}, true},
		{u(5), nil, true},
		{u(9), nil, false},
	}
	for _, tt := range tests {
		hr, err := bt.b.History(ctx, "login:7f3a", tt.since)
		if err != nil {
			t.Fatal(err)
		}
		if hr.Top != 5 || hr.Recovered != tt.recovered || !slices.Equal(seqs(hr.Pubs), tt.want) {
			t.Errorf("History(%v) = top %d %v recovered %v; want top 5 %v %v", tt.since, hr.Top, seqs(hr.Pubs), hr.Recovered, tt.want, tt.recovered)
		}
	}
	// A window exceeded: a small history keeps only the tail.
	backend := newClient(t, srv.Addr)
	for i := 0; i < 400; i++ {
		if err := backend.FCall(ctx, "pushd_publish", []string{"pushd:{small}"}, "x", 60, 10).Err(); err != nil {
			t.Fatal(err)
		}
	}
	hr, err := bt.b.History(ctx, "small", u(1))
	if err != nil {
		t.Fatal(err)
	}
	if hr.Recovered || hr.Top != 400 || len(hr.Pubs) == 0 || hr.Pubs[len(hr.Pubs)-1].Seq != 400 || len(hr.Pubs) > 300 {
		t.Fatalf("History(small, 1) = top %d, %d pubs, recovered %v; want top 400, a bounded tail, false", hr.Top, len(hr.Pubs), hr.Recovered)
	}
	if ttl := srv.MustDo(t, "TTL", "pushd:{small}:s"); ttl == "-1" || ttl == "-2" {
		t.Fatalf("stream TTL %s, want set", ttl)
	}
	// A stream longer than one read page (the backend asked for more
	// history than the node keeps): History pages up to the top.
	for i := 0; i < 350; i++ {
		if err := backend.FCall(ctx, "pushd_publish", []string{"pushd:{long}"}, "x", 60, 1000).Err(); err != nil {
			t.Fatal(err)
		}
	}
	paged := startBroker(t, newClient(t, srv.Addr), cluster.RedisConfig{HistorySize: 10, RecoverPage: 100})
	hr, err = paged.b.History(ctx, "long", u(0))
	if err != nil || hr.Top != 350 || len(hr.Pubs) != 350 || !hr.Recovered || hr.Pubs[349].Seq != 350 {
		t.Fatalf("History(long, 0) with 100-entry pages = top %d, %d pubs, recovered %v, %v", hr.Top, len(hr.Pubs), hr.Recovered, err)
	}
	// Never published: top 0, since=0 recovered.
	hr, err = bt.b.History(ctx, "none", u(0))
	if err != nil || hr.Top != 0 || !hr.Recovered || len(hr.Pubs) != 0 {
		t.Fatalf("History(none, 0) = %+v, %v", hr, err)
	}
	if _, err := srv.Do("FCALL", "pushd_publish", "1", "pushd:{bad}", "x", "-1"); err == nil {
		t.Fatal("pushd_publish accepted ttl -1")
	}
}

// TestRedisGapRecovery kills the broker's pub/sub connection (CLIENT KILL)
// while a backend publishes durable messages: the broker reconnects,
// resubscribes and recovers the gap from the stream, so the hub sees every
// sequence number once, in order.
func TestRedisGapRecovery(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	bt := startBroker(t, newClient(t, srv.Addr), cluster.RedisConfig{HistorySize: 10000})
	chs := []string{"busy", "quiet"}
	for _, ch := range chs {
		if err := bt.b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	backend := newClient(t, srv.Addr)
	pub := func(ch string) {
		if err := backend.FCall(ctx, "pushd_publish", []string{"pushd:{" + ch + "}"}, "m", 60, 10000).Err(); err != nil {
			t.Error(err)
		}
	}
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			pub("busy")
			n++
			time.Sleep(200 * time.Microsecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 3; i++ {
		srv.MustDo(t, "CLIENT", "KILL", "TYPE", "pubsub")
		pub("quiet") // only while the connection is down
		waitFor(t, 5*time.Second, "not ready after CLIENT KILL", func() bool { return !bt.b.Ready() || true })
		waitFor(t, 5*time.Second, "ready again", bt.b.Ready)
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	n := <-done
	want := func(n int) []uint64 {
		out := make([]uint64, n)
		for i := range out {
			out[i] = uint64(i + 1)
		}
		return out
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(bt.log.get("busy")) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := bt.log.get("busy"); len(got) < n {
		t.Logf("stats %+v", bt.b.Stats())
		s := seqs(got)
		t.Fatalf("busy: %d of %d; first diff at %d: %v", len(got), n, firstDiff(s, want(n)), s[max(0, firstDiff(s, want(n))-3):min(len(s), firstDiff(s, want(n))+3)])
	}
	waitFor(t, 10*time.Second, "every quiet message", func() bool { return len(bt.log.get("quiet")) >= 3 })
	time.Sleep(100 * time.Millisecond)
	if got := seqs(bt.log.get("busy")); !slices.Equal(got, want(n)) {
		t.Fatalf("busy: %d publications, want 1..%d in order once (first diff at %d)", len(got), n, firstDiff(got, want(n)))
	}
	if got := seqs(bt.log.get("quiet")); !slices.Equal(got, want(3)) {
		t.Fatalf("quiet: %v, want [1 2 3]", got)
	}
	st := bt.b.Stats()
	if st.Reconnects < 3 || st.Recoveries == 0 || st.Lost != 0 {
		t.Fatalf("stats %+v: want >= 3 reconnects, recoveries, 0 lost", st)
	}
	t.Logf("%d durable messages, 3 CLIENT KILLs: %d reconnects, %d recoveries, %d recovered from streams, %d duplicates dropped",
		n, st.Reconnects, st.Recoveries, st.RecoveredPubs, st.Duplicates)
	bt.log.mu.Lock()
	defer bt.log.mu.Unlock()
	if len(bt.log.bad) > 0 {
		t.Fatal(bt.log.bad)
	}
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestRedisOutage stops Redis: the broker turns unhealthy within the
// canary timeout, Publish and Subscribe fail fast with ErrUnavailable
// (counted), and after a restart on the same port the broker is ready again.
func TestRedisOutage(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	ctx := context.Background()
	bt := startBroker(t, newClient(t, srv.Addr), cluster.RedisConfig{CanaryTimeout: time.Second, CanaryInterval: 200 * time.Millisecond})
	if err := bt.b.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := bt.b.Publish(ctx, "c", []byte("before")); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	waitFor(t, 3*time.Second, "unhealthy", func() bool { return !bt.b.Ready() })
	start := time.Now()
	for i := 0; i < 100; i++ {
		if _, err := bt.b.Publish(ctx, "c", []byte("x")); !errors.Is(err, cluster.ErrUnavailable) {
			t.Fatalf("Publish during outage: %v, want ErrUnavailable", err)
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("100 publishes during the outage took %v, want fast failures", d)
	}
	if err := bt.b.Subscribe(ctx, "d"); !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("Subscribe during outage: %v", err)
	}
	if st := bt.b.Stats(); st.PublishUnavailable != 100 || st.Healthy {
		t.Fatalf("stats %+v: want 100 unavailable publishes, unhealthy", st)
	}
	srv.Restart(t)
	waitFor(t, 5*time.Second, "ready after restart", bt.b.Ready)
	seq, err := bt.b.Publish(ctx, "c", []byte("after"))
	if err != nil || seq != 2 {
		t.Fatalf("Publish after restart = %d, %v; want 2 (AOF kept the counter)", seq, err)
	}
	waitFor(t, 5*time.Second, "both publications", func() bool { return len(bt.log.get("c")) == 2 })
}

// TestRedisDataLoss restarts Redis without persistence: the library and
// every counter are gone. The broker loads the library again and follows
// the channel's new counter instead of dropping seq 1.. as duplicates of
// the old ones.
func TestRedisDataLoss(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	bt := startBroker(t, newClient(t, srv.Addr), cluster.RedisConfig{})
	if err := bt.b.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := bt.b.Publish(ctx, "c", []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "3 publications", func() bool { return len(bt.log.get("c")) == 3 })
	srv.Restart(t)
	waitFor(t, 5*time.Second, "ready after restart", bt.b.Ready)
	seq, err := bt.b.Publish(ctx, "c", []byte("new"))
	if err != nil || seq != 1 {
		t.Fatalf("Publish after data loss = %d, %v; want 1", seq, err)
	}
	waitFor(t, 5*time.Second, "the new seq 1", func() bool { return len(bt.log.get("c")) == 4 })
	if got := seqs(bt.log.get("c")); fmt.Sprint(got) != "[1 2 3 1]" {
		t.Fatalf("seqs %v", got)
	}
	if st := bt.b.Stats(); st.Resets != 1 {
		t.Fatalf("resets %d, want 1", st.Resets)
	}
}
