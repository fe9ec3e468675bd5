package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pushd/pushd/internal/srcaddr"
)

// slowConsumersFlags configure the slowconsumers scenario.
type slowConsumersFlags struct {
	client    consumerFlags
	sources   string
	policies  string
	slack     int64
	pushdArgs string
}

func slowConsumersScenario() scenario {
	return scenario{
		name: "slowconsumers",
		about: "1,000 clients that never read + 1,000 that read everything, spread over -channels channels\n" +
			"(bench:0..N-1), in one client process apart from pushd; that process also publishes -total bytes\n" +
			"through POST /publish (one publisher per channel, each normal client kept within half the\n" +
			"budget so only the never-reading ones overflow). The slow clients set SO_RCVBUF and TCP_MAXSEG\n" +
			"small before connecting, so the kernel holds ~100 KB per slow socket instead of ~3 MB and the\n" +
			"run measures pushd's own bound. One pushd per policy in -policies (disconnect is the default\n" +
			"policy; drop and conflate via -policy 'bench*=...'). The parent polls /stats heap_inuse every\n" +
			"50 ms throughout. Invariants: max heap_inuse <= -max-pending × slow + -slack; every normal\n" +
			"client gets every push of its channel in order; disconnect: every slow client finds a 4001\n" +
			"close and /stats slow_disconnects and closed_by_code[4001] count all; drop: every slow client\n" +
			"finds pushes + gap notices covering every seq once, /stats dropped > 0 and gap_notices = gaps\n" +
			"seen; conflate: every slow client ends at the last seq having missed some, /stats conflated\n" +
			">= pushes missed. With -total above the heap bound the heap check can tell an unbounded queue.",
		timeout: 15 * time.Minute,
		setup: func(fs *flag.FlagSet) func(context.Context, *harness) (*report, error) {
			f := &slowConsumersFlags{}
			f.client.register(fs)
			fs.StringVar(&f.sources, "sources", "127.0.1.0/24", "client source addresses (list/CIDRs)")
			fs.StringVar(&f.policies, "policies", "disconnect,drop,conflate", "policies to run, one pushd each")
			fs.Int64Var(&f.slack, "slack", 64<<20, "heap allowance beyond -max-pending × slow clients, bytes")
			fs.StringVar(&f.pushdArgs, "pushd-args", "", "extra pushd flags, space-separated")
			return func(ctx context.Context, h *harness) (*report, error) { return runSlowConsumers(ctx, h, f) }
		},
	}
}

// slowConsumersResult is one policy's run.
type slowConsumersResult struct {
	Policy      string           `json:"policy"`
	MaxHeap     uint64           `json:"max_heap_inuse"`
	MaxRSS      uint64           `json:"max_rss"`
	HeapSamples int              `json:"heap_samples"`
	HeapBound   uint64           `json:"heap_bound"`
	Client      *consumersResult `json:"client"`
	Stats       map[string]any   `json:"stats"`
}

