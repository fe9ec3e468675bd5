package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pushd/pushd/internal/pushdtest"
	"github.com/pushd/pushd/internal/srcaddr"
)

// peersFlags configure the peers scenario.
type peersFlags struct {
	only        string
	plateaus    string
	sources     string
	concurrency int
	repeat      int
	latConns    int
	latRate     int
	latDuration time.Duration
	out         string
	date        string
	profile     string
	profileSecs int
	pushdArgs   string
}

func peersScenario() scenario {
	return scenario{
		name: "peers",
		about: "pushd against its peers, one after another in one run (go -C bench run . -peers all): pushd (one row\n" +
			"per -poller its binary offers), gorilla/websocket (goroutine-per-connection hub), gobwas/ws\n" +
			"(goroutine-per-connection reads), lesismal/nbio (its event loop), centrifugal/centrifuge, and npm ws\n" +
			"on Node. Each peer lives in bench/peers/ (one Go module, and ws-node with its package-lock, which\n" +
			"bench installs with npm ci). Every server first passes a smoke check (subscribe, publish,\n" +
			"receive). Then, from one fanout client process: idle subscribers of one channel in -plateaus\n" +
			"(RSS slope = bytes per connection; goroutines, threads; connections/s of the ramp); single\n" +
			"publications to all of them (deliveries/s, ÷ the raw write(2) loop measured in the same run,\n" +
			"server CPU s per million deliveries); then -lat-conns personal channels with -lat-rate\n" +
			"publications/s for -lat-duration (publish→receive p50/p99, HDR). Writes the table, the plots,\n" +
			"pushd's profiles and the full JSON to -out/<date>.* (see -profile).\n" +
			"Invariants: every server passes its smoke check; every measured delivery is complete and\n" +
			"byte-exact; every latency-phase publication is received once.",
		timeout: 30 * time.Minute,
		setup: func(fs *flag.FlagSet) func(context.Context, *harness) (*report, error) {
			f := &peersFlags{}
			fs.StringVar(&f.only, "only", "all", "servers to measure: all, or a list of "+strings.Join(peerNames(), ","))
			fs.StringVar(&f.plateaus, "plateaus", "2000,10000,19000", "idle subscriber counts (ascending); the last is the broadcast audience")
			fs.StringVar(&f.sources, "sources", "127.0.1.0/24", "client source addresses (list/CIDRs)")
			fs.IntVar(&f.concurrency, "concurrency", 64, "concurrent dials+handshakes")
			fs.IntVar(&f.repeat, "repeat", 7, "broadcast rounds per server (median reported)")
			fs.IntVar(&f.latConns, "lat-conns", 1000, "latency phase: connections, one personal channel each")
			fs.IntVar(&f.latRate, "lat-rate", 1000, "latency phase: publications per second, round robin over the channels")
			fs.DurationVar(&f.latDuration, "lat-duration", 20*time.Second, "latency phase: publishing time")
			fs.StringVar(&f.out, "out", "bench/results", "directory for <date>.md and the plots (empty: none)")
			fs.StringVar(&f.date, "date", time.Now().UTC().Format("2006-01-02"), "name of the results file")
			fs.StringVar(&f.profile, "profile", "auto", "profile the pushd rows outside the measured windows (heap and goroutines at the top plateau; "+
				"CPU over back-to-back broadcasts, the latency load and a second ramp): auto (the results file quotes those of the columns "+
				"pushd does not lead), never")
			fs.IntVar(&f.profileSecs, "profile-seconds", 5, "length of the broadcast and latency CPU profiles")
			fs.StringVar(&f.pushdArgs, "pushd-args", "", "extra pushd flags, space-separated")
			return func(ctx context.Context, h *harness) (*report, error) { return runPeers(ctx, h, f) }
		},
	}
}

// peerDef is one row of the comparison: how to build and start a server
// that does pushd's job.
type peerDef struct {
	name  string
	kind  string   // "pushd", "go" (a package of bench/peers) or "node"
	pkg   string   // go: the package directory under bench/peers
	args  []string // extra arguments (pushd: -poller X)
	hello string   // sent after each upgrade (a protocol's connect command)
	about string   // library and model, for the table
}

