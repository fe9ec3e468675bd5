package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play bench's child roles: the harness
// re-executes os.Executable() with -client or -refserver.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "-client" || os.Args[1] == "-refserver" || os.Args[1] == "-rawserver") {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		cancel()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// runJSON runs bench with args (plus -json) and decodes the report.
func runJSON(t *testing.T, args ...string) (int, report, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, append([]string{"-json"}, args...), &stdout, &stderr)
	var rep report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("bench %v: exit %d, bad JSON: %v\nstdout:\n%s\nstderr:\n%s", args, code, err, stdout.Bytes(), stderr.Bytes())
	}
	return code, rep, stderr.Bytes()
}

// runIdleRef runs the idle scenario against the reference server only,
// at plateaus 100 and 600 plus args, and returns its one result.
func runIdleRef(t *testing.T, args ...string) idleResult {
	t.Helper()
	code, rep, stderr := runJSON(t, append([]string{"-servers", "ref", "idle", "-plateaus", "100,600"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d, failures %v\n%s", code, rep.Failures, stderr)
	}
	b, _ := json.Marshal(rep.Results)
	var res []idleResult
	if err := json.Unmarshal(b, &res); err != nil || len(res) != 1 {
		t.Fatalf("results %s: %v", b, err)
	}
	return res[0]
}

// TestIdleMeasuresGoroutinePerConnection runs the idle scenario against the
// reference server only (no pushd build) and checks the harness sees what a
// goroutine-per-connection server costs: goroutines grow with the
// connection count and RSS grows by kilobytes per connection. This is the
// failure the pushd invariants exist to catch, so the measurement must be
// able to see it.
func TestIdleMeasuresGoroutinePerConnection(t *testing.T) {
	r := runIdleRef(t, "-sources", "127.0.4.0/28")
	t.Logf("ref: %.0f bytes/conn, goroutines %+d, plateaus %+v", r.BytesPerConn, r.GoroutineGrowth, r.Plateaus)
	if r.ConnectFailures != 0 {
		t.Errorf("connect failures %d: %v", r.ConnectFailures, r.ConnectErrors)
	}
	if r.GoroutineGrowth < 500 {
		t.Errorf("goroutine growth %d for 500 more connections, want >= 500 (one per connection)", r.GoroutineGrowth)
	}
	if r.BytesPerConn < 4096 {
		t.Errorf("ref bytes/conn = %.0f, want > 4 KiB (gorilla keeps 4 KiB bufio buffers and a goroutine stack per conn)", r.BytesPerConn)
	}
}

// TestIdleWait checks -idle-wait: each plateau waits untouched before the
// forced GCs and the report carries the slope read then; a wait the
// scenario's deadline cannot hold is refused before any connection opens.
func TestIdleWait(t *testing.T) {
	r := runIdleRef(t, "-sources", "127.0.4.32/28", "-idle-wait", "1s")
	t.Logf("ref: %.0f B/conn after forced GCs, %.0f before, %.0f after the idle wait", r.BytesPerConn, r.BytesPerConnNoGC, r.BytesPerConnIdle)
	for _, p := range r.Plateaus {
		if p.RSSIdleBytes == 0 {
			t.Errorf("plateau %d: no RSS after the idle wait", p.Conns)
		}
	}
	if r.BytesPerConnIdle < 4096 {
		t.Errorf("ref bytes/conn after the idle wait = %.0f, want > 4 KiB (a goroutine and buffers per connection)", r.BytesPerConnIdle)
	}

	var stdout, errb bytes.Buffer
	code := run(context.Background(), []string{"-servers", "ref", "-timeout", "1m", "idle", "-plateaus", "100,600", "-idle-wait", "1m"}, &stdout, &errb)
	if code == 0 || !strings.Contains(errb.String(), "-timeout") {
		t.Errorf("-idle-wait 1m over 2 plateaus with -timeout 1m: exit %d, stderr %q; want a refusal naming -timeout", code, errb.String())
	}
}

// TestSlowWritersHarness runs a small slowwriters timeline against the
// reference server and checks every part of the measurement produced data.
func TestSlowWritersHarness(t *testing.T) {
	code, rep, stderr := runJSON(t, "-servers", "ref", "slowwriters", "-slow", "40", "-normal", "5",
		"-warmup", "200ms", "-before", "1s", "-slow-only", "2s", "-during", "2s", "-sources", "127.0.4.16/28")
	if code != 0 {
		t.Fatalf("exit %d, failures %v\n%s", code, rep.Failures, stderr)
	}
	b, _ := json.Marshal(rep.Results)
	var res []slowServerResult
	if err := json.Unmarshal(b, &res); err != nil || len(res) != 1 {
		t.Fatalf("results %s: %v", b, err)
	}
	r := res[0]
	t.Logf("ref: %+v slow %+v normal %+v", r, *r.Slow, *r.Normal)
	// 40 writers × 100 B/s × 2 s = 8,000 bytes: one complete 106-byte frame
	// per writer (the second is cut off by the end of the window).
	for _, s := range []*slowResult{r.Slow, r.SlowCombined} {
		if s.BytesSent < 4000 || s.FramesSent < 30 || s.Echoes < s.FramesSent || s.WriteErrors > 0 || len(s.ReadErrors) > 0 {
			t.Errorf("slow writers: %+v", *s)
		}
	}
	if r.Normal.Before.N < 20 || r.Normal.During.N < 40 || r.Normal.During.Timeouts > 0 {
		t.Errorf("normal clients: %+v", *r.Normal)
	}
	if r.SlowOnly.Seconds < 1.5 || r.Combined.Seconds < 1.5 || r.Baseline.Seconds < 0.8 || r.SlowOnly.Pct < 0 {
		t.Errorf("windows %+v %+v %+v", r.Baseline, r.SlowOnly, r.Combined)
	}
	if !strings.Contains(string(stderr), "load average") && !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "load average") }) {
		t.Errorf("no load average in the report: %v", rep.Notes)
	}
}

