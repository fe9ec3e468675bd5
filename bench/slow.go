package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/pushd/pushd/internal/srcaddr"
)

// slowScenarioFlags configure the slowwriters scenario.
type slowScenarioFlags struct {
	client    slowFlags
	sources   string
	maxCPU    float64
	stall     time.Duration
	pushdArgs string
}

func slowScenario() scenario {
	return scenario{
		name: "slowwriters",
		about: "1,000 slow writers each send masked 100-byte text frames one byte every 10 ms (TCP_NODELAY,\n" +
			"one segment per byte), frame after frame; 50 normal clients do echo round-trips every 100 ms.\n" +
			"Windows: -before = baseline (normal clients only), -slow-only (slow writers only, the normal\n" +
			"clients disconnected), -during = combined (slow writers + normal clients).\n" +
			"Slow writers and normal clients run in separate client processes, apart from the server.\n" +
			"Measures the server's utime+stime over each window as % of one core and the normal clients'\n" +
			"echo latency. Invariants (pushd): CPU in the slow-only window < -max-cpu % (measured, and\n" +
			"projected to the full specified rate when the client fell short); no normal echo timeout,\n" +
			"error or round-trip above -stall in the combined window; every completed slow frame echoed.",
		timeout: 3 * time.Minute,
		setup: func(fs *flag.FlagSet) func(context.Context, *harness) (*report, error) {
			f := &slowScenarioFlags{}
			f.client.register(fs)
			fs.StringVar(&f.sources, "sources", "127.0.1.0/24", "client source addresses (list/CIDRs)")
			fs.Float64Var(&f.maxCPU, "max-cpu", 5, "pushd: max CPU in the slow-only window, % of one core")
			fs.DurationVar(&f.stall, "stall", 250*time.Millisecond, "pushd: max normal-client echo round-trip in the combined window")
			fs.StringVar(&f.pushdArgs, "pushd-args", "", "extra pushd flags, space-separated")
			return func(ctx context.Context, h *harness) (*report, error) { return runSlow(ctx, h, f) }
		},
	}
}

// cpuWindow is a server's CPU over one window, in % of one core.
type cpuWindow struct {
	Seconds float64 `json:"seconds"`
	Pct     float64 `json:"pct_core"`
	UserPct float64 `json:"user_pct_core"`
	SysPct  float64 `json:"sys_pct_core"`
}

// slowServerResult is one server's slowwriters outcome over three windows:
// baseline (normal clients only), slow-only (slow writers only: the CPU
// verdict) and combined (slow writers + normal clients: the stall verdict).
type slowServerResult struct {
	Server   string    `json:"server"`
	Baseline cpuWindow `json:"baseline"`
	SlowOnly cpuWindow `json:"slow_only"`
	Combined cpuWindow `json:"combined"`
	// BytesPerSec and CPUPerByteUs are those of the slow-only window.
	BytesPerSec  float64 `json:"slow_bytes_per_second"`
	CPUPerByteUs float64 `json:"cpu_us_per_slow_byte"`
	// CPUProjectedPct is the slow-only CPU scaled to the specified
	// slow-writer rate: slow-only × target/actual bytes/s. It differs from
	// SlowOnly.Pct when the client could not send at the full rate (a busy
	// host).
	CPUProjectedPct     float64       `json:"cpu_projected_pct_core"`
	CombinedBytesPerSec float64       `json:"combined_slow_bytes_per_second"`
	Slow                *slowResult   `json:"slow"`          // slow-only window
	SlowCombined        *slowResult   `json:"slow_combined"` // combined window
	Normal              *normalResult `json:"normal"`        // Before = baseline, During = combined
}