// peerTable is the comparison, in run order. pushdPollers are the -poller
// values the pushd binary offers (none: one "pushd" row with its default).
func peerTable(pushdPollers []string) []peerDef {
	var t []peerDef
	if len(pushdPollers) == 0 {
		t = append(t, peerDef{name: "pushd", kind: "pushd", about: "pushd (netpoll event loop)"})
	}
	for _, p := range pushdPollers {
		t = append(t, peerDef{name: "pushd-" + p, kind: "pushd", args: []string{"-poller", p}, about: "pushd -poller " + p})
	}
	return append(t,
		peerDef{name: "gorilla", kind: "go", pkg: "gorilla", about: "gorilla/websocket, chat-example hub, 2 goroutines/conn"},
		peerDef{name: "gobwas", kind: "go", pkg: "gobwas", about: "gobwas/ws, a read goroutine per conn"},
		peerDef{name: "nbio", kind: "go", pkg: "nbio", about: "lesismal/nbio websocket on its epoll loops"},
		peerDef{name: "centrifuge", kind: "go", pkg: "centrifuge", hello: `{"id":1,"connect":{}}`,
			about: "centrifugal/centrifuge Node, JSON protocol, server-side subscription"},
		peerDef{name: "ws-node", kind: "node", about: "npm ws on Node"},
	)
}

// peerNames lists the names -only accepts.
func peerNames() []string {
	var n []string
	for _, d := range peerTable([]string{"lean", "netpoll"}) {
		n = append(n, d.name)
	}
	return append(n, "pushd")
}

