package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// idleFlags configure the idle scenario.
type idleFlags struct {
	plateaus      string
	sources       string
	concurrency   int
	settleTimeout time.Duration
	maxBytes      float64
	maxGrowth     int
	pingInterval  time.Duration
	loops         int
	workers       int
	pushdArgs     string
	path          string
	maxBytesLean  float64
	sse           bool // the client opens SSE streams on path (idlesse)
	// idleWait, when set, leaves the server alone this long at each
	// plateau before the forced GCs and reads RSS again: what an idle
	// server holds after the runtime's own periodic GC and scavenger.
	idleWait time.Duration
}

func idleScenario() scenario {
	return scenario{
		name: "idle",
		about: "Opens idle upgraded WebSocket connections in plateaus (default 2,000 then 19,000) from a\n" +
			"client process using many 127.0.x.y sources with IP_BIND_ADDRESS_NO_PORT. At each plateau:\n" +
			"wait until /stats conns settles, read VmRSS (before forced GC), POST /debug/freeosmemory three\n" +
			"times (a grown goroutine stack halves once per GC), read VmRSS, /stats goroutines, /proc/meminfo\n" +
			"Slab and the runtime's memory classes. Reports RSS slope = user-space bytes per idle connection,\n" +
			"after and before the forced GCs (the invariant uses after). With -idle-wait D, each plateau\n" +
			"also waits D untouched before the forced GCs and reads VmRSS again: the slope an idle server\n" +
			"reaches by itself (the runtime forces a GC every 2 min and its scavenger returns pages).\n" +
			"Invariants (pushd): bytes/conn <= -max-bytes; goroutines at the top plateau <= first + -max-growth\n" +
			"and <= 64 + loops + workers;\n" +
			"every connection upgrades. The ref server is reported alongside, without invariants.",
		timeout: 5 * time.Minute,
		setup: func(fs *flag.FlagSet) func(context.Context, *harness) (*report, error) {
			f := &idleFlags{}
			fs.StringVar(&f.plateaus, "plateaus", "2000,19000", "connection counts to measure at (ascending)")
			fs.StringVar(&f.sources, "sources", "127.0.1.0/24", "client source addresses (list/CIDRs)")
			fs.IntVar(&f.concurrency, "concurrency", 64, "concurrent dials+handshakes")
			fs.DurationVar(&f.settleTimeout, "settle-timeout", 60*time.Second, "wait this long for /stats conns to reach a plateau")
			fs.Float64Var(&f.maxBytes, "max-bytes", 4096, "pushd: max user-space bytes per idle connection (RSS slope)")
			fs.IntVar(&f.maxGrowth, "max-growth", 16, "pushd: max goroutine growth between first and last plateau")
			fs.DurationVar(&f.pingInterval, "ping-interval", 10*time.Minute, "pushd -ping-interval (idle clients do not answer pings)")
			fs.IntVar(&f.loops, "loops", 2, "pushd -loops (event loops); part of the goroutine bound")
			fs.IntVar(&f.workers, "workers", 64, "pushd -workers (pool size); part of the goroutine bound")
			fs.StringVar(&f.pushdArgs, "pushd-args", "", "extra pushd flags, space-separated")
			fs.StringVar(&f.path, "path", "/ws?ch=idle", "upgrade request path: by default every connection is subscribed to one channel")
			fs.Float64Var(&f.maxBytesLean, "max-bytes-lean", 1024, "pushd-lean: max user-space bytes per idle connection (RSS slope)")
			fs.DurationVar(&f.idleWait, "idle-wait", 0, "at each plateau, wait this long untouched before the forced GCs and read RSS again "+
				"(2m30s covers the runtime's 2-minute forced GC; give bench a -timeout that holds plateaus × servers × wait)")
			return func(ctx context.Context, h *harness) (*report, error) { return runIdle(ctx, h, f) }
		},
	}
}