func runSlow(ctx context.Context, h *harness, f *slowScenarioFlags) (*report, error) {
	srcs, err := srcaddr.ParseList(f.sources)
	if err != nil {
		return nil, err
	}
	if _, err := srcaddr.RaiseNofile(); err != nil {
		return nil, err
	}
	rep := &report{}
	for _, p := range srcaddr.Preflight(srcaddr.Plan{Conns: f.client.slow + f.client.normal, Sources: len(srcs), Destinations: 1, LocalServer: true}) {
		if p.Severity == srcaddr.Fail {
			return nil, fmt.Errorf("preflight: %s", p)
		}
		rep.notef("preflight %s", p)
	}
	target := float64(f.client.slow) / f.client.byteInterval.Seconds()
	rep.notef("target slow-writer load: %d clients × 1 byte/%v = %.0f one-byte segments/s", f.client.slow, f.client.byteInterval, target)
	rep.notef("windows: baseline %v (%d normal echo clients only), slow-only %v (%d slow writers, no normal client connected: CPU verdict < %.1f%%), combined %v (both: stall verdict)",
		f.client.before, f.client.normal, f.client.slowOnly, f.client.slow, f.maxCPU, f.client.during)
	pushdArgs := append([]string{"-echo"}, strings.Fields(f.pushdArgs)...)
	var results []slowServerResult
	for _, spec := range h.specs(pushdArgs) {
		r, err := measureSlow(ctx, h, spec, f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec.name, err)
		}
		results = append(results, *r)
	}
	for i := range results {
		r := &results[i]
		r.CPUProjectedPct = r.SlowOnly.Pct
		if r.BytesPerSec > 0 && r.BytesPerSec < target {
			r.CPUProjectedPct = r.SlowOnly.Pct * target / r.BytesPerSec
		}
	}
	rep.Results = results
	rep.text = slowText(results)
	name := func(r slowServerResult) string { return r.Server }
	pi, ri := find(results, "pushd", name), find(results, "ref", name)
	if pi >= 0 {
		checkSlow(rep, results[pi], f, target)
	}
	if ri >= 0 && time.Duration(results[ri].Normal.During.MaxUs)*time.Microsecond > f.stall {
		rep.notef("the ref server also had a normal echo above -stall (%s): the host itself is busy (load from other processes or the clients)",
			us(results[ri].Normal.During.MaxUs))
	}
	if pi >= 0 && ri >= 0 && results[ri].SlowOnly.Pct > 0 {
		rep.notef("pushd/ref CPU in the slow-only window = %.3f (same run)", results[pi].SlowOnly.Pct/results[ri].SlowOnly.Pct)
	}
	return rep, nil
}

func slowText(results []slowServerResult) string {
	pct := func(w cpuWindow) string { return fmt.Sprintf("%.2f (%.1f+%.1f)", w.Pct, w.UserPct, w.SysPct) }
	cpuRows := [][]string{{"server", "baseline %core (u+s)", "slow-only %core (u+s)", "slow-only at target rate",
		"combined %core (u+s)", "slow bytes/s", "CPU µs/slow byte", "frames", "echoed", "combined bytes/s", "frames", "echoed"}}
	latRows := [][]string{{"server", "echo p50 baseline", "p99 baseline", "max baseline", "p50 combined", "p99 combined", "max combined", "timeouts"}}
	for _, r := range results {
		cpuRows = append(cpuRows, []string{r.Server, pct(r.Baseline), pct(r.SlowOnly), fmt.Sprintf("%.2f", r.CPUProjectedPct),
			pct(r.Combined), fmt.Sprintf("%.0f", r.BytesPerSec), fmt.Sprintf("%.2f", r.CPUPerByteUs),
			fmt.Sprint(r.Slow.FramesSent), fmt.Sprint(r.Slow.Echoes),
			fmt.Sprintf("%.0f", r.CombinedBytesPerSec), fmt.Sprint(r.SlowCombined.FramesSent), fmt.Sprint(r.SlowCombined.Echoes)})
		latRows = append(latRows, []string{r.Server, us(r.Normal.Before.P50us), us(r.Normal.Before.P99us), us(r.Normal.Before.MaxUs),
			us(r.Normal.During.P50us), us(r.Normal.During.P99us), us(r.Normal.During.MaxUs),
			fmt.Sprint(r.Normal.Before.Timeouts + r.Normal.During.Timeouts)})
	}
	return table(cpuRows) + "\n" + table(latRows)
}

// checkSlow applies the slowwriters invariants to pushd's result: the CPU
// verdict on the slow-only window, the stall verdict on the combined one.
func checkSlow(rep *report, p slowServerResult, f *slowScenarioFlags, target float64) {
	if p.SlowOnly.Pct >= f.maxCPU {
		rep.failf("pushd: CPU %.2f%% of a core in the slow-only window >= %.2f%%", p.SlowOnly.Pct, f.maxCPU)
	} else if p.CPUProjectedPct >= f.maxCPU {
		rep.failf("pushd: CPU %.2f%% of a core at the %.0f bytes/s the client reached, projected %.2f%% at the specified %.0f bytes/s (>= %.2f%%)",
			p.SlowOnly.Pct, p.BytesPerSec, p.CPUProjectedPct, target, f.maxCPU)
	}
	rep.notef("pushd CPU: baseline %.2f%%, slow-only %.2f%%, combined %.2f%% of a core (combined - baseline = %.2f%%)",
		p.Baseline.Pct, p.SlowOnly.Pct, p.Combined.Pct, p.Combined.Pct-p.Baseline.Pct)
	checkNormal(rep, p.Normal, f)
	for _, w := range []struct {
		name string
		r    *slowResult
	}{{"slow-only", p.Slow}, {"combined", p.SlowCombined}} {
		if w.r.Conns != f.client.slow || len(w.r.ConnectErrs) > 0 {
			rep.failf("pushd: %d of %d slow writers connected (%v)", w.r.Conns, f.client.slow, w.r.ConnectErrs)
		}
		if w.r.WriteErrors > 0 || len(w.r.ReadErrors) > 0 {
			rep.failf("pushd: slow writers (%s): %d write errors, read errors %v", w.name, w.r.WriteErrors, w.r.ReadErrors)
		}
		if w.r.FramesSent == 0 || w.r.Echoes < w.r.FramesSent {
			rep.failf("pushd: %s: %d slow frames completed, %d echoed", w.name, w.r.FramesSent, w.r.Echoes)
		}
	}
	switch {
	case p.BytesPerSec < 0.5*target:
		rep.failf("invalid run: the client sent only %.0f of %.0f bytes/s (host too busy?); the numbers say little about pushd", p.BytesPerSec, target)
	case p.BytesPerSec < 0.8*target:
		rep.notef("the client reached only %.0f of %.0f bytes/s (client CPU-bound?): the load was lighter than specified", p.BytesPerSec, target)
	}
}

