package main

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPeersSelect(t *testing.T) {
	table := peerTable([]string{"lean", "netpoll"})
	all, err := selectPeers(table, "all")
	if err != nil || len(all) != len(table) || all[0].name != "pushd-lean" || all[1].args[1] != "netpoll" {
		t.Fatalf("all = %v, %v", all, err)
	}
	got, err := selectPeers(table, "nbio, pushd,nbio")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range got {
		names = append(names, d.name)
	}
	if !slices.Equal(names, []string{"nbio", "pushd-lean", "pushd-netpoll"}) {
		t.Fatalf("selected %v", names)
	}
	if one := peerTable(nil); one[0].name != "pushd" || len(one[0].args) != 0 {
		t.Fatalf("without -poller: %+v", one[0])
	}
	for _, bad := range []string{"nginx", " , "} {
		if _, err := selectPeers(table, bad); err == nil {
			t.Errorf("selectPeers(%q) succeeded", bad)
		}
	}
}

func TestScanStamps(t *testing.T) {
	var got []int64
	rec := func(ns int64) { got = append(got, ns) }
	// Two raw frames and a centrifuge push in one read, then a stamp cut
	// by the end of the read.
	n, tail := scanStamps([]byte("\x81\x06\"@123\"\x81\x05\"@45\"{\"push\":{\"pub\":{\"data\":\"@6789\"}}}\x81\x07\"@99"), rec)
	if n != 3 || !slices.Equal(got, []int64{123, 45, 6789}) || string(tail) != "@99" {
		t.Fatalf("n %d stamps %v tail %q", n, got, tail)
	}
	n, tail = scanStamps(append(tail, []byte("1\"")...), rec)
	if n != 1 || got[3] != 991 || tail != nil {
		t.Fatalf("resumed: n %d stamps %v tail %q", n, got, tail)
	}
	if n, _ := scanStamps([]byte("no stamp @ here"), rec); n != 0 {
		t.Fatalf("found %d stamps in garbage", n)
	}
}

// syntheticPeers is a run's result with made-up numbers: pushd leads all
// but the memory column (nbio) and the ramp (gorilla).
func syntheticPeers() *peersResult {
	cdf := func(scale int64) *latencyResult {
		l := &latencyResult{Messages: 1000, P50Us: 500 * scale, P99Us: 2000 * scale}
		for _, q := range cdfQuantiles() {
			l.CDF = append(l.CDF, latencyPoint{Q: q / 100, Us: int64(q*10+100) * scale})
		}
		return l
	}
	row := func(name string, bpc float64, g, th int, dps, cps float64, lat int64) peerResult {
		return peerResult{Name: name, About: name + " server", BaselineRSS: 8 << 20, BytesPerConn: bpc, Goroutines: g, Threads: th,
			Plateaus:   []plateau{{Conns: 2000, RSSBytes: 8<<20 + uint64(2000*bpc)}, {Conns: 19000, RSSBytes: 8<<20 + uint64(19000*bpc)}},
			Deliveries: dps, Ratio: dps / 2e6, CPUPerMillion: 1e6 / dps, ConnsPerSec: cps, Latency: cdf(lat), LatExpected: 1000}
	}
	return &peersResult{
		Machine:  machineInfo{CPU: "test CPU", Cores: 2, MemGiB: 24, Kernel: "6.x", Go: "go1.x", Node: "v20", Commit: "abc", UTC: "2026-11-21T18:00:00Z"},
		Raw:      fanoutResult{Server: "raw", Single: make([]fanoutSample, 4), SingleStats: fanoutStats{DeliveriesSec: 2e6}},
		Plateaus: []int{2000, 19000}, Payload: `"0123456789abcdefghijklmnopqrst"`, LatConns: 1000, LatRate: 1000, LatSecs: 20,
		Peers: []peerResult{
			row("pushd-netpoll", 3000, 80, 6, 1.8e6, 5000, 1),
			row("gorilla", 26000, 38000, 8, 0.9e6, 6000, 2),
			row("nbio", 1800, 14, 7, 1.2e6, 4000, 3),
			{Name: "broken", About: "fails its smoke check", Goroutines: -1, Error: "smoke check: EOF"},
		},
	}
}