// selectPeers filters the table by -only ("pushd" selects every pushd row).
func selectPeers(table []peerDef, only string) ([]peerDef, error) {
	if strings.TrimSpace(only) == "all" {
		return table, nil
	}
	var out []peerDef
	for _, name := range strings.Split(only, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, d := range table {
			if d.name == name || (name == "pushd" && d.kind == "pushd") {
				found = true
				if !slices.ContainsFunc(out, func(o peerDef) bool { return o.name == d.name }) {
					out = append(out, d)
				}
			}
		}
		if !found && name != "" {
			return nil, fmt.Errorf("%w: unknown server %q in -only (%s)", ErrUsage, name, strings.Join(peerNames(), ", "))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: -only selects nothing", ErrUsage)
	}
	return out, nil
}

// pushdPollers returns the -poller values `pushd -h` lists, in the order
// lean, netpoll; none when the binary has no -poller flag.
func pushdPollers(ctx context.Context, bin string) []string {
	out, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	if !bytes.Contains(out, []byte("-poller")) {
		return nil
	}
	return []string{"lean", "netpoll"}
}

// peerResult is one server's row.
type peerResult struct {
	Name  string `json:"name"`
	About string `json:"about"`
	Error string `json:"error,omitempty"` // smoke or measurement failure: the row is empty
	// Skipped says why a pushd -poller row was left out: the binary lists
	// the flag but refused to start with that value.
	Skipped       string         `json:"skipped,omitempty"`
	BaselineRSS   uint64         `json:"baseline_rss_bytes"`
	Plateaus      []plateau      `json:"plateaus"`
	BytesPerConn  float64        `json:"bytes_per_conn"`
	Goroutines    int            `json:"goroutines"` // at the top plateau; -1: not a Go server
	Threads       int            `json:"threads"`    // at the top plateau
	ConnsPerSec   float64        `json:"conns_per_second"`
	Broadcast     []fanoutSample `json:"broadcast"`
	Deliveries    float64        `json:"deliveries_per_second"` // median round
	Ratio         float64        `json:"ratio_vs_raw"`
	CPUPerMillion float64        `json:"cpu_seconds_per_million_deliveries"`
	Frame         []byte         `json:"frame"` // the bytes one publication put on the wire
	Latency       *latencyResult `json:"latency,omitempty"`
	LatExpected   int            `json:"latency_expected"`
	// Profiles of pushd rows by phase (profileKinds): what the results
	// file quotes for a column pushd does not lead.
	Profiles map[string]string `json:"profiles,omitempty"`
}

// peersResult is the scenario's result.
type peersResult struct {
	Machine   machineInfo  `json:"machine"`
	Raw       fanoutResult `json:"raw"`
	Peers     []peerResult `json:"peers"`
	Plateaus  []int        `json:"plateaus"`
	Payload   string       `json:"payload"`
	LatConns  int          `json:"lat_conns"`
	LatRate   int          `json:"lat_rate"`
	LatSecs   float64      `json:"lat_seconds"`
	Files     []string     `json:"files,omitempty"`
	WallSecs  float64      `json:"wall_seconds"`
	PushdArgs []string     `json:"pushd_args"`
}

// peersRun carries what the phases share.
type peersRun struct {
	h       *harness
	f       *peersFlags
	counts  []int
	binDir  string // built Go peers
	nodeDir string // bench/peers/ws-node
	payload []byte // the broadcast payload: a JSON string, so centrifuge takes it too
	fr      *fanoutRun
}

// prepareClients parses the client's -sources, raises RLIMIT_NOFILE (the
// client and server processes inherit it: each needs as many descriptors
// as there are connections) and runs the srcaddr preflight for conns
// connections to one local server, noting its findings in rep. It returns
// the count of source addresses.
func prepareClients(sources string, conns int, rep *report) (int, error) {
	srcs, err := srcaddr.ParseList(sources)
	if err != nil {
		return 0, err
	}
	if _, err := srcaddr.RaiseNofile(); err != nil {
		return 0, err
	}
	for _, p := range srcaddr.Preflight(srcaddr.Plan{Conns: conns, Sources: len(srcs), Destinations: 1, LocalServer: true}) {
		if p.Severity == srcaddr.Fail {
			return 0, fmt.Errorf("preflight: %s", p)
		}
		rep.notef("preflight %s", p)
	}
	return len(srcs), nil
}

// peersDir returns bench/peers of the repository bench runs in.
func peersDir(ctx context.Context) (string, error) {
	root, err := pushdModuleDir(ctx)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "bench", "peers")
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("peers module: %w", err)
	}
	return dir, nil
}

// buildPeers builds the selected Go peers into dir and installs the Node
// peer's locked dependencies (npm ci).
func buildPeers(ctx context.Context, h *harness, peersRoot, dir string, defs []peerDef) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	node := false
	for _, d := range defs {
		switch d.kind {
		case "go":
			args = append(args, "./"+d.pkg)
		case "node":
			node = true
		}
	}
	if len(args) > 3 {
		h.logf("building the Go peers: go %s", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = peersRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build peers: %w\n%s", err, b)
		}
	}
	if node {
		h.logf("installing the Node peer's dependencies: npm ci")
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = filepath.Join(peersRoot, "ws-node")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("npm ci in bench/peers/ws-node: %w\n%s", err, b)
		}
	}
	return nil
}

// spec returns how to start def.
func (p *peersRun) spec(def peerDef) serverSpec {
	switch def.kind {
	case "pushd":
		args := append([]string{"-ping-interval", "10m"}, strings.Fields(p.f.pushdArgs)...)
		return serverSpec{name: def.name, argv: append(append([]string{p.h.pushdBin}, args...), def.args...)}
	case "node":
		return serverSpec{name: def.name, argv: []string{"node", "--expose-gc", filepath.Join(p.nodeDir, "server.js")}}
	default:
		return serverSpec{name: def.name, argv: []string{filepath.Join(p.binDir, def.pkg)}}
	}
}

