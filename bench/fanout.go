package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// fanoutFlags configure the fanout scenario.
type fanoutFlags struct {
	conns        int
	sources      string
	concurrency  int
	repeat       int
	burst        int
	payload      int
	minRatio     float64
	minBurst     float64
	variants     string
	pushdArgs    string
	rawAfter     bool
	profile      string
	profileSecs  int
	roundTimeout time.Duration
	settle       time.Duration
}

func fanoutScenario() scenario {
	return scenario{
		name: "fanout",
		about: "Fan-out against the physical limit, same run. One client process (bench -client fanout: all\n" +
			"sockets as bare fds in one epoll loop, receipt stamped with CLOCK_MONOTONIC) opens -conns\n" +
			"subscribers of channel \"bench\" (/ws?ch=bench&format=raw: the frame is 0x81, len, payload) from\n" +
			"many 127.0.x.y sources. pushd runs in its own process; the parent stamps t0 just before\n" +
			"POST /publish of one -payload-byte message and the round ends when every client holds the\n" +
			"frame: deliveries/s = conns / (last receipt - t0). The reference is this binary re-executed\n" +
			"(-rawserver): it accepts -conns plain TCP sockets from the same client process and, on\n" +
			"POST /write (t0 stamped the same way), writes the same frame bytes to every socket with one\n" +
			"write(2) per frame from one thread. Bursts: -burst publications back to back (pushd coalesces\n" +
			"them into one writev per connection) vs the raw loop writing the frame -burst times per socket.\n" +
			"Each measurement is repeated -repeat times; medians and spread are reported. Phase order:\n" +
			"raw, each pushd variant, raw again (-raw-after), so drift on a shared host hits both.\n" +
			"Invariants (first pushd variant): every client gets exactly the expected bytes;\n" +
			"pushd/raw deliveries/s >= -min-ratio (single) and > -min-burst-ratio (bursts).",
		timeout: 20 * time.Minute,
		setup: func(fs *flag.FlagSet) func(context.Context, *harness) (*report, error) {
			f := &fanoutFlags{}
			fs.IntVar(&f.conns, "conns", 19000, "subscribers (and raw sockets)")
			fs.StringVar(&f.sources, "sources", "127.0.1.0/24", "client source addresses (list/CIDRs)")
			fs.IntVar(&f.concurrency, "concurrency", 64, "concurrent dials+handshakes")
			fs.IntVar(&f.repeat, "repeat", 5, "rounds per measurement (median reported)")
			fs.IntVar(&f.burst, "burst", 16, "messages per burst round")
			fs.IntVar(&f.payload, "payload", 32, "payload bytes per message")
			fs.Float64Var(&f.minRatio, "min-ratio", 0.9, "pushd: min pushd/raw deliveries/s, single message")
			fs.Float64Var(&f.minBurst, "min-burst-ratio", 1.0, "pushd: pushd/raw deliveries/s for bursts must exceed this")
			fs.StringVar(&f.variants, "variants", "", "pushd flag sets to compare, ';'-separated (e.g. '-workers 2;-chunk-size 4096'); "+
				"the first is judged; empty: pushd's defaults only")
			fs.StringVar(&f.pushdArgs, "pushd-args", "", "extra pushd flags for every variant, space-separated")
			fs.BoolVar(&f.rawAfter, "raw-after", true, "measure the raw loop again after pushd (samples pooled)")
			fs.StringVar(&f.profile, "profile", "auto", "CPU-profile pushd over repeated single publishes: auto (when a goal is missed), always, never")
			fs.IntVar(&f.profileSecs, "profile-seconds", 10, "length of the profile")
			fs.DurationVar(&f.roundTimeout, "round-timeout", 20*time.Second, "a round not complete by then fails")
			fs.DurationVar(&f.settle, "settle", 500*time.Millisecond, "pause before each round (lets the previous one's work finish)")
			return func(ctx context.Context, h *harness) (*report, error) { return runFanout(ctx, h, f) }
		},
	}
}

