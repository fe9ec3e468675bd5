package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// Addresses of the namespace test, from 198.18.0.0/15 (RFC 2544, reserved
// for benchmarking): the server's one address on its loopback, and a
// 198.18.<k>.0/24 link per generator.
const nsServerAddr = "198.19.0.1"

// testNetns is a server namespace and generator namespaces joined by veth
// pairs (one per generator, routed: the generators reach the server's one
// address through their link). Everything it made is removed when the
// test ends, pass or fail.
type testNetns struct {
	server string
	gens   []string
}

// ipCmd runs ip(8) and returns its error with its output.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// makeNetns creates the namespaces or fails the test with the reason: a
// run that cannot make them has not tested anything.
func makeNetns(t *testing.T, gens int) *testNetns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("cannot make network namespaces: ip(8) not found (%v): apt-get install iproute2", err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("cannot make network namespaces: they need root (CAP_SYS_ADMIN), running as uid %d", os.Geteuid())
	}
	prefix := fmt.Sprintf("lt%d-%x", os.Getpid()%100000, rand.Uint32()&0xffff)
	n := &testNetns{server: prefix + "-s"}
	var made []string
	t.Cleanup(func() {
		for _, ns := range made {
			if err := ipCmd("netns", "del", ns); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(out), prefix) {
			t.Errorf("cleanup left namespaces behind:\n%s", out)
		}
	})
	add := func(ns string) {
		if err := ipCmd("netns", "add", ns); err != nil {
			t.Fatalf("cannot make network namespaces: %v", err)
		}
		made = append(made, ns)
		if err := ipCmd("-n", ns, "link", "set", "lo", "up"); err != nil {
			t.Fatal(err)
		}
	}
	add(n.server)
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatalf("set up namespaces: %v", err)
		}
	}
	must("-n", n.server, "addr", "add", nsServerAddr+"/32", "dev", "lo")
	for k := range gens {
		g := fmt.Sprintf("%s-g%d", prefix, k)
		add(g)
		n.gens = append(n.gens, g)
		peer := "v" + strconv.Itoa(k)
		// The veth pair is made inside the namespaces (nothing in the
		// host's): deleting a namespace deletes its end and the peer.
		must("-n", g, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", n.server)
		must("-n", g, "addr", "add", fmt.Sprintf("198.18.%d.2/24", k), "dev", "eth0")
		must("-n", g, "link", "set", "eth0", "up")
		must("-n", n.server, "addr", "add", fmt.Sprintf("198.18.%d.1/24", k), "dev", peer)
		must("-n", n.server, "link", "set", peer, "up")
		must("-n", g, "route", "add", nsServerAddr+"/32", "via", fmt.Sprintf("198.18.%d.1", k))
		// The widest port range, as on a tuned generator: the single-host
		// comparison at 30,000 needs more than the default 28,232 ports.
		if out, err := exec.Command("ip", "netns", "exec", g, "sysctl", "-w", "net.ipv4.ip_local_port_range=1024 65535").CombinedOutput(); err != nil {
			t.Fatalf("set up namespaces: sysctl: %v: %s", err, out)
		}
	}
	return n
}

// inNs returns the argv prefix that runs a command in ns.
func inNs(ns string) []string { return []string{"ip", "netns", "exec", ns} }

// startNsRedis runs redis-server in the server namespace on its address.
// The namespace is private, so the fixed port cannot collide.
func startNsRedis(t *testing.T, ns string) string {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found: run scripts/test.sh, which installs it")
	}
	dir := t.TempDir()
	cmd := exec.Command("ip", "netns", "exec", ns, "redis-server", "--port", "6379", "--bind", nsServerAddr,
		"--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no", "--loglevel", "warning", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := exec.Command("ip", "netns", "exec", ns, "redis-cli", "-h", nsServerAddr, "-p", "6379", "ping").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "PONG" {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server in %s did not answer: %v %s\n%s", ns, err, out, b)
		}
	}
	return "redis://" + nsServerAddr + ":6379/0"
}

// nsRun is one loadtest process in a generator namespace.
type nsRun struct {
	code int
	out  string
}

// runInNs runs loadtest processes concurrently, each in its namespace,
// and waits for all (bounded by ctx).
func runInNs(ctx context.Context, t *testing.T, bin string, nss []string, argvs [][]string) []nsRun {
	t.Helper()
	res := make([]nsRun, len(argvs))
	var wg sync.WaitGroup
	for i := range argvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			argv := append(append(inNs(nss[i]), bin), argvs[i]...)
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			out, err := cmd.CombinedOutput()
			res[i] = nsRun{code: -1, out: string(out)}
			if cmd.ProcessState != nil {
				res[i].code = cmd.ProcessState.ExitCode()
			} else if err != nil {
				res[i].out += "\n" + err.Error()
			}
		}()
	}
	wg.Wait()
	return res
}