// plateau is one measurement point.
type plateau struct {
	Conns    int    `json:"conns"`
	RSSBytes uint64 `json:"rss_bytes"`
	// RSSNoGCBytes is RSS before the forced GCs (RSSBytes is after them).
	RSSNoGCBytes uint64 `json:"rss_no_gc_bytes"`
	// RSSIdleBytes is RSS after -idle-wait untouched, before the forced
	// GCs (0 without -idle-wait).
	RSSIdleBytes uint64  `json:"rss_idle_bytes,omitempty"`
	Goroutines   int     `json:"goroutines"`
	HeapInuse    uint64  `json:"heap_inuse"`
	SlabBytes    uint64  `json:"host_slab_bytes"`
	OpenSecs     float64 `json:"open_seconds"`
	ConnsPerS    float64 `json:"conns_per_second"`
	// MemStats holds the Go runtime's memory classes (runtime.MemStats
	// fields from /debug/pprof/heap?debug=1, pushd only), so the RSS slope
	// can be split into heap, stacks, span and GC metadata.
	MemStats map[string]uint64 `json:"memstats,omitempty"`
}

// idleResult is one server's measurements.
type idleResult struct {
	Server           string         `json:"server"`
	Plateaus         []plateau      `json:"plateaus"`
	BytesPerConn     float64        `json:"bytes_per_conn"`
	BytesPerConnNoGC float64        `json:"bytes_per_conn_no_gc"`
	BytesPerConnIdle float64        `json:"bytes_per_conn_idle_wait,omitempty"`
	HeapPerConn      float64        `json:"heap_inuse_per_conn"`
	SlabPerConn      float64        `json:"host_slab_per_conn_both_ends"`
	GoroutineGrowth  int            `json:"goroutine_growth"`
	ConnectFailures  int            `json:"connect_failures"`
	ConnectErrors    map[string]int `json:"connect_errors,omitempty"`
	BaselineRSSBytes uint64         `json:"baseline_rss_bytes"`
}

func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%w: bad count %q", ErrUsage, f)
		}
		out = append(out, n)
	}
	if len(out) < 2 || !slices.IsSorted(out) || out[0] == out[len(out)-1] {
		return nil, fmt.Errorf("%w: need at least two ascending plateaus, got %q", ErrUsage, s)
	}
	return out, nil
}

func runIdle(ctx context.Context, h *harness, f *idleFlags) (*report, error) {
	counts, err := parseCounts(f.plateaus)
	if err != nil {
		return nil, err
	}
	if f.idleWait > 0 {
		// Each server waits idleWait per plateau; refuse a run that the
		// scenario's deadline would cut short in the middle of a wait.
		need := 30*time.Second + time.Duration(len(counts)*len(h.servers))*f.idleWait
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < need {
			return nil, fmt.Errorf("%w: -idle-wait %v over %d plateaus needs a longer -timeout (the waits alone take %v)", ErrUsage, f.idleWait, len(counts), need-30*time.Second)
		}
	}
	rep := &report{}
	nsrc, err := prepareClients(f.sources, counts[len(counts)-1], rep)
	if err != nil {
		return nil, err
	}
	rep.notef("pushd runs with -ping-interval %v: idle clients never read, so they need not answer pings", f.pingInterval)
	rep.notef("pushd -loops %d -workers %d: goroutine bound 64 + loops + workers = %d", f.loops, f.workers, 64+f.loops+f.workers)
	rep.notef("%d source addresses (%s), IP_BIND_ADDRESS_NO_PORT; client in its own process", nsrc, f.sources)
	pushdArgs := append([]string{"-echo", "-ping-interval", f.pingInterval.String(),
		"-loops", itoa(f.loops), "-workers", itoa(f.workers)}, strings.Fields(f.pushdArgs)...)
	var results []idleResult
	for _, spec := range h.specs(pushdArgs) {
		res, err := measureIdle(ctx, h, spec, f, counts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec.name, err)
		}
		results = append(results, *res)
	}
	rep.Results = results
	rep.text = idleText(results, counts)
	name := func(r idleResult) string { return r.Server }
	ri := find(results, "ref", name)
	for _, r := range results {
		if !strings.HasPrefix(r.Server, "pushd") {
			continue
		}
		checkIdle(rep, r, f)
		if ri >= 0 && results[ri].BytesPerConn > 0 {
			rep.notef("%s/ref bytes per connection = %.3f (same run)", r.Server, r.BytesPerConn/results[ri].BytesPerConn)
		}
	}
	return rep, nil
}