// fanoutSample is one round.
type fanoutSample struct {
	Ns        int64   `json:"ns"`          // t0 → last client complete
	FirstNs   int64   `json:"first_ns"`    // t0 → first client complete
	P50Ns     int64   `json:"p50_ns"`      // t0 → half the clients complete
	TriggerNs int64   `json:"trigger_ns"`  // t0 → the POST(s) answered
	ClientCPU float64 `json:"client_busy"` // client CPU / (last receipt - t0)
	LoopNs    int64   `json:"loop_ns,omitempty"`
	// ServerCPUNs is the server process's utime+stime over the round (10 ms
	// resolution), HTTP trigger included.
	ServerCPUNs int64 `json:"server_cpu_ns"`
}

// fanoutStats summarizes samples.
type fanoutStats struct {
	MedianNs      int64   `json:"median_ns"`
	MinNs         int64   `json:"min_ns"`
	MaxNs         int64   `json:"max_ns"`
	DeliveriesSec float64 `json:"deliveries_per_second"` // messages × conns / median
	Messages      int     `json:"messages"`
}

func fanoutSummary(samples []fanoutSample, messages, conns int) fanoutStats {
	if len(samples) == 0 {
		return fanoutStats{}
	}
	ns := make([]int64, len(samples))
	for i, s := range samples {
		ns[i] = s.Ns
	}
	slices.Sort(ns)
	med := ns[len(ns)/2]
	if len(ns)%2 == 0 {
		med = (ns[len(ns)/2-1] + ns[len(ns)/2]) / 2
	}
	return fanoutStats{MedianNs: med, MinNs: ns[0], MaxNs: ns[len(ns)-1], Messages: messages,
		DeliveriesSec: float64(messages*conns) / (float64(med) / 1e9)}
}

// fanoutResult is one phase: the raw loop or one pushd variant.
type fanoutResult struct {
	Server      string         `json:"server"` // "raw" or "pushd"
	Args        string         `json:"args,omitempty"`
	Single      []fanoutSample `json:"single"`
	Burst       []fanoutSample `json:"burst"`
	SingleStats fanoutStats    `json:"single_stats"`
	BurstStats  fanoutStats    `json:"burst_stats"`
	OpenSeconds float64        `json:"open_seconds"`
	Ratio       float64        `json:"ratio_vs_raw"`       // single: deliveries/s ÷ raw's
	BurstRatio  float64        `json:"burst_ratio_vs_raw"` // bursts: deliveries/s ÷ raw's
	Profile     string         `json:"profile,omitempty"`
}

// fanoutRun carries what the phases share.
type fanoutRun struct {
	h      *harness
	f      *fanoutFlags
	client *clientProc
	clock  monoClock
	frame  []byte // the text frame of one message
	body   []byte // the publish body (nil: the frame's payload)
	http   *http.Client
	rep    *report
}

