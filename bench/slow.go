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
			"one segment per byte), frame after frame, while 50 normal clients do echo round-trips every\n" +
			"100 ms. Windows: -before (normal clients only) then -during (slow writers dribbling).\n" +
			"Slow writers and normal clients run in two client processes, apart from the server.\n" +
			"Measures the server's utime+stime over each window as % of one core and the normal clients'\n" +
			"echo latency. Invariants (pushd): CPU during < -max-cpu % (measured, and projected to the full\n" +
			"specified rate when the client fell short); no normal echo timeout, error or\n" +
			"round-trip above -stall; every completed slow frame echoed back.",
		timeout: 3 * time.Minute,
		setup: func(fs *flag.FlagSet) func(context.Context, *harness) (*report, error) {
			f := &slowScenarioFlags{}
			f.client.register(fs)
			fs.StringVar(&f.sources, "sources", "127.0.1.0/24", "client source addresses (list/CIDRs)")
			fs.Float64Var(&f.maxCPU, "max-cpu", 5, "pushd: max CPU during the slow window, % of one core")
			fs.DurationVar(&f.stall, "stall", 250*time.Millisecond, "pushd: max normal-client echo round-trip during the slow window")
			fs.StringVar(&f.pushdArgs, "pushd-args", "", "extra pushd flags, space-separated")
			return func(ctx context.Context, h *harness) (*report, error) { return runSlow(ctx, h, f) }
		},
	}
}

// slowServerResult is one server's slowwriters outcome.
type slowServerResult struct {
	Server        string  `json:"server"`
	CPUBeforePct  float64 `json:"cpu_before_pct_core"`
	CPUDuringPct  float64 `json:"cpu_during_pct_core"`
	UserDuringPct float64 `json:"user_during_pct_core"`
	SysDuringPct  float64 `json:"sys_during_pct_core"`
	DuringSeconds float64 `json:"during_seconds"`
	BytesPerSec   float64 `json:"slow_bytes_per_second"`
	CPUPerByteUs  float64 `json:"cpu_us_per_slow_byte"`
	// CPUProjectedPct is the during-window CPU scaled to the specified
	// slow-writer rate: before + (during - before) × target/actual bytes/s.
	// It differs from CPUDuringPct when the client could not send at the
	// full rate (a busy host).
	CPUProjectedPct float64       `json:"cpu_projected_pct_core"`
	Slow            *slowResult   `json:"slow"`
	Normal          *normalResult `json:"normal"`
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
		r.CPUProjectedPct = r.CPUDuringPct
		if r.BytesPerSec > 0 && r.BytesPerSec < target {
			r.CPUProjectedPct = max(r.CPUDuringPct, r.CPUBeforePct+(r.CPUDuringPct-r.CPUBeforePct)*target/r.BytesPerSec)
		}
	}
	rep.Results = results
	cpuRows := [][]string{{"server", "CPU before %core", "CPU during %core", "user+sys", "at target rate %core",
		"slow bytes/s", "CPU µs/slow byte", "frames", "echoed"}}
	latRows := [][]string{{"server", "echo p50 before", "p99 before", "max before", "p50 during", "p99 during", "max during", "timeouts"}}
	for _, r := range results {
		cpuRows = append(cpuRows, []string{r.Server, fmt.Sprintf("%.2f", r.CPUBeforePct), fmt.Sprintf("%.2f", r.CPUDuringPct),
			fmt.Sprintf("%.1f+%.1f", r.UserDuringPct, r.SysDuringPct), fmt.Sprintf("%.2f", r.CPUProjectedPct),
			fmt.Sprintf("%.0f", r.BytesPerSec), fmt.Sprintf("%.2f", r.CPUPerByteUs), fmt.Sprint(r.Slow.FramesSent), fmt.Sprint(r.Slow.Echoes)})
		latRows = append(latRows, []string{r.Server, us(r.Normal.Before.P50us), us(r.Normal.Before.P99us), us(r.Normal.Before.MaxUs),
			us(r.Normal.During.P50us), us(r.Normal.During.P99us), us(r.Normal.During.MaxUs),
			fmt.Sprint(r.Normal.Before.Timeouts + r.Normal.During.Timeouts)})
	}
	rep.text = table(cpuRows) + "\n" + table(latRows)
	name := func(r slowServerResult) string { return r.Server }
	pi, ri := find(results, "pushd", name), find(results, "ref", name)
	if pi >= 0 {
		checkSlow(rep, results[pi], f, target)
	}
	if ri >= 0 && time.Duration(results[ri].Normal.During.MaxUs)*time.Microsecond > f.stall {
		rep.notef("the ref server also had a normal echo above -stall (%s): the host itself is busy (load from other processes or the clients)",
			us(results[ri].Normal.During.MaxUs))
	}
	if pi >= 0 && ri >= 0 && results[ri].CPUDuringPct > 0 {
		rep.notef("pushd/ref CPU during the slow window = %.3f (same run)", results[pi].CPUDuringPct/results[ri].CPUDuringPct)
	}
	return rep, nil
}