func checkNormal(rep *report, n *normalResult, f *slowScenarioFlags) {
	if n.Conns != f.client.normal {
		rep.failf("pushd: %d of %d normal clients connected (%v)", n.Conns, f.client.normal, n.ConnectErrs)
	}
	for name, l := range map[string]latency{"baseline": n.Before, "combined": n.During} {
		if l.N == 0 {
			rep.failf("pushd: no normal echoes in the %s window", name)
		}
		if l.Timeouts > 0 || len(l.Errors) > 0 {
			rep.failf("pushd: normal clients %s: %d echo timeouts (> %v), errors %v", name, l.Timeouts, f.client.echoTimeout, l.Errors)
		}
	}
	if time.Duration(n.During.MaxUs)*time.Microsecond > f.stall {
		rep.failf("pushd: a normal echo took %s in the combined window (> -stall %v)", us(n.During.MaxUs), f.stall)
	}
}

func us(v int64) string {
	if v >= 10000 {
		return fmt.Sprintf("%.0fms", float64(v)/1000)
	}
	return fmt.Sprintf("%.2fms", float64(v)/1000)
}

// cpuMark is a server's CPU counters at one instant.
type cpuMark struct {
	at        time.Time
	user, sys time.Duration
}

func sampleCPU(pid int) (cpuMark, error) {
	u, s, err := procCPUSplit(pid)
	return cpuMark{time.Now(), u, s}, err
}

func cpuBetween(a, b cpuMark) cpuWindow {
	secs := b.at.Sub(a.at).Seconds()
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / secs }
	return cpuWindow{Seconds: secs, Pct: pct(b.user + b.sys - a.user - a.sys), UserPct: pct(b.user - a.user), SysPct: pct(b.sys - a.sys)}
}