func runFanout(ctx context.Context, h *harness, f *fanoutFlags) (*report, error) {
	if f.repeat < 1 || f.burst < 1 || f.payload < 1 || f.payload > 125 {
		return nil, fmt.Errorf("%w: -repeat, -burst >= 1 and 1 <= -payload <= 125", ErrUsage)
	}
	rep := &report{}
	if _, err := prepareClients(f.sources, f.conns, rep); err != nil {
		return nil, err
	}
	clock, err := newMonoClock()
	if err != nil {
		return nil, err
	}
	payload := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuv"), f.payload/32+1)[:f.payload]
	// pushd's format=raw push of an ASCII payload: a text frame, unmasked
	// (RFC 6455 §5.2), 7-bit length.
	frame := append([]byte{0x81, byte(len(payload))}, payload...)
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	defer tr.CloseIdleConnections()
	r := &fanoutRun{h: h, f: f, clock: clock, frame: frame, rep: rep, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	// The client's -target is required but each "open" names its own.
	r.client, err = h.startClient("fanout", []string{"-target", "127.0.0.1:1", "-sources", f.sources,
		"-concurrency", itoa(f.concurrency), "-max-life", "30m"})
	if err != nil {
		return nil, err
	}
	defer r.client.stop()

	variants := []string{""}
	if strings.TrimSpace(f.variants) != "" {
		variants = strings.Split(f.variants, ";")
	}
	var results []fanoutResult
	raw, err := r.measure(ctx, serverSpec{name: "raw", argv: []string{h.exe, "-rawserver"}}, "")
	if err != nil {
		return nil, fmt.Errorf("raw: %w", err)
	}
	for _, v := range variants {
		args := append([]string{"-ping-interval", "10m"}, strings.Fields(f.pushdArgs)...)
		args = append(args, strings.Fields(v)...)
		spec := serverSpec{name: "pushd", argv: append([]string{h.pushdBin}, args...)}
		res, err := r.measure(ctx, spec, strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("pushd %q: %w", v, err)
		}
		results = append(results, *res)
	}
	if f.rawAfter {
		raw2, err := r.measure(ctx, serverSpec{name: "raw", argv: []string{h.exe, "-rawserver"}}, "")
		if err != nil {
			return nil, fmt.Errorf("raw (after): %w", err)
		}
		raw.Single = append(raw.Single, raw2.Single...)
		raw.Burst = append(raw.Burst, raw2.Burst...)
		raw.OpenSeconds += raw2.OpenSeconds
	}
	raw.SingleStats = fanoutSummary(raw.Single, 1, f.conns)
	raw.BurstStats = fanoutSummary(raw.Burst, f.burst, f.conns)
	for i := range results {
		p := &results[i]
		p.Ratio = p.SingleStats.DeliveriesSec / raw.SingleStats.DeliveriesSec
		p.BurstRatio = p.BurstStats.DeliveriesSec / raw.BurstStats.DeliveriesSec
	}
	all := append([]fanoutResult{*raw}, results...)
	rep.Results = all
	first := results[0]
	if first.Ratio < f.minRatio {
		rep.failf("pushd (%s): single-message deliveries/s = %.3f × raw (< %.2f)", argsName(first.Args), first.Ratio, f.minRatio)
	}
	if first.BurstRatio <= f.minBurst {
		rep.failf("pushd (%s): %d-message burst deliveries/s = %.3f × raw's %d write() per socket (<= %.2f)",
			argsName(first.Args), f.burst, first.BurstRatio, f.burst, f.minBurst)
	}
	if len(results) > 1 {
		best := slices.MaxFunc(results, func(a, b fanoutResult) int { return cmpF(a.Ratio, b.Ratio) })
		bestB := slices.MaxFunc(results, func(a, b fanoutResult) int { return cmpF(a.BurstRatio, b.BurstRatio) })
		rep.notef("best pushd variant, single: %s (%.3f × raw); bursts: %s (%.3f × raw)",
			argsName(best.Args), best.Ratio, argsName(bestB.Args), bestB.BurstRatio)
	}
	if f.profile == "always" || (f.profile == "auto" && len(rep.Failures) > 0) {
		if err := r.profile(ctx, variants[0]); err != nil {
			rep.notef("profile: %v", err)
		}
	}
	rep.notef("client: one process, all sockets in one epoll loop on one thread; client busy = its CPU ÷ (last receipt − t0); near 1.0 would mean the client, not the server, set the pace")
	rep.notef("t0 is taken in the bench parent just before the HTTP request (POST /publish or the raw server's POST /write), so both include one loopback HTTP round trip")
	rep.text = fanoutText(all, f)
	return rep, nil
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func argsName(a string) string {
	if a == "" {
		return "defaults"
	}
	return a
}

func ms(ns int64) string { return fmt.Sprintf("%.2f", float64(ns)/1e6) }

func fanoutText(all []fanoutResult, f *fanoutFlags) string {
	rows := [][]string{{"server", "args", "kind", "msgs", "median ms", "min ms", "max ms", "deliveries/s", "ratio vs raw",
		"first ms (med)", "p50 ms (med)", "server CPU ms (med)", "CPU µs/delivery", "client busy (med)", "raw loop ms (med)", "rounds"}}
	for _, r := range all {
		for _, k := range []struct {
			kind    string
			samples []fanoutSample
			st      fanoutStats
			ratio   float64
		}{{"single", r.Single, r.SingleStats, r.Ratio}, {fmt.Sprintf("burst×%d", f.burst), r.Burst, r.BurstStats, r.BurstRatio}} {
			med := func(get func(fanoutSample) float64) float64 {
				v := make([]float64, len(k.samples))
				for i, s := range k.samples {
					v[i] = get(s)
				}
				slices.Sort(v)
				if len(v) == 0 {
					return 0
				}
				return v[len(v)/2]
			}
			ratio := "1 (reference)"
			if r.Server != "raw" {
				ratio = fmt.Sprintf("%.3f", k.ratio)
			}
			loop := "-"
			if r.Server == "raw" {
				loop = fmt.Sprintf("%.2f", med(func(s fanoutSample) float64 { return float64(s.LoopNs) })/1e6)
			}
			rows = append(rows, []string{r.Server, argsName(r.Args), k.kind, itoa(k.st.Messages), ms(k.st.MedianNs), ms(k.st.MinNs), ms(k.st.MaxNs),
				fmt.Sprintf("%.0f", k.st.DeliveriesSec), ratio,
				fmt.Sprintf("%.2f", med(func(s fanoutSample) float64 { return float64(s.FirstNs) })/1e6),
				fmt.Sprintf("%.2f", med(func(s fanoutSample) float64 { return float64(s.P50Ns) })/1e6),
				fmt.Sprintf("%.0f", med(func(s fanoutSample) float64 { return float64(s.ServerCPUNs) })/1e6),
				fmt.Sprintf("%.2f", med(func(s fanoutSample) float64 { return float64(s.ServerCPUNs) })/1e3/float64(k.st.Messages*f.conns)),
				fmt.Sprintf("%.2f", med(func(s fanoutSample) float64 { return s.ClientCPU })), loop, itoa(len(k.samples))})
		}
	}
	s := table(rows)
	for _, r := range all {
		if r.Profile != "" {
			s += "\npushd CPU profile (" + argsName(r.Args) + "):\n" + r.Profile
		}
	}
	return s
}

// measure runs one phase: start the server, open the connections, check
// one delivery byte for byte, then -repeat single rounds and -repeat burst
// rounds.
func (r *fanoutRun) measure(ctx context.Context, spec serverSpec, args string) (*fanoutResult, error) {
	f := r.f
	r.h.logf("%s %s: starting", spec.name, argsName(args))
	srv, err := startServer(ctx, spec, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	res := &fanoutResult{Server: spec.name, Args: args}
	isRaw := spec.name == "raw"
	open := clientCmd{Cmd: "open", Total: f.conns, Target: srv.wsAddr, Path: "/ws?ch=bench&format=raw", Raw: isRaw}
	if err := r.client.send(open); err != nil {
		return nil, err
	}
	ev, err := r.client.expect(ctx, 5*time.Minute, "opened")
	if err != nil {
		return nil, err
	}
	defer func() {
		if r.client.send(clientCmd{Cmd: "close"}) == nil {
			_, _ = r.client.expect(ctx, time.Minute, "closed")
		}
	}()
	res.OpenSeconds = float64(ev.Millis) / 1000
	if ev.Open != f.conns {
		return nil, fmt.Errorf("opened %d of %d connections: %v", ev.Open, f.conns, ev.Errors)
	}
	r.h.logf("%s: %d connections open in %.1f s", spec.name, ev.Open, res.OpenSeconds)
	if err := r.waitSubscribed(ctx, srv, isRaw); err != nil {
		return nil, err
	}
	// A capture round: every client gets something; the bytes must be
	// exactly one frame (this also warms the admin connection).
	round, _, err := r.round(ctx, srv, isRaw, 1, true)
	if err != nil {
		return nil, fmt.Errorf("capture round: %w", err)
	}
	if !bytes.Equal(round.Captured, r.frame) {
		return nil, fmt.Errorf("%s delivered % x, want the frame % x", spec.name, round.Captured, r.frame)
	}
	for _, k := range []struct {
		n   int
		dst *[]fanoutSample
	}{{1, &res.Single}, {f.burst, &res.Burst}} {
		for i := range f.repeat {
			_, s, err := r.round(ctx, srv, isRaw, k.n, false)
			if err != nil {
				return nil, fmt.Errorf("%d-message round %d: %w", k.n, i+1, err)
			}
			*k.dst = append(*k.dst, s)
			r.h.logf("%s %s: %d msg round %d: last %s ms, first %s ms, client busy %.2f", spec.name, argsName(args), k.n, i+1, ms(s.Ns), ms(s.FirstNs), s.ClientCPU)
		}
	}
	res.SingleStats = fanoutSummary(res.Single, 1, f.conns)
	res.BurstStats = fanoutSummary(res.Burst, f.burst, f.conns)
	return res, nil
}

// waitSubscribed waits until the server reports every connection (pushd:
// every URL subscription) live.
func (r *fanoutRun) waitSubscribed(ctx context.Context, srv *serverProc, isRaw bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int64
		if isRaw {
			st, err := srv.stats(ctx)
			if err != nil {
				return err
			}
			n = st.Conns
		} else {
			st, err := r.pushdStats(ctx, srv)
			if err != nil {
				return err
			}
			n = st["subscriptions"]
		}
		if n == int64(r.f.conns) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s reports %d of %d subscribers/conns", ErrTimeout, srv.name, n, r.f.conns)
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// pushdStats reads pushd's /stats counters (numbers only).
func (r *fanoutRun) pushdStats(ctx context.Context, srv *serverProc) (map[string]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.adminAddr+"/stats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /stats: %w", err)
	}
	defer resp.Body.Close()
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return nil, fmt.Errorf("decode /stats: %w", err)
	}
	out := map[string]int64{}
	for k, v := range raw {
		var n int64
		if json.Unmarshal(v, &n) == nil {
			out[k] = n
		}
	}
	return out, nil
}

// round arms the client, triggers n messages and waits for every client to
// hold them. It returns the client's account and the sample.
func (r *fanoutRun) round(ctx context.Context, srv *serverProc, isRaw bool, n int, capture bool) (*fanoutRound, fanoutSample, error) {
	var s fanoutSample
	if !sleepCtx(ctx, r.f.settle) {
		return nil, s, ctx.Err()
	}
	expect := bytes.Repeat(r.frame, n)
	arm := clientCmd{Cmd: "arm", Bytes: len(expect), Frame: expect, Capture: capture, Ms: r.f.roundTimeout.Milliseconds()}
	if err := r.client.send(arm); err != nil {
		return nil, s, err
	}
	if _, err := r.client.expect(ctx, 30*time.Second, "armed"); err != nil {
		return nil, s, err
	}
	cpu0, err := procCPU(srv.pid())
	if err != nil {
		return nil, s, err
	}
	t0 := r.clock.now()
	if isRaw {
		res, err := r.post(ctx, "http://"+srv.adminAddr+"/write?repeat="+itoa(n), r.frame)
		if err != nil {
			return nil, s, err
		}
		var w rawWriteResult
		if err := json.Unmarshal(res, &w); err != nil {
			return nil, s, fmt.Errorf("raw /write reply %q: %w", res, err)
		}
		if w.Errors > 0 || w.Short > 0 || w.Fds != r.f.conns {
			return nil, s, fmt.Errorf("raw write loop: %+v", w)
		}
		s.LoopNs = w.LoopNs
	} else {
		body := r.frame[2:]
		if r.body != nil {
			body = r.body
		}
		for range n {
			if _, err := r.post(ctx, "http://"+srv.adminAddr+"/publish?ch=bench", body); err != nil {
				return nil, s, err
			}
		}
	}
	s.TriggerNs = r.clock.now() - t0
	ev, err := r.client.expect(ctx, r.f.roundTimeout+30*time.Second, "received")
	if err != nil {
		return nil, s, err
	}
	cpu1, err := procCPU(srv.pid())
	if err != nil {
		return nil, s, err
	}
	s.ServerCPUNs = int64(cpu1 - cpu0)
	fr := ev.Fanout
	if fr.Complete != fr.Conns || fr.Mismatch > 0 || fr.Extra > 0 || fr.Closed > 0 || fr.TimedOut || fr.Stale > 0 {
		return fr, s, fmt.Errorf("%s: %d of %d clients complete, %d mismatched, %d extra bytes, %d closed, %d stale bytes, timed out %v",
			srv.name, fr.Complete, fr.Conns, fr.Mismatch, fr.Extra, fr.Closed, fr.Stale, fr.TimedOut)
	}
	s.Ns, s.FirstNs, s.P50Ns = fr.LastNs-t0, fr.FirstNs-t0, fr.P50Ns-t0
	if s.Ns > 0 {
		s.ClientCPU = float64(fr.CPUNs) / float64(s.Ns)
	}
	return fr, s, nil
}

func (r *fanoutRun) post(ctx context.Context, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: %s %s", url, resp.Status, b)
	}
	return b, nil
}