func TestPeersReportAndPlots(t *testing.T) {
	res := syntheticPeers()
	// A tie at the printed precision is a shared lead.
	res.Peers[2].Threads = res.Peers[0].Threads
	lead := leaders(res.Peers, peerColumns())
	want := [][]string{{"nbio"}, {"nbio"}, {"pushd-netpoll", "nbio"}, {"pushd-netpoll"}, {"pushd-netpoll"}, {"pushd-netpoll"},
		{"pushd-netpoll"}, {"pushd-netpoll"}, {"gorilla"}}
	if !slices.EqualFunc(lead, want, slices.Equal) {
		t.Fatalf("leaders %v, want %v", lead, want)
	}
	behind := pushdBehind(res)
	if len(behind) != 3 || !strings.HasPrefix(behind[0], "bytes/idle conn (RSS slope): nbio 1800 vs pushd-netpoll 3000") {
		t.Fatalf("pushdBehind = %q", behind)
	}
	res.Peers[0].Profiles = map[string]string{"heap": "heap at 19000 idle subscribers:\nnetpoll.init.func1 25MB\n",
		"broadcast": "CPU over broadcasts:\nwrite 90%\n"}
	dir := t.TempDir()
	rep := &report{Notes: []string{"host load average: test"}}
	files, err := writePeersResults(dir, "2026-11-21", res, rep)
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "2026-11-21.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"| pushd-netpoll | 3000 |", "| gorilla | 26000 |", "| broken (FAILED) | – |", "| raw write() loop |",
		"![memory vs connections](2026-11-21-memory.png)", "![latency CDF](2026-11-21-latency.png)",
		"## Where pushd does not lead", "test CPU, 2 cores", "broken FAILED: smoke check: EOF",
		"pushd-netpoll, heap at 19000 idle subscribers:\n```\nnetpoll.init.func1 25MB\n```"} {
		if !strings.Contains(string(md), s) {
			t.Errorf("results file lacks %q:\n%s", s, md)
		}
	}
	if strings.Contains(string(md), "write 90%") {
		t.Errorf("the broadcast profile is quoted though pushd leads the broadcast columns")
	}
	var back report
	if b, err := os.ReadFile(files[3]); err != nil || json.Unmarshal(b, &back) != nil || len(back.Notes) != 1 {
		t.Errorf("%s: %v %+v", files[3], err, back)
	}
	for _, f := range files[1:3] {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(fh)
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 400 {
			t.Errorf("%s: %v", f, b)
		}
	}
}

// TestPeersSmallRun runs the whole peers scenario, small, against the
// gorilla peer (built from bench/peers): smoke check, plateaus, broadcast
// rounds checked byte for byte against the raw loop, latency, and the
// results file with its plots.
func TestPeersSmallRun(t *testing.T) {
	out := t.TempDir()
	code, rep, stderr := runJSON(t, "-servers", "ref", "-peers", "gorilla", "-plateaus", "50,150", "-repeat", "2",
		"-lat-conns", "20", "-lat-rate", "200", "-lat-duration", "1s", "-profile", "never", "-out", out, "-date", "t",
		"-sources", "127.0.4.64/28")
	if code != 0 {
		t.Fatalf("exit %d, failures %v\n%s", code, rep.Failures, stderr)
	}
	b, _ := json.Marshal(rep.Results)
	var res peersResult
	if err := json.Unmarshal(b, &res); err != nil || len(res.Peers) != 1 {
		t.Fatalf("results %s: %v", b, err)
	}
	g := res.Peers[0]
	t.Logf("gorilla: %.0f B/conn, %d goroutines, %.0f deliveries/s (%.3f × raw), p50 %d µs, p99 %d µs",
		g.BytesPerConn, g.Goroutines, g.Deliveries, g.Ratio, g.Latency.P50Us, g.Latency.P99Us)
	if g.Error != "" || len(g.Plateaus) != 2 || len(g.Broadcast) != 2 || g.Ratio <= 0 || g.ConnsPerSec <= 0 {
		t.Errorf("row %+v", g)
	}
	// Two goroutines per connection: the chat-example hub.
	if g.Goroutines < 300 {
		t.Errorf("gorilla goroutines %d at 150 conns, want >= 300", g.Goroutines)
	}
	if g.Latency == nil || g.Latency.Messages != 200 || g.LatExpected != 200 || g.Latency.P99Us <= 0 {
		t.Errorf("latency %+v", g.Latency)
	}
	for _, f := range []string{"t.md", "t-memory.png", "t-latency.png"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestSummarizeGoroutines(t *testing.T) {
	in := `goroutine profile: total 5
1 @ 0x48bd2e 0x4936e1
#	0x8801f2	os/signal.loop+0x12		/usr/local/go/src/os/signal/signal_unix.go:23

3 @ 0x48bd2e 0x468265 0x71c731 0x4936e1
#	0x48af04	internal/poll.runtime_pollWait+0x84		/usr/local/go/src/runtime/netpoll.go:351
#	0x71c730	github.com/pushd/pushd/poller.(*loop).run+0xf0	/x/poller/loop.go:261

1 @ 0x48bd2e 0x4936e1

1 @ 0x48bd2e 0x4936e2
#	0x8801f2	os/signal.loop+0x12		/usr/local/go/src/os/signal/signal_unix.go:23
`
	got, err := summarizeGoroutines(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := "total 5\n   3  github.com/pushd/pushd/poller.(*loop).run\n   2  os/signal.loop\n   1  (runtime only)\n"
	if got != want {
		t.Fatalf("summary %q, want %q", got, want)
	}
}