// checkIdle applies the idle invariants to a pushd result.
func checkIdle(rep *report, p idleResult, f *idleFlags) {
	first, last := p.Plateaus[0], p.Plateaus[len(p.Plateaus)-1]
	if p.ConnectFailures > 0 {
		rep.failf("%s: %d connections failed: %v", p.Server, p.ConnectFailures, p.ConnectErrors)
	}
	if limit := f.limit(p.Server); p.BytesPerConn > limit {
		rep.failf("%s: %.0f bytes per idle connection > %.0f", p.Server, p.BytesPerConn, limit)
	}
	if last.Goroutines > first.Goroutines+f.maxGrowth {
		rep.failf("%s: goroutines grew from %d at %d conns to %d at %d conns (> +%d)",
			p.Server, first.Goroutines, first.Conns, last.Goroutines, last.Conns, f.maxGrowth)
	}
	if bound := 64 + f.loops + f.workers; last.Goroutines > bound {
		rep.failf("%s: %d goroutines at %d conns > 64 + loops + workers = %d", p.Server, last.Goroutines, last.Conns, bound)
	}
}

// limit is the bytes-per-connection bound of a pushd server.
func (f *idleFlags) limit(server string) float64 {
	if server == "pushd-lean" {
		return f.maxBytesLean
	}
	return f.maxBytes
}

func idleText(results []idleResult, counts []int) string {
	rows := [][]string{{"server", "conns", "RSS MiB", "heap_inuse MiB", "goroutines", "host Slab MiB", "open conns/s"}}
	for _, r := range results {
		for _, p := range r.Plateaus {
			rows = append(rows, []string{r.Server, itoa(p.Conns), mib(p.RSSBytes), mib(p.HeapInuse),
				itoa(p.Goroutines), mib(p.SlabBytes), fmt.Sprintf("%.0f", p.ConnsPerS)})
		}
	}
	s := table(rows)
	n0, n1 := counts[0], counts[len(counts)-1]
	rows = [][]string{{"server", fmt.Sprintf("bytes/conn (RSS slope %d→%d)", n0, n1), "same, before forced GC", "same, after idle wait (no forced GC)", "heap_inuse/conn", "kernel Slab/conn (both ends)", "goroutine growth"}}
	for _, r := range results {
		idle := "-"
		if r.BytesPerConnIdle != 0 {
			idle = fmt.Sprintf("%.0f", r.BytesPerConnIdle)
		}
		rows = append(rows, []string{r.Server, fmt.Sprintf("%.0f", r.BytesPerConn), fmt.Sprintf("%.0f", r.BytesPerConnNoGC), idle, fmt.Sprintf("%.0f", r.HeapPerConn),
			fmt.Sprintf("%.0f", r.SlabPerConn), fmt.Sprintf("%+d", r.GoroutineGrowth)})
	}
	s += "\n" + table(rows)
	if cls := memClassText(results); cls != "" {
		s += "\n" + cls
	}
	return s
}

// memClasses are the runtime.MemStats fields the slope is split into
// (HeapInuse is in the table above; Sys is everything the runtime holds).
var memClasses = []string{"TotalAlloc", "Mallocs", "HeapAlloc", "HeapInuse", "HeapIdle", "HeapReleased", "StackInuse", "StackSys", "MSpanSys", "GCSys", "OtherSys", "BuckHashSys", "Sys"}