func runSlowConsumers(ctx context.Context, h *harness, f *slowConsumersFlags) (*report, error) {
	srcs, err := srcaddr.ParseList(f.sources)
	if err != nil {
		return nil, err
	}
	if _, err := srcaddr.RaiseNofile(); err != nil {
		return nil, err
	}
	if !slices.Contains(h.servers, "pushd") {
		return nil, fmt.Errorf("%w: slowconsumers measures pushd only (-servers must include pushd)", ErrUsage)
	}
	rep := &report{}
	c := f.client
	for _, p := range srcaddr.Preflight(srcaddr.Plan{Conns: c.slow + c.normal, Sources: len(srcs), Destinations: 1, LocalServer: true}) {
		if p.Severity == srcaddr.Fail {
			return nil, fmt.Errorf("preflight: %s", p)
		}
		rep.notef("preflight %s", p)
	}
	bound := uint64(c.maxPending)*uint64(c.slow) + uint64(f.slack)
	rep.notef("%d slow (SO_RCVBUF %d, TCP_MAXSEG %d) + %d normal clients on %d channels; %d MiB published as %d-byte messages; pushd -max-pending %d: heap bound %.1f MiB",
		c.slow, c.rcvbuf, c.mss, c.normal, c.channels, c.total>>20, c.msgSize, c.maxPending, float64(bound)/(1<<20))
	if uint64(c.total) <= bound {
		rep.notef("-total (%d MiB) <= the heap bound: an unbounded queue would hold at most what was published, so the heap check cannot fail here; the policy checks still can",
			c.total>>20)
	}
	var results []slowConsumersResult
	for _, pol := range strings.Split(f.policies, ",") {
		pol = strings.TrimSpace(pol)
		args := []string{"-max-pending", itoa(c.maxPending), "-ping-interval", "10m", "-history-size", "0",
			// The 4001 close frame waits behind what the slow socket holds,
			// and the slow clients read only after publishing ends: pushd
			// must not give up on their full sockets before that.
			"-close-timeout", "5m", "-write-timeout", "5m"}
		switch pol {
		case "disconnect":
		case "drop", "conflate":
			args = append(args, "-policy", "bench*="+pol)
		default:
			return nil, fmt.Errorf("%w: unknown policy %q", ErrUsage, pol)
		}
		args = append(args, strings.Fields(f.pushdArgs)...)
		r, err := measureSlowConsumers(ctx, h, f, pol, args, bound)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pol, err)
		}
		checkSlowConsumersResult(rep, r, f)
		results = append(results, *r)
	}
	rep.Results = results
	rows := [][]string{{"policy", "published MiB", "publish s", "max heap_inuse MiB", "bound MiB", "max RSS MiB",
		"normal complete", "slow ok", "slow_disconnects", "4001 closes", "dropped", "gap_notices", "conflated"}}
	for _, r := range results {
		num := func(k string) string {
			v, _ := r.Stats[k].(float64)
			return fmt.Sprintf("%.0f", v)
		}
		closed, _ := r.Stats["closed_by_code"].(map[string]any)
		c4001, _ := closed["4001"].(float64)
		rows = append(rows, []string{r.Policy, fmt.Sprintf("%.0f", float64(r.Client.PublishedBytes)/(1<<20)),
			fmt.Sprintf("%.1f", r.Client.PublishSeconds), mib(r.MaxHeap), mib(r.HeapBound), mib(r.MaxRSS),
			fmt.Sprintf("%d/%d", r.Client.NormalComplete, r.Client.NormalConns), fmt.Sprintf("%d/%d", r.Client.SlowOK, r.Client.SlowConns),
			num("slow_disconnects"), fmt.Sprintf("%.0f", c4001), num("dropped"), num("gap_notices"), num("conflated")})
	}
	rep.text = table(rows)
	return rep, nil
}