func TestParseServers(t *testing.T) {
	if s, err := parseServers("ref, pushd,ref"); err != nil || len(s) != 2 || s[0] != "ref" {
		t.Fatalf("parseServers = %v, %v", s, err)
	}
	for _, bad := range []string{"", "nginx", " , "} {
		if _, err := parseServers(bad); err == nil {
			t.Errorf("parseServers(%q) succeeded", bad)
		}
	}
}

func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	rss, err := procRSS(pid)
	if err != nil || rss < 1<<20 {
		t.Fatalf("procRSS = %d, %v", rss, err)
	}
	if _, err := procCPU(pid); err != nil {
		t.Fatal(err)
	}
	if slab, err := meminfo("Slab:"); err != nil || slab == 0 {
		t.Fatalf("meminfo Slab = %d, %v", slab, err)
	}
	if _, err := kBField([]byte("VmRSS:\t  12 kB\n"), "VmHWM:"); err == nil {
		t.Fatal("missing field found")
	}
	if v, err := kBField([]byte("VmHWM:\t 1 kB\nVmRSS:\t  12 kB\n"), "VmRSS:"); err != nil || v != 12*1024 {
		t.Fatalf("kBField = %d, %v", v, err)
	}
}

// TestFanoutHarness runs a small fanout against pushd and the raw loop and
// checks that every part of the measurement produced data (the byte-exact
// delivery checks run inside; a mismatch fails the run).
func TestFanoutHarness(t *testing.T) {
	code, rep, stderr := runJSON(t, "fanout", "-conns", "300", "-repeat", "2", "-burst", "4", "-profile", "never",
		"-min-ratio", "0", "-min-burst-ratio", "0", "-raw-after=false", "-settle", "50ms", "-sources", "127.0.4.32/28")
	if code != 0 {
		t.Fatalf("exit %d, failures %v\n%s", code, rep.Failures, stderr)
	}
	b, _ := json.Marshal(rep.Results)
	var res []fanoutResult
	if err := json.Unmarshal(b, &res); err != nil || len(res) != 2 || res[0].Server != "raw" || res[1].Server != "pushd" {
		t.Fatalf("results %s: %v", b, err)
	}
	for _, r := range res {
		if len(r.Single) != 2 || len(r.Burst) != 2 || r.SingleStats.DeliveriesSec <= 0 || r.BurstStats.Messages != 4 {
			t.Errorf("%s: %+v", r.Server, r)
		}
		for _, s := range append(r.Single, r.Burst...) {
			if s.Ns <= 0 || s.FirstNs > s.Ns || s.P50Ns > s.Ns {
				t.Errorf("%s: sample %+v", r.Server, s)
			}
		}
	}
	if res[1].Ratio <= 0 || res[1].BurstRatio <= 0 {
		t.Errorf("ratios %v %v", res[1].Ratio, res[1].BurstRatio)
	}
}

// TestSlowConsumersHarness runs a small slowconsumers run (every policy)
// against pushd.
func TestSlowConsumersHarness(t *testing.T) {
	code, rep, stderr := runJSON(t, "slowconsumers", "-slow", "20", "-normal", "20", "-channels", "5",
		"-total", "2097152", "-sources", "127.0.4.48/28")
	if code != 0 {
		t.Fatalf("exit %d, failures %v\n%s", code, rep.Failures, stderr)
	}
	b, _ := json.Marshal(rep.Results)
	var res []slowConsumersResult
	if err := json.Unmarshal(b, &res); err != nil || len(res) != 3 {
		t.Fatalf("results %s: %v", b, err)
	}
	for _, r := range res {
		if r.MaxHeap == 0 || r.Client.NormalComplete != 20 || r.Client.SlowOK != 20 {
			t.Errorf("%s: heap %d, client %+v", r.Policy, r.MaxHeap, *r.Client)
		}
	}
}

func TestParseMemStats(t *testing.T) {
	got := parseMemStats([]byte("heap profile: 1: 2 [3: 4] @ heap/1048576\n# runtime.MemStats\n# HeapInuse = 1916928\n# Stack = 491520 / 524288\n# MSpan = 34720 / 48960\n# PauseNs = [0 0]\n# DebugGC = false\n"))
	want := map[string]uint64{"HeapInuse": 1916928, "StackInuse": 491520, "StackSys": 524288, "MSpanInuse": 34720, "MSpanSys": 48960}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
}