// profile starts pushd (variant args) again, opens the subscribers and
// takes a CPU profile while single publications fan out back to back
// (each waits for the previous to reach every client).
func (r *fanoutRun) profile(ctx context.Context, variant string) error {
	args := append([]string{"-ping-interval", "10m"}, strings.Fields(r.f.pushdArgs)...)
	args = append(args, strings.Fields(variant)...)
	srv, err := startServer(ctx, serverSpec{name: "pushd", argv: append([]string{r.h.pushdBin}, args...)}, 30*time.Second)
	if err != nil {
		return err
	}
	defer srv.stop()
	if err := r.client.send(clientCmd{Cmd: "open", Total: r.f.conns, Target: srv.wsAddr, Path: "/ws?ch=bench&format=raw"}); err != nil {
		return err
	}
	if _, err := r.client.expect(ctx, 5*time.Minute, "opened"); err != nil {
		return err
	}
	defer func() {
		if r.client.send(clientCmd{Cmd: "close"}) == nil {
			_, _ = r.client.expect(ctx, time.Minute, "closed")
		}
	}()
	if err := r.waitSubscribed(ctx, srv, false); err != nil {
		return err
	}
	rounds, top, err := r.profileRounds(ctx, srv, "pushd-fanout-cpu.pb.gz")
	if err != nil {
		return err
	}
	r.rep.notef("pushd CPU profile over %d back-to-back single-message rounds (%s):\n%s", rounds, argsName(variant), top)
	return nil
}

// profileRounds takes a -profile-seconds CPU profile of srv (saved as
// file) while single publications fan out back to back to the open
// subscribers, each waiting for the previous to reach every client. It
// returns the rounds run and the top of the profile.
func (r *fanoutRun) profileRounds(ctx context.Context, srv *serverProc, file string) (int, string, error) {
	done := make(chan struct{})
	rounds := 0
	var roundErr error
	saved := r.f.settle
	r.f.settle = 0
	go func() {
		defer close(done)
		end := time.Now().Add(time.Duration(r.f.profileSecs)*time.Second + time.Second)
		for time.Now().Before(end) && roundErr == nil {
			_, _, roundErr = r.round(ctx, srv, false, 1, false)
			rounds++
		}
	}()
	top, err := r.h.profileTop(ctx, srv, fmt.Sprintf("/debug/pprof/profile?seconds=%d", r.f.profileSecs), file, 40)
	<-done
	r.f.settle = saved
	if err == nil {
		err = roundErr
	}
	return rounds, top, err
}