// TestShardsAcrossNetns is the sharded run across hosts, for real: a
// server namespace with Redis and pushd on one address (198.19.0.1), three
// generator namespaces each running one shard of the run against that
// address, the shards' reports merged; and a single-host run of the same
// size and SLOs from a fourth generator namespace. The merged
// delivery equals what was published with no duplicates or gaps, the
// merged histogram is the sum of the shards', and the verdict and exit
// code equal the single-host run's.
//
// Size: 3,000 connections in the default run. LOADTEST_NETNS_CONNS=30000
// runs the acceptance size (several pushd processes share the address
// with -reuseport, each under the per-process open-files limit):
//
//	LOADTEST_NETNS_CONNS=30000 go test -race -count=1 -run TestShardsAcrossNetns -v ./loadtest
func TestShardsAcrossNetns(t *testing.T) {
	t.Parallel()
	conns := 3000
	if v := os.Getenv("LOADTEST_NETNS_CONNS"); v != "" {
		var err error
		if conns, err = strconv.Atoi(v); err != nil || conns < 3 || conns > 300_000 {
			t.Fatalf("LOADTEST_NETNS_CONNS=%q: want 3..300000", v)
		}
	}
	const shards = 3
	// A fourth generator namespace for the single-host run: reusing a
	// shard's would leave it the single run's TIME_WAIT sockets.
	ns := makeNetns(t, shards+1)
	redisURL := startNsRedis(t, ns.server)
	pushdBin, bin := pushdtest.Build(t), buildLoadtest(t)
	// One pushd process per 8,000 connections, all on the one address.
	nodes := (conns + 7999) / 8000
	for range nodes {
		pushdtest.Start(t, pushdBin, pushdtest.Options{Wrapper: inNs(ns.server), StartTimeout: 30 * time.Second, Args: []string{
			"-listen", nsServerAddr + ":8080", "-reuseport", "-redis", redisURL}}) // admin on the namespace's 127.0.0.1:0
	}
	ramp := 3000.0
	rampTimeout := time.Duration(2*float64(conns)/ramp*float64(time.Second)) + 4*time.Second
	common := []string{"-target", "ws://" + nsServerAddr + ":8080/ws", "-redis", redisURL,
		"-conns", strconv.Itoa(conns), "-ramp", strconv.FormatFloat(ramp, 'f', -1, 64), "-max-attempts", "5",
		"-rate", "1000", "-groups", "10", "-group-rate", "20", "-duration", "2s", "-drain", "10s",
		"-ramp-timeout", rampTimeout.String(), "-loops", "1", "-progress", "2s",
		"-min-delivery", "1", "-max-p99", "5s"}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Single host: the whole run from one generator namespace.
	single := filepath.Join(dir, "single.json")
	t0 := time.Now()
	// One process holds at most ~19,900 (the 20,000 open-files limit):
	// beyond, the single host uses worker processes.
	workers := strconv.Itoa((conns + 14999) / 15000)
	sres := runInNs(ctx, t, bin, ns.gens[shards:], [][]string{append(append([]string{}, common...), "-seed", "3", "-workers", workers, "-json", single)})
	t.Logf("single-host run: exit %d in %v", sres[0].code, time.Since(t0).Round(time.Millisecond))
	if sres[0].code != ExitOK {
		t.Fatalf("single-host run: exit %d\n%s", sres[0].code, sres[0].out)
	}
	sr := readReport(t, single)

	// Sharded: one shard per generator namespace, one start instant.
	startAt := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339Nano)
	var argvs [][]string
	var files []string
	for i := range shards {
		f := filepath.Join(dir, fmt.Sprintf("shard%d.json", i))
		files = append(files, f)
		argvs = append(argvs, append(append([]string{}, common...), "-shard", fmt.Sprintf("%d/%d", i, shards),
			"-start-at", startAt, "-run-id", "netns", "-json", f))
	}
	t0 = time.Now()
	res := runInNs(ctx, t, bin, ns.gens[:shards], argvs)
	t.Logf("sharded run: %v", time.Since(t0).Round(time.Millisecond))
	for i, r := range res {
		if r.code != ExitOK {
			t.Fatalf("shard %d: exit %d\n%s", i, r.code, r.out)
		}
	}
	var reps []*Report
	for i, f := range files {
		r := readReport(t, f)
		if r.Shard == nil || r.Shard.Index != i || r.Shard.LateMs > 0 {
			t.Fatalf("shard %d: %+v", i, r.Shard)
		}
		t.Logf("shard %d: held %d, expected %d, delivered %d, p99 %dµs, clock offset %dµs (rtt %dµs), window late %.0f ms",
			i, r.Held, r.Expected, r.Delivered, r.Latency.P99, r.Shard.ClockOffsetUs, r.Shard.ClockRTTUs, r.Shard.WindowLateMs)
		reps = append(reps, &r)
	}
	merged := filepath.Join(dir, "merged.json")
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"merge", "-json", merged}, files...), &out, &errb)
	t.Logf("merged:\n%s%s", out.String(), errb.String())
	m := readReport(t, merged)

	// Counts: every connection held, every publication delivered once.
	pub := reps[0].PublishedPersonal
	gpub := reps[0].PublishedGroup
	if m.Held != int64(conns) || m.Failed != 0 {
		t.Fatalf("merged held %d failed %d, want %d held", m.Held, m.Failed, conns)
	}
	if want := pub + gpub*uint64(conns/10); m.Expected != want || m.Delivered != want || m.Duplicates != 0 || m.Gaps != 0 {
		t.Fatalf("merged expected %d delivered %d duplicates %d gaps %d; published %d personal + %d group × %d subscribers = %d",
			m.Expected, m.Delivered, m.Duplicates, m.Gaps, pub, gpub, conns/10, want)
	}
	// Exactly one shard publishes (at the run's rate, not 3 times it);
	// the others learn its count through Redis.
	if !reps[0].Shard.Publishes || reps[1].Shard.Publishes || reps[2].Shard.Publishes {
		t.Fatalf("publishers: %v %v %v, want shard 0 only", reps[0].Shard.Publishes, reps[1].Shard.Publishes, reps[2].Shard.Publishes)
	}
	if pub < 1500 || pub > 2100 || m.PublishedPersonal != pub || reps[1].PublishedPersonal != pub || reps[2].PublishedPersonal != pub {
		t.Fatalf("published: merged %d, shards %d %d %d (1000/s for 2s)", m.PublishedPersonal, pub, reps[1].PublishedPersonal, reps[2].PublishedPersonal)
	}
	// The merged latency histogram is the shards' added, sample for sample.
	all := newHist()
	for _, r := range reps {
		h := decodeHist(t, r.Histograms.Latency)
		all.Merge(h)
	}
	if want := percentiles(all); m.Latency != want || m.Latency.Count != int64(pub) {
		t.Fatalf("merged latency %+v, want %+v (the shards' samples together, %d)", m.Latency, want, pub)
	}
	// The verdict and exit code of the single-host run of the same size.
	if code != sr.ExitCode || m.Verdict != sr.Verdict || code != ExitOK {
		t.Fatalf("merged: exit %d %q; single host: exit %d %q", code, m.Verdict, sr.ExitCode, sr.Verdict)
	}
	if m.Merged == nil || m.Merged.ClockFlagged {
		t.Fatalf("merge info %+v", m.Merged)
	}
	t.Logf("single host: held %d, delivered %d/%d, p99 %dµs; sharded: held %d, delivered %d/%d, p99 %dµs",
		sr.Held, sr.Delivered, sr.Expected, sr.Latency.P99, m.Held, m.Delivered, m.Expected, m.Latency.P99)
}