func runPeers(ctx context.Context, h *harness, f *peersFlags) (*report, error) {
	start := time.Now()
	counts, err := parseCounts(f.plateaus)
	if err != nil {
		return nil, err
	}
	if f.repeat < 1 || f.latConns < 1 || f.latRate < 1 || f.latDuration <= 0 || f.profileSecs < 1 {
		return nil, fmt.Errorf("%w: -repeat, -lat-conns, -lat-rate, -lat-duration and -profile-seconds must be positive", ErrUsage)
	}
	if f.profile != "auto" && f.profile != "never" {
		return nil, fmt.Errorf("%w: -profile is auto or never, not %q", ErrUsage, f.profile)
	}
	top := counts[len(counts)-1]
	rep := &report{}
	if _, err := prepareClients(f.sources, top, rep); err != nil {
		return nil, err
	}
	defs, err := selectPeers(peerTable(pushdPollers(ctx, h.pushdBin)), f.only)
	if err != nil {
		return nil, err
	}
	root, err := peersDir(ctx)
	if err != nil {
		return nil, err
	}
	if h.profileDir == "" && f.out != "" {
		// The profiles the results file quotes are kept beside it.
		h.profileDir = f.out
	}
	p := &peersRun{h: h, f: f, counts: counts, binDir: filepath.Join(h.tmp, "peers"), nodeDir: filepath.Join(root, "ws-node"),
		payload: []byte(`"0123456789abcdefghijklmnopqrst"`)}
	if err := buildPeers(ctx, h, root, p.binDir, defs); err != nil {
		return nil, err
	}
	clock, err := newMonoClock()
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
	defer tr.CloseIdleConnections()
	p.fr = &fanoutRun{h: h, clock: clock, rep: rep, http: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		frame: append([]byte{0x81, byte(len(p.payload))}, p.payload...), body: p.payload,
		f: &fanoutFlags{conns: top, repeat: f.repeat, burst: 1, settle: 300 * time.Millisecond,
			roundTimeout: 20 * time.Second, profileSecs: f.profileSecs}}
	machine := describeMachine(ctx, root)
	machine.Pushd = "cmd/pushd built from this work tree by the run"
	if !strings.HasPrefix(h.pushdBin, h.tmp) {
		machine.Pushd = "the binary given with -pushd-bin " + h.pushdBin
	}
	res := &peersResult{Machine: machine, Plateaus: counts, Payload: string(p.payload),
		LatConns: f.latConns, LatRate: f.latRate, LatSecs: f.latDuration.Seconds(), PushdArgs: strings.Fields(f.pushdArgs)}
	raw, err := p.measureRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("raw write loop: %w", err)
	}
	for _, def := range defs {
		r := p.measurePeer(ctx, def)
		if r.Skipped != "" {
			rep.notef("%s not measured: the binary lists -poller but exited at start: %s", def.name, r.Skipped)
			continue
		}
		if r.Error != "" {
			rep.failf("%s: %s", def.name, r.Error)
		}
		res.Peers = append(res.Peers, r)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	raw2, err := p.measureRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("raw write loop (after): %w", err)
	}
	raw.Single = append(raw.Single, raw2.Single...)
	raw.SingleStats = fanoutSummary(raw.Single, 1, top)
	res.Raw = *raw
	for i := range res.Peers {
		if r := &res.Peers[i]; r.Error == "" && raw.SingleStats.DeliveriesSec > 0 {
			r.Ratio = r.Deliveries / raw.SingleStats.DeliveriesSec
		}
	}
	res.WallSecs = time.Since(start).Seconds()
	rep.Results = res
	rep.text = peersText(res)
	if f.out != "" {
		rep.after = func(rep *report) error {
			files, err := writePeersResults(f.out, f.date, res, rep)
			res.Files = files
			return err
		}
	}
	return rep, nil
}

// measureRaw runs the raw write(2) loop over top plain TCP sockets: the
// physical limit of the broadcast, in this run.
func (p *peersRun) measureRaw(ctx context.Context) (*fanoutResult, error) {
	cl, err := p.startClient()
	if err != nil {
		return nil, err
	}
	defer cl.stop()
	p.fr.client = cl
	res, err := p.fr.measure(ctx, serverSpec{name: "raw", argv: []string{p.h.exe, "-rawserver"}}, "")
	if err != nil {
		return nil, err
	}
	// -burst 1: the burst rounds are single publications too.
	res.Single = append(res.Single, res.Burst...)
	res.Burst = nil
	return res, nil
}