func measureSlowConsumers(ctx context.Context, h *harness, f *slowConsumersFlags, policy string, args []string, bound uint64) (*slowConsumersResult, error) {
	h.logf("pushd (%s): starting", policy)
	srv, err := startServer(ctx, serverSpec{name: "pushd", argv: append([]string{h.pushdBin}, args...)}, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	cfl := f.client
	cfl.admin, cfl.policy = srv.adminAddr, policy
	cl, err := h.startClient("consumers", append([]string{"-target", srv.wsAddr, "-sources", f.sources, "-max-life", "30m"}, cfl.args()...))
	if err != nil {
		return nil, err
	}
	defer cl.stop()
	ev, err := cl.expect(ctx, 5*time.Minute, "opened")
	if err != nil {
		return nil, err
	}
	if ev.Failed > 0 {
		return nil, fmt.Errorf("%d connections failed: %v", ev.Failed, ev.Errors)
	}
	r := &slowConsumersResult{Policy: policy, HeapBound: bound}
	// Heap sampler, from before the first publication to the end.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if st, err := srv.stats(ctx); err == nil {
				mu.Lock()
				r.MaxHeap, r.MaxRSS = max(r.MaxHeap, st.HeapInuse), max(r.MaxRSS, st.RSSBytes)
				r.HeapSamples++
				mu.Unlock()
			}
			select {
			case <-t.C:
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	if err := cl.send(clientCmd{Cmd: "run"}); err != nil {
		return nil, err
	}
	if _, err := cl.expect(ctx, 10*time.Minute, "published"); err != nil {
		return nil, err
	}
	h.logf("pushd (%s): published; checking the slow clients", policy)
	ev, err = cl.expect(ctx, 5*time.Minute, "result")
	if err != nil {
		return nil, err
	}
	r.Client = ev.Consumers
	// Counters settle once the last closes are processed.
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if r.Stats, err = rawStats(ctx, srv); err != nil {
		return nil, err
	}
	h.logf("pushd (%s): max heap_inuse %s MiB (bound %s MiB) over %d samples", policy, mib(r.MaxHeap), mib(bound), r.HeapSamples)
	return r, nil
}

// rawStats returns pushd's whole /stats document.
func rawStats(ctx context.Context, srv *serverProc) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.adminAddr+"/stats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := adminClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /stats: %w", err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, fmt.Errorf("decode /stats: %w", err)
	}
	return m, nil
}

func checkSlowConsumersResult(rep *report, r *slowConsumersResult, f *slowConsumersFlags) {
	c, cl := f.client, r.Client
	num := func(k string) float64 { v, _ := r.Stats[k].(float64); return v }
	pf := func(format string, args ...any) { rep.failf(r.Policy+": "+format, args...) }
	if r.HeapSamples < 10 {
		pf("only %d heap samples", r.HeapSamples)
	}
	if r.MaxHeap > r.HeapBound {
		pf("heap_inuse reached %s MiB > -max-pending × %d + slack = %s MiB", mib(r.MaxHeap), c.slow, mib(r.HeapBound))
	}
	if cl.SlowConns != c.slow || cl.NormalConns != c.normal {
		pf("connected %d slow, %d normal", cl.SlowConns, cl.NormalConns)
	}
	if want := int(c.total / int64(c.msgSize) / int64(c.channels) * int64(c.channels)); cl.Published != want {
		pf("published %d of %d messages", cl.Published, want)
	}
	if cl.NormalComplete != cl.NormalConns {
		pf("%d of %d normal clients received every push in order", cl.NormalComplete, cl.NormalConns)
	}
	if cl.SlowOK != cl.SlowConns {
		pf("%d of %d slow clients met the policy (close codes %v)", cl.SlowOK, cl.SlowConns, cl.SlowCloseCodes)
	}
	for _, e := range cl.Errors {
		rep.notef("%s: client: %s", r.Policy, e)
	}
	switch r.Policy {
	case "disconnect":
		closed, _ := r.Stats["closed_by_code"].(map[string]any)
		c4001, _ := closed["4001"].(float64)
		if num("slow_disconnects") != float64(cl.SlowConns) || c4001 != float64(cl.SlowConns) {
			pf("/stats slow_disconnects %v, closed_by_code[4001] %v; want %d", num("slow_disconnects"), c4001, cl.SlowConns)
		}
	case "drop":
		if num("dropped") < 1 || num("gap_notices") != float64(cl.Gaps) {
			pf("/stats dropped %v gap_notices %v; the slow clients read %d gap notices", num("dropped"), num("gap_notices"), cl.Gaps)
		}
	case "conflate":
		if num("conflated") < float64(cl.Missed) {
			pf("/stats conflated %v < %d pushes the slow clients missed", num("conflated"), cl.Missed)
		}
	}
	if r.Policy != "disconnect" && num("slow_disconnects") != 0 {
		pf("/stats slow_disconnects %v, want 0", num("slow_disconnects"))
	}
}