func decodeHist(t *testing.T, enc string) *hdrhistogram.Histogram {
	t.Helper()
	h, err := hdrhistogram.Decode([]byte(enc))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestShardedVerdictMatchesSingle: a breached run judged on merged shards
// gets the same verdict kind and exit code (3) as the single-host run of
// the same size and SLOs, on loopback (3 shard processes, one host). Shard
// 2 starts after -start-at and says so in its report and in the merge.
func TestShardedVerdictMatchesSingle(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Options{})
	redisURL := "redis://" + rs.Addr + "/0"
	p := startPushd(t, "-redis", redisURL)
	bin := buildLoadtest(t)
	common := []string{"-target", p.URL("/ws"), "-redis", redisURL, "-conns", "90", "-ramp", "1000",
		"-rate", "90", "-duration", "1s", "-ramp-timeout", "3s", "-loops", "1", "-max-p99", "1us", "-min-delivery", "1"}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	single := filepath.Join(dir, "single.json")
	out, err := exec.CommandContext(ctx, bin, append(append([]string{}, common...), "-json", single)...).CombinedOutput()
	if code := exitCode(t, err); code != ExitSLOBreach {
		t.Fatalf("single host: exit %d, want %d\n%s", code, ExitSLOBreach, out)
	}
	sr := readReport(t, single)

	startAt := time.Now().Add(1500 * time.Millisecond)
	var files []string
	res := make([]nsRun, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		f := filepath.Join(dir, fmt.Sprintf("s%d.json", i))
		files = append(files, f)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 2 {
				sleepUntil(ctx, startAt.Add(700*time.Millisecond)) // late
			}
			cmd := exec.CommandContext(ctx, bin, append(append([]string{}, common...), "-shard", fmt.Sprintf("%d/3", i),
				"-start-at", startAt.UTC().Format(time.RFC3339Nano), "-json", f)...)
			b, err := cmd.CombinedOutput()
			res[i] = nsRun{code: -1, out: string(b)}
			if cmd.ProcessState != nil {
				res[i].code = cmd.ProcessState.ExitCode()
			} else {
				res[i].out += err.Error()
			}
		}()
	}
	wg.Wait()
	for i, r := range res {
		if r.code != ExitSLOBreach { // each shard judges its own share too
			t.Fatalf("shard %d: exit %d\n%s", i, r.code, r.out)
		}
	}
	if r := readReport(t, files[2]); r.Shard.LateMs < 500 || !strings.Contains(res[2].out, "after -start-at") {
		t.Fatalf("late shard: %+v\n%s", r.Shard, res[2].out)
	}
	var mout, merr bytes.Buffer
	code := run(ctx, append([]string{"merge", "-json", filepath.Join(dir, "m.json")}, files...), &mout, &merr)
	m := readReport(t, filepath.Join(dir, "m.json"))
	t.Logf("single: %s\nmerged: %s\n%s", sr.Verdict, m.Verdict, mout.String())
	kinds := func(b []string) []string {
		var k []string
		for _, s := range b {
			k = append(k, strings.Fields(s)[0])
		}
		return k
	}
	if code != sr.ExitCode || code != ExitSLOBreach || strings.Join(kinds(m.SLO.Breaches), ",") != strings.Join(kinds(sr.SLO.Breaches), ",") ||
		!strings.HasPrefix(m.Verdict, "BREACHED (exit 3): p99 ") {
		t.Fatalf("merged exit %d %q breaches %v; single host exit %d %q breaches %v", code, m.Verdict, m.SLO.Breaches, sr.ExitCode, sr.Verdict, sr.SLO.Breaches)
	}
	if m.Held != 90 || m.Delivered != m.Expected || m.Expected != m.PublishedPersonal || m.Duplicates+m.Gaps != 0 {
		t.Fatalf("merged held %d delivered %d/%d published %d dup %d gaps %d", m.Held, m.Delivered, m.Expected, m.PublishedPersonal, m.Duplicates, m.Gaps)
	}
	// The same merge from the reports every shard stored in Redis (what a
	// job runner's pods leave behind), and the refusal once one is gone.
	runID := "run-" + startAt.UTC().Format(time.RFC3339Nano)
	var rout, rerr bytes.Buffer
	if c := run(ctx, []string{"merge", "-redis", redisURL, "-run-id", runID, "-json", filepath.Join(dir, "r.json")}, &rout, &rerr); c != code {
		t.Fatalf("merge -redis: exit %d, want %d\n%s%s", c, code, rout.String(), rerr.String())
	}
	if r := readReport(t, filepath.Join(dir, "r.json")); r.Latency != m.Latency || r.Delivered != m.Delivered || r.Verdict != m.Verdict {
		t.Fatalf("merge -redis differs: %+v %d %q", r.Latency, r.Delivered, r.Verdict)
	}
	rs.MustDo(t, "DEL", reportKey("lt:", runID, "1"))
	rout.Reset()
	rerr.Reset()
	if c := run(ctx, []string{"merge", "-redis", redisURL, "-run-id", runID}, &rout, &rerr); c != ExitUsage ||
		!strings.Contains(rerr.String(), "has 3 shards, shard(s) 1 missing") {
		t.Fatalf("merge -redis with shard 1 gone: exit %d\n%s", c, rerr.String())
	}
	if len(m.Merged.Late) != 1 || !strings.HasPrefix(m.Merged.Late[0], "shard 2 ramp +") || !strings.Contains(mout.String(), "late shards: shard 2 ramp +") {
		t.Fatalf("late shards %v\n%s", m.Merged.Late, mout.String())
	}
}