// measureSlow runs the slowwriters timeline against one server. The normal
// clients (bench -client echo) and the slow writers (bench -client slow)
// are separate processes; this process keeps the clock, samples the
// server's CPU at the window edges and places each echo sample in its
// window by send time:
//
//	echo #1 opens → warmup → baseline → echo #1 quits (its connections close)
//	slow opens → slow-only dribble (no normal client connected)
//	echo #2 opens → warmup → combined dribble → echo #2 quits
func measureSlow(ctx context.Context, h *harness, spec serverSpec, f *slowScenarioFlags) (*slowServerResult, error) {
	h.logf("%s: starting", spec.name)
	srv, err := startServer(ctx, spec, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	r := &slowServerResult{Server: spec.name}
	args := append([]string{"-target", srv.wsAddr, "-sources", f.sources}, f.client.args()...)

	// Baseline: normal clients only.
	echo, err := h.startClient("echo", args)
	if err != nil {
		return nil, err
	}
	defer echo.stop()
	ev, err := echo.expect(ctx, 60*time.Second, "opened")
	if err != nil {
		return nil, err
	}
	norm := &normalResult{Conns: ev.Open, ConnectErrs: ev.Errors}
	if !sleepCtx(ctx, f.client.warmup) {
		return nil, ctx.Err()
	}
	b0, err := sampleCPU(srv.pid())
	if err != nil {
		return nil, err
	}
	h.logf("%s: baseline window (normal clients only, %v)", spec.name, f.client.before)
	if !sleepCtx(ctx, f.client.before) {
		return nil, ctx.Err()
	}
	b1, err := sampleCPU(srv.pid())
	if err != nil {
		return nil, err
	}
	r.Baseline = cpuBetween(b0, b1)
	if err := echo.send(clientCmd{Cmd: "quit"}); err != nil {
		return nil, err
	}
	if ev, err = echo.expect(ctx, 30*time.Second, "result"); err != nil {
		return nil, err
	}
	norm.Before = window(ev.Samples, b0.at, b1.at)
	echo.stop()

	// Slow-only: the CPU verdict.
	slowc, err := h.startClient("slow", args)
	if err != nil {
		return nil, err
	}
	defer slowc.stop()
	if _, err := slowc.expect(ctx, 60*time.Second, "opened"); err != nil {
		return nil, err
	}
	h.logf("%s: slow-only window (slow writers dribbling, no normal client, %v)", spec.name, f.client.slowOnly)
	s0, s1, res, err := h.dribbleWindow(ctx, srv, slowc, f.client.slowOnly, f.client.drain, spec.name == "pushd")
	if err != nil {
		return nil, err
	}
	r.SlowOnly, r.Slow = cpuBetween(s0, s1), res
	r.BytesPerSec = float64(res.BytesSent) / r.SlowOnly.Seconds
	if res.BytesSent > 0 {
		r.CPUPerByteUs = (s1.user + s1.sys - s0.user - s0.sys).Seconds() * 1e6 / float64(res.BytesSent)
	}

	// Combined: slow writers + normal clients, the stall verdict.
	echo2, err := h.startClient("echo", args)
	if err != nil {
		return nil, err
	}
	defer echo2.stop()
	if ev, err = echo2.expect(ctx, 60*time.Second, "opened"); err != nil {
		return nil, err
	}
	if ev.Open < norm.Conns {
		norm.Conns, norm.ConnectErrs = ev.Open, ev.Errors
	}
	if !sleepCtx(ctx, f.client.warmup) {
		return nil, ctx.Err()
	}
	h.logf("%s: combined window (slow writers + normal clients, %v)", spec.name, f.client.during)
	c0, c1, res, err := h.dribbleWindow(ctx, srv, slowc, f.client.during, f.client.drain, false)
	if err != nil {
		return nil, err
	}
	r.Combined, r.SlowCombined = cpuBetween(c0, c1), res
	r.CombinedBytesPerSec = float64(res.BytesSent) / r.Combined.Seconds
	if err := echo2.send(clientCmd{Cmd: "quit"}); err != nil {
		return nil, err
	}
	if ev, err = echo2.expect(ctx, 30*time.Second, "result"); err != nil {
		return nil, err
	}
	norm.During = window(ev.Samples, c0.at, c1.at)
	r.Normal = norm
	return r, nil
}

// dribbleWindow makes the slow client dribble for d and returns the
// server's CPU marks at the window edges and the slow writers' result. With
// profile (and -profile-dir), pushd's CPU profile covers the window (the
// profiler's own cost, ~1%, is then part of the measurement).
func (h *harness) dribbleWindow(ctx context.Context, srv *serverProc, slowc *clientProc, d, drain time.Duration, profile bool) (cpuMark, cpuMark, *slowResult, error) {
	var m0, m1 cpuMark
	if err := slowc.send(clientCmd{Cmd: "dribble", Ms: d.Milliseconds()}); err != nil {
		return m0, m1, nil, err
	}
	if ev, err := slowc.expect(ctx, 30*time.Second, "phase"); err != nil || ev.Name != "during" {
		return m0, m1, nil, fmt.Errorf("slow client: want phase during: %v %q", err, ev.Name)
	}
	m0, err := sampleCPU(srv.pid())
	if err != nil {
		return m0, m1, nil, err
	}
	profDone := make(chan string, 1)
	profile = profile && h.profileDir != ""
	if profile {
		go func() {
			path := fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(int((d-time.Second).Seconds()), 1))
			top, err := h.profileTop(ctx, srv, path, "pushd-slowwriters-cpu.pb.gz", 30)
			if err != nil {
				top = "cpu profile: " + err.Error()
			}
			profDone <- top
		}()
	}
	if ev, err := slowc.expect(ctx, d+30*time.Second, "phase"); err != nil || ev.Name != "end" {
		return m0, m1, nil, fmt.Errorf("slow client: want phase end: %v %q", err, ev.Name)
	}
	if m1, err = sampleCPU(srv.pid()); err != nil {
		return m0, m1, nil, err
	}
	ev, err := slowc.expect(ctx, drain+30*time.Second, "result")
	if err != nil {
		return m0, m1, nil, err
	}
	if profile {
		h.logf("pushd CPU profile of the slow-only window:\n%s", <-profDone)
	}
	return m0, m1, ev.Slow, nil
}

// sleepCtx sleeps for d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