func (p *peersRun) startClient() (*clientProc, error) {
	// The client's -target is required but each "open" names its own.
	return p.h.startClient("fanout", []string{"-target", "127.0.0.1:1", "-sources", p.f.sources,
		"-concurrency", itoa(p.f.concurrency), "-max-life", "30m"})
}

// measurePeer measures one server: smoke check, idle plateaus, broadcast
// rounds, latency. A failure is recorded in the row, not returned, so one
// broken peer does not void the others.
func (p *peersRun) measurePeer(ctx context.Context, def peerDef) peerResult {
	res := peerResult{Name: def.name, About: def.about, Goroutines: -1}
	err := p.measurePeerErr(ctx, def, &res)
	if err != nil && def.kind == "pushd" && len(def.args) > 0 && errors.Is(err, pushdtest.ErrExited) {
		res.Skipped = strings.Join(strings.Fields(err.Error()), " ")
		p.h.logf("%s: not measured: %s", def.name, res.Skipped)
		return res
	}
	if err != nil {
		res.Error = err.Error()
		p.h.logf("%s: FAILED: %v", def.name, err)
	}
	return res
}

func (p *peersRun) measurePeerErr(ctx context.Context, def peerDef, res *peerResult) error {
	p.h.logf("%s: starting", def.name)
	srv, err := startServer(ctx, p.spec(def), 30*time.Second)
	if err != nil {
		return err
	}
	defer srv.stop()
	if err := p.smoke(ctx, srv, def); err != nil {
		return fmt.Errorf("smoke check: %w\n%s", err, srv.tail(10))
	}
	p.h.logf("%s: smoke check passed", def.name)
	cl, err := p.startClient()
	if err != nil {
		return err
	}
	defer cl.stop()
	p.fr.client = cl
	if err := p.idle(ctx, srv, def, res); err != nil {
		return fmt.Errorf("idle plateaus: %w", err)
	}
	if err := p.broadcast(ctx, srv, def, res); err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	if err := p.latency(ctx, srv, def, res); err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	if p.profiling(def) {
		prof, err := p.profileRamp(ctx, srv, def)
		p.keepProfile(res, "ramp", fmt.Sprintf("CPU while %d connections open again, after the measurements", p.counts[len(p.counts)-1]), prof, err)
	}
	return nil
}

// smoke subscribes one connection to a fresh channel, publishes until the
// payload arrives (the subscription may lag the 101), and checks the frame
// carries it.
func (p *peersRun) smoke(ctx context.Context, srv *serverProc, def peerDef) error {
	src, err := srcaddr.ParseList("127.0.0.1")
	if err != nil {
		return err
	}
	d, err := srcaddr.NewDialer(src, 5*time.Second)
	if err != nil {
		return err
	}
	cf := clientFlags{target: srv.wsAddr, path: "/ws?ch=smoke&format=raw", hsTimeout: 5 * time.Second, hello: def.hello}
	c, err := dialUpgrade(ctx, cf, d)
	if err != nil {
		return err
	}
	defer c.c.Close()
	payload := []byte(`"smoke-` + def.name + `"`)
	got := make(chan error, 1)
	go func() {
		_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		op, b, err := readFrame(c.br, nil)
		switch {
		case err != nil:
			got <- err
		case op != 0x1 || !bytes.Contains(b, payload):
			got <- fmt.Errorf("%w: opcode %#x payload %q, want a text frame carrying %s", ErrFrame, op, b, payload)
		default:
			got <- nil
		}
	}()
	for {
		if _, err := p.fr.post(ctx, "http://"+srv.adminAddr+"/publish?ch=smoke", payload); err != nil {
			return err
		}
		select {
		case err := <-got:
			return err
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