// memClassText splits each pushd server's slope by runtime memory class,
// in bytes per connection between the first and last plateau.
func memClassText(results []idleResult) string {
	rows := [][]string{append([]string{"server (runtime memory, B/conn)"}, memClasses...)}
	for _, r := range results {
		first, last := r.Plateaus[0], r.Plateaus[len(r.Plateaus)-1]
		if first.MemStats == nil || last.MemStats == nil {
			continue
		}
		dn := float64(last.Conns - first.Conns)
		row := []string{r.Server}
		for _, k := range memClasses {
			row = append(row, fmt.Sprintf("%.0f", (float64(last.MemStats[k])-float64(first.MemStats[k]))/dn))
		}
		rows = append(rows, row)
	}
	if len(rows) == 1 {
		return ""
	}
	return table(rows)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// measureIdle runs the plateaus against one server.
func measureIdle(ctx context.Context, h *harness, spec serverSpec, f *idleFlags, counts []int) (*idleResult, error) {
	h.logf("%s: starting", spec.name)
	srv, err := startServer(ctx, spec, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	res := &idleResult{Server: spec.name, ConnectErrors: map[string]int{}}
	if err := srv.freeOSMemory(ctx); err != nil {
		return nil, err
	}
	if res.BaselineRSSBytes, err = procRSS(srv.pid()); err != nil {
		return nil, err
	}
	cl, err := h.startClient("idle", []string{"-target", srv.wsAddr, "-sources", f.sources,
		"-concurrency", itoa(f.concurrency), "-path", f.path, "-tls=" + strconv.FormatBool(srv.wss), "-sse=" + strconv.FormatBool(f.sse)})
	if err != nil {
		return nil, err
	}
	defer cl.stop()
	for _, n := range counts {
		start := time.Now()
		if err := cl.send(clientCmd{Cmd: "open", Total: n}); err != nil {
			return nil, err
		}
		ev, err := cl.expect(ctx, f.settleTimeout+time.Duration(n)*time.Millisecond, "opened")
		if err != nil {
			return nil, err
		}
		took := time.Since(start)
		res.ConnectFailures += ev.Failed
		for k, v := range ev.Errors {
			res.ConnectErrors[k] += v
		}
		if ev.Open != n {
			return nil, fmt.Errorf("client holds %d connections, want %d (errors %v)", ev.Open, n, ev.Errors)
		}
		p, err := settle(ctx, srv, n, f.settleTimeout, f.idleWait)
		if err != nil {
			return nil, fmt.Errorf("%w\n%s", err, srv.tail(20))
		}
		p.OpenSecs = took.Seconds()
		if ev.Millis > 0 {
			p.ConnsPerS = float64(n-prevConns(res)) / (float64(ev.Millis) / 1000)
		}
		h.logf("%s: %d conns, RSS %s MiB, goroutines %d", spec.name, n, mib(p.RSSBytes), p.Goroutines)
		if h.profileDir != "" && strings.HasPrefix(spec.name, "pushd") {
			// One heap profile per plateau: go tool pprof -base <first> <last>
			// shows what each added connection holds.
			file := filepath.Join(h.profileDir, fmt.Sprintf("%s-idle-heap-%d.pb.gz", spec.name, n))
			if err := srv.saveProfile(ctx, "/debug/pprof/heap", file); err != nil {
				h.logf("%s: heap profile: %v", spec.name, err)
			}
		}
		res.Plateaus = append(res.Plateaus, p)
	}
	first, last := res.Plateaus[0], res.Plateaus[len(res.Plateaus)-1]
	dn := float64(last.Conns - first.Conns)
	res.BytesPerConn = (float64(last.RSSBytes) - float64(first.RSSBytes)) / dn
	res.BytesPerConnNoGC = (float64(last.RSSNoGCBytes) - float64(first.RSSNoGCBytes)) / dn
	if f.idleWait > 0 {
		res.BytesPerConnIdle = (float64(last.RSSIdleBytes) - float64(first.RSSIdleBytes)) / dn
	}
	res.HeapPerConn = (float64(last.HeapInuse) - float64(first.HeapInuse)) / dn
	res.SlabPerConn = (float64(last.SlabBytes) - float64(first.SlabBytes)) / dn
	res.GoroutineGrowth = last.Goroutines - first.Goroutines
	if strings.HasPrefix(spec.name, "pushd") && res.BytesPerConn > f.limit(spec.name) {
		if top, err := h.profileTop(ctx, srv, "/debug/pprof/heap", "pushd-idle-heap.pb.gz", 25); err == nil {
			h.logf("pushd heap profile at %d conns (-sample_index=inuse_space):\n%s", last.Conns, top)
		} else {
			h.logf("pushd heap profile: %v", err)
		}
	}
	if err := cl.send(clientCmd{Cmd: "quit"}); err == nil {
		_, _ = cl.expect(ctx, 30*time.Second, "bye")
	}
	return res, nil
}

func prevConns(r *idleResult) int {
	if len(r.Plateaus) == 0 {
		return 0
	}
	return r.Plateaus[len(r.Plateaus)-1].Conns
}

// settleGoroutines waits until seven /stats reads 300 ms apart report the
// same goroutine count (or timeout passes) and returns the last count.
func settleGoroutines(ctx context.Context, srv *serverProc, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	last, same := -1, 0
	for same < 6 && time.Now().Before(deadline) {
		st, err := srv.stats(ctx)
		if err != nil {
			return 0, err
		}
		if st.Goroutines == last {
			same++
		} else {
			last, same = st.Goroutines, 0
		}
		if !sleepCtx(ctx, 300*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	return last, nil
}

// settle waits until the server reports n connections on three polls in a
// row, then frees OS memory and samples RSS three times (median). With
// idleWait > 0 it first leaves the server untouched that long and records
// RSS then (RSSIdleBytes).
func settle(ctx context.Context, srv *serverProc, n int, timeout, idleWait time.Duration) (plateau, error) {
	deadline := time.Now().Add(timeout)
	stable := 0
	var st serverStats
	for stable < 3 {
		if time.Now().After(deadline) {
			return plateau{}, fmt.Errorf("%w: %s reports %d conns, want %d", ErrTimeout, srv.name, st.Conns, n)
		}
		var err error
		if st, err = srv.stats(ctx); err != nil {
			return plateau{}, err
		}
		if st.Conns == int64(n) {
			stable++
		} else {
			stable = 0
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return plateau{}, ctx.Err()
		}
	}
	// Let goroutines settle too: workers spawned by the handshake burst
	// expire after about a second idle (ants), and a count taken before
	// that would charge them to the plateau.
	if _, err := settleGoroutines(ctx, srv, 15*time.Second); err != nil {
		return plateau{}, err
	}
	// RSS as the process left it, before any forced GC.
	rssNoGC, err := procRSS(srv.pid())
	if err != nil {
		return plateau{}, err
	}
	var rssIdle uint64
	if idleWait > 0 {
		if !sleepCtx(ctx, idleWait) {
			return plateau{}, ctx.Err()
		}
		if rssIdle, err = procRSS(srv.pid()); err != nil {
			return plateau{}, err
		}
	}
	// Forced GCs: a goroutine stack that grew during the ramp shrinks by
	// half per GC cycle (never in one), and a long-running server runs many;
	// three cycles let the plateau show connections, not the ramp's stacks.
	for range 3 {
		if err := srv.freeOSMemory(ctx); err != nil {
			return plateau{}, err
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	var rss []uint64
	for range 3 {
		v, err := procRSS(srv.pid())
		if err != nil {
			return plateau{}, err
		}
		rss = append(rss, v)
		time.Sleep(200 * time.Millisecond)
	}
	slices.Sort(rss)
	st, err = srv.stats(ctx)
	if err != nil {
		return plateau{}, err
	}
	if st.Conns != int64(n) {
		return plateau{}, fmt.Errorf("%s: conns moved to %d after settling at %d", srv.name, st.Conns, n)
	}
	slab, _ := meminfo("Slab:")
	var ms map[string]uint64
	if strings.HasPrefix(srv.name, "pushd") {
		ms, _ = srv.memStats(ctx) // best effort: the breakdown is informative
	}
	return plateau{Conns: n, RSSBytes: rss[1], RSSNoGCBytes: rssNoGC, RSSIdleBytes: rssIdle, Goroutines: st.Goroutines, HeapInuse: st.HeapInuse, SlabBytes: slab, MemStats: ms}, nil
}