// checkSlow applies the slowwriters invariants to pushd's result.
func checkSlow(rep *report, p slowServerResult, f *slowScenarioFlags, target float64) {
	if p.CPUDuringPct >= f.maxCPU {
		rep.failf("pushd: CPU %.2f%% of a core during the slow window >= %.2f%%", p.CPUDuringPct, f.maxCPU)
	} else if p.CPUProjectedPct >= f.maxCPU {
		rep.failf("pushd: CPU %.2f%% of a core at the %.0f bytes/s the client reached, projected %.2f%% at the specified %.0f bytes/s (>= %.2f%%)",
			p.CPUDuringPct, p.BytesPerSec, p.CPUProjectedPct, target, f.maxCPU)
	}
	checkNormal(rep, p.Normal, f)
	if p.Slow.Conns != f.client.slow || len(p.Slow.ConnectErrs) > 0 {
		rep.failf("pushd: %d of %d slow writers connected (%v)", p.Slow.Conns, f.client.slow, p.Slow.ConnectErrs)
	}
	if p.Slow.WriteErrors > 0 || len(p.Slow.ReadErrors) > 0 {
		rep.failf("pushd: slow writers: %d write errors, read errors %v", p.Slow.WriteErrors, p.Slow.ReadErrors)
	}
	if p.Slow.FramesSent == 0 || p.Slow.Echoes < p.Slow.FramesSent {
		rep.failf("pushd: %d slow frames completed, %d echoed", p.Slow.FramesSent, p.Slow.Echoes)
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
	for name, l := range map[string]latency{"before": n.Before, "during": n.During} {
		if l.N == 0 {
			rep.failf("pushd: no normal echoes %s", name)
		}
		if l.Timeouts > 0 || len(l.Errors) > 0 {
			rep.failf("pushd: normal clients %s: %d echo timeouts (> %v), errors %v", name, l.Timeouts, f.client.echoTimeout, l.Errors)
		}
	}
	if time.Duration(n.During.MaxUs)*time.Microsecond > f.stall {
		rep.failf("pushd: a normal echo took %s during the slow window (> -stall %v)", us(n.During.MaxUs), f.stall)
	}
}

func us(v int64) string {
	if v >= 10000 {
		return fmt.Sprintf("%.0fms", float64(v)/1000)
	}
	return fmt.Sprintf("%.2fms", float64(v)/1000)
}

// measureSlow runs the slowwriters timeline against one server: the
// normal clients (bench -client echo) and the slow writers (bench -client
// slow) are separate processes; this process keeps the clock, samples the
// server's CPU at the window edges and places each echo sample in its
// window by send time.
func measureSlow(ctx context.Context, h *harness, spec serverSpec, f *slowScenarioFlags) (*slowServerResult, error) {
	h.logf("%s: starting", spec.name)
	srv, err := startServer(ctx, spec, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	args := append([]string{"-target", srv.wsAddr, "-sources", f.sources}, f.client.args()...)
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
	slowc, err := h.startClient("slow", args)
	if err != nil {
		return nil, err
	}
	defer slowc.stop()
	if _, err := slowc.expect(ctx, 60*time.Second, "opened"); err != nil {
		return nil, err
	}
	// With -profile-dir, pushd's CPU profile covers the slow window (the
	// profiler's own cost, ~1%, is then part of the measurement).
	var prof func(time.Duration)
	profDone := make(chan string, 1)
	if h.profileDir != "" && spec.name == "pushd" {
		prof = func(d time.Duration) {
			path := fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(int(d.Seconds()), 1))
			top, err := h.profileTop(ctx, srv, path, "pushd-slowwriters-cpu.pb.gz", 30)
			if err != nil {
				top = "cpu profile: " + err.Error()
			}
			profDone <- top
		}
	}
	type mark struct {
		at        time.Time
		user, sys time.Duration
	}
	sample := func() (mark, error) {
		u, s, err := procCPUSplit(srv.pid())
		return mark{time.Now(), u, s}, err
	}
	if !sleepCtx(ctx, f.client.warmup) {
		return nil, ctx.Err()
	}
	before, err := sample()
	if err != nil {
		return nil, err
	}
	h.logf("%s: window before (normal clients only, %v)", spec.name, f.client.before)
	if !sleepCtx(ctx, f.client.before) {
		return nil, ctx.Err()
	}
	if err := slowc.send(clientCmd{Cmd: "dribble", Ms: f.client.during.Milliseconds()}); err != nil {
		return nil, err
	}
	if ev, err := slowc.expect(ctx, 30*time.Second, "phase"); err != nil || ev.Name != "during" {
		return nil, fmt.Errorf("slow client: want phase during: %v %q", err, ev.Name)
	}
	during, err := sample()
	if err != nil {
		return nil, err
	}
	h.logf("%s: window during (slow writers dribbling, %v)", spec.name, f.client.during)
	if prof != nil {
		go prof(f.client.during - time.Second)
	}
	if ev, err := slowc.expect(ctx, f.client.during+30*time.Second, "phase"); err != nil || ev.Name != "end" {
		return nil, fmt.Errorf("slow client: want phase end: %v %q", err, ev.Name)
	}
	end, err := sample()
	if err != nil {
		return nil, err
	}
	ev, err = slowc.expect(ctx, f.client.drain+30*time.Second, "result")
	if err != nil {
		return nil, err
	}
	slowRes := ev.Slow
	if err := echo.send(clientCmd{Cmd: "quit"}); err != nil {
		return nil, err
	}
	ev, err = echo.expect(ctx, 30*time.Second, "result")
	if err != nil {
		return nil, err
	}
	norm.Before = window(ev.Samples, before.at, during.at)
	norm.During = window(ev.Samples, during.at, end.at)
	pct := func(d time.Duration, a, b mark) float64 { return 100 * d.Seconds() / b.at.Sub(a.at).Seconds() }
	r := &slowServerResult{Server: spec.name,
		CPUBeforePct:  pct(during.user+during.sys-before.user-before.sys, before, during),
		CPUDuringPct:  pct(end.user+end.sys-during.user-during.sys, during, end),
		UserDuringPct: pct(end.user-during.user, during, end),
		SysDuringPct:  pct(end.sys-during.sys, during, end),
		DuringSeconds: end.at.Sub(during.at).Seconds(), Slow: slowRes, Normal: norm}
	r.BytesPerSec = float64(slowRes.BytesSent) / r.DuringSeconds
	if slowRes.BytesSent > 0 {
		r.CPUPerByteUs = (end.user + end.sys - during.user - during.sys).Seconds() * 1e6 / float64(slowRes.BytesSent)
	}
	if prof != nil {
		h.logf("pushd CPU profile of the slow window:\n%s", <-profDone)
	}
	return r, nil
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
