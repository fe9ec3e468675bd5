package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
)

// ingestFlags are the ingest scenario's flags.
type ingestFlags struct {
	clients    int
	rates      string
	step       time.Duration
	publishers int
	payload    int
	minRatio   float64
	settle     time.Duration
	pushdArgs  string
}

func ingestScenario() scenario {
	return scenario{
		name: "ingest",
		about: "Redis ingest under a publish flood (issue 26). One redis-server (started here, default limits)\n" +
			"and one pushd (-redis, -policy '*=drop'); -clients WebSocket clients (gorilla, format=raw, in\n" +
			"this process) each on its own personal channel user:<i>, plus one on the quiet channel\n" +
			"login:quiet, published 10 times a second. -publishers go-redis connections pipeline plain\n" +
			"PUBLISH over the personal channels at each rate of -rates (publications/s, 0: as fast as they\n" +
			"can) for -step. Per rate: published, delivered, counted drops (/stats, by reason), pushd's\n" +
			"pub/sub reconnects, the quiet channel's latency (p50/p99/max), and, in the same run, a plain\n" +
			"go-redis subscriber on the same channels (its receive rate is the reference; its latency on\n" +
			"the quiet channel is the Redis + host share of pushd's). After the rates,\n" +
			"the raw write(2) loop (bench -rawserver) writes the same frame to -clients plain sockets:\n" +
			"the physical limit of the delivery side. Invariants: at every rate delivered + counted drops =\n" +
			"published, 0 reconnects, no \"output buffer\" line in Redis's log, every quiet publication\n" +
			"delivered; the highest rate delivered 100% is >= -min-ratio x the plain subscriber's rate.",
		timeout: 15 * time.Minute,
		setup: func(fs *flag.FlagSet) func(context.Context, *harness) (*report, error) {
			f := &ingestFlags{}
			fs.IntVar(&f.clients, "clients", 1000, "clients, one personal channel each")
			fs.StringVar(&f.rates, "rates", "50000,100000,200000,300000,0", "publish rates to step through (publications/s; 0: full speed)")
			fs.DurationVar(&f.step, "step", 8*time.Second, "flood length per rate")
			fs.IntVar(&f.publishers, "publishers", 4, "publishing connections (pipelined)")
			fs.IntVar(&f.payload, "payload", 32, "payload bytes")
			fs.Float64Var(&f.minRatio, "min-ratio", 0.4, "highest 100%-delivered rate / plain subscriber rate must reach this")
			fs.StringVar(&f.pushdArgs, "pushd-args", "", "extra pushd flags, space-separated (e.g. '-redis-pubsub-conns 8')")
			fs.DurationVar(&f.settle, "settle", 30*time.Second, "how long to wait after a step for delivered + drops to reach published")
			return func(ctx context.Context, h *harness) (*report, error) { return runIngest(ctx, h, f) }
		},
	}
}

// ingestStep is one rate's outcome.
type ingestStep struct {
	Target       int                `json:"target_per_second"` // 0: full speed
	Published    int64              `json:"published"`
	PublishedSec float64            `json:"published_per_second"`
	Delivered    int64              `json:"delivered"`
	DeliveredSec float64            `json:"delivered_per_second"`
	Drops        map[string]float64 `json:"drops"`
	Gaps         int64              `json:"gap_notices_received"`
	Reconnects   float64            `json:"reconnects"`
	QuietSent    int                `json:"quiet_sent"`
	QuietGot     int                `json:"quiet_received"`
	QuietP50Ms   float64            `json:"quiet_p50_ms"`
	QuietP99Ms   float64            `json:"quiet_p99_ms"`
	QuietMaxMs   float64            `json:"quiet_max_ms"`
	// The same quiet publications received by the plain go-redis
	// subscriber (the Redis + host share of the latency).
	PlainQuietP50Ms float64 `json:"plain_quiet_p50_ms"`
	PlainQuietP99Ms float64 `json:"plain_quiet_p99_ms"`
	PlainGot        int64   `json:"plain_received"`
	PlainSec        float64 `json:"plain_received_per_second"`
}

// ingestResult is the scenario's results.
type ingestResult struct {
	Clients     int          `json:"clients"`
	Steps       []ingestStep `json:"steps"`
	RawWriteSec float64      `json:"raw_writes_per_second"`
	PlainMaxSec float64      `json:"plain_max_per_second"`
	Best100Sec  float64      `json:"best_full_delivery_per_second"`
	Ratio       float64      `json:"ratio_to_plain"`
}

func startRedis(ctx context.Context, dir string) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.CommandContext(ctx, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning", "--logfile", "redis.log")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("redis-server: %w", err)
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	addr = "127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2})
	defer c.Close()
	for i := 0; ; i++ {
		if c.Ping(ctx).Err() == nil {
			return addr, stop, nil
		}
		if i > 200 {
			stop()
			return "", nil, errors.New("redis-server did not answer PING")
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func runIngest(ctx context.Context, h *harness, f *ingestFlags) (*report, error) {
	var rates []int
	for _, s := range strings.Split(f.rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r < 0 {
			return nil, fmt.Errorf("-rates: bad rate %q", s)
		}
		rates = append(rates, r)
	}
	rep := &report{Scenario: "ingest"}
	res := &ingestResult{Clients: f.clients}
	rep.Results = res
	rdir := filepath.Join(h.tmp, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, err
	}
	raddr, stopRedis, err := startRedis(ctx, rdir)
	if err != nil {
		return nil, err
	}
	defer stopRedis()
	argv := append([]string{h.pushdBin, "-redis", "redis://" + raddr + "/0", "-policy", "*=drop"}, strings.Fields(f.pushdArgs)...)
	srv, err := startServer(ctx, serverSpec{name: "pushd", argv: argv}, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	for ready := time.Now().Add(30 * time.Second); ; {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.adminAddr+"/readyz", nil)
		resp, err := adminClient().Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(ready) {
			return nil, fmt.Errorf("pushd not ready on Redis within 30 s\n%s", srv.tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}

	var delivered, gaps atomic.Int64
	var conns []*websocket.Conn
	var wg sync.WaitGroup
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	dial := func(ch string) (*websocket.Conn, error) {
		c, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+srv.wsAddr+"/ws?ch="+ch+"&format=raw", nil)
		if err != nil {
			status := ""
			if resp != nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				status = fmt.Sprintf(" (%s: %s)", resp.Status, b)
			}
			return nil, fmt.Errorf("dial %s: %w%s\n%s", ch, err, status, srv.tail(20))
		}
		conns = append(conns, c)
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
			return nil, err
		}
		if _, _, err := c.ReadMessage(); err != nil {
			return nil, err
		}
		return c, nil
	}
	names := make([]string, f.clients)
	for i := range names {
		names[i] = "pushd:{user:" + strconv.Itoa(i) + "}"
		c, err := dial("user:" + strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					return
				}
				if len(b) > 0 && b[0] == '{' {
					gaps.Add(1)
				} else {
					delivered.Add(1)
				}
			}
		}()
	}
	var qmu sync.Mutex
	var qlat []time.Duration
	qc, err := dial("login:quiet")
	if err != nil {
		return nil, err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			_, b, err := qc.ReadMessage()
			if err != nil {
				return
			}
			now := time.Now()
			if sent, err := strconv.ParseInt(string(b), 10, 64); err == nil {
				qmu.Lock()
				qlat = append(qlat, now.Sub(time.Unix(0, sent)))
				qmu.Unlock()
			}
		}
	}()
	h.logf("ingest: %d clients connected", f.clients)

	// The plain go-redis subscriber on the same channels.
	var plain atomic.Int64
	pc := redis.NewClient(&redis.Options{Addr: raddr, Protocol: 2})
	defer pc.Close()
	ps := pc.Subscribe(ctx, append(slices.Clone(names), "pushd:{login:quiet}")...)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return nil, err
	}
	pch := ps.Channel(redis.WithChannelSize(1 << 16))
	var plainQlat []time.Duration // guarded by qmu
	go func() {
		for m := range pch {
			if m.Channel == "pushd:{login:quiet}" {
				now := time.Now()
				if sent, err := strconv.ParseInt(m.Payload, 10, 64); err == nil {
					qmu.Lock()
					plainQlat = append(plainQlat, now.Sub(time.Unix(0, sent)))
					qmu.Unlock()
				}
				continue
			}
			plain.Add(1)
		}
	}()
	time.Sleep(time.Second) // every subscription confirmed

	stat := func() (map[string]float64, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.adminAddr+"/stats", nil)
		resp, err := adminClient().Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		m := map[string]any{}
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			return nil, err
		}
		out := map[string]float64{}
		for k, v := range m {
			if f, ok := v.(float64); ok {
				out[k] = f
			}
		}
		return out, nil
	}
	dropKeys := []string{"broker_shed_channel", "broker_shed_node", "broker_conflated", "dropped", "mailbox_overflows", "broker_lost", "slow_disconnects"}
	quiet := redis.NewClient(&redis.Options{Addr: raddr, Protocol: 2})
	defer quiet.Close()
	payload := strings.Repeat("x", f.payload)

	for _, rate := range rates {
		before, err := stat()
		if err != nil {
			return nil, err
		}
		d0, g0, p0 := delivered.Load(), gaps.Load(), plain.Load()
		qmu.Lock()
		qlat, plainQlat = qlat[:0], plainQlat[:0]
		qmu.Unlock()
		st := ingestStep{Target: rate, Drops: map[string]float64{}}
		var published atomic.Int64
		start := time.Now()
		end := start.Add(f.step)
		var pw sync.WaitGroup
		for w := range f.publishers {
			pw.Add(1)
			go func() {
				defer pw.Done()
				c := redis.NewClient(&redis.Options{Addr: raddr, Protocol: 2})
				defer c.Close()
				batch := 1000
				var per time.Duration // time per batch at this publisher's share of the rate
				if rate > 0 {
					batch = max(1, min(1000, rate/f.publishers/100))
					per = time.Duration(float64(time.Second) * float64(batch) * float64(f.publishers) / float64(rate))
				}
				next := time.Now()
				for i := w; time.Now().Before(end) && ctx.Err() == nil; {
					pipe := c.Pipeline()
					for range batch {
						pipe.Publish(ctx, names[i%len(names)], payload)
						i += 7
					}
					if _, err := pipe.Exec(ctx); err != nil {
						return
					}
					published.Add(int64(batch))
					if per > 0 {
						next = next.Add(per)
						if d := time.Until(next); d > 0 {
							time.Sleep(d)
						}
					}
				}
			}()
		}
		for time.Now().Before(end) && ctx.Err() == nil {
			if err := quiet.Publish(ctx, "pushd:{login:quiet}", strconv.FormatInt(time.Now().UnixNano(), 10)).Err(); err == nil {
				st.QuietSent++
			}
			time.Sleep(100 * time.Millisecond)
		}
		pw.Wait()
		elapsed := time.Since(start)
		st.Published = published.Load()
		st.PublishedSec = float64(st.Published) / elapsed.Seconds()
		// Settle: everything delivered or counted, or -settle passed.
		deadline := time.Now().Add(f.settle)
		var after map[string]float64
		for {
			if after, err = stat(); err != nil {
				return nil, err
			}
			var drops float64
			for _, k := range dropKeys {
				drops += after[k] - before[k]
			}
			qmu.Lock()
			st.QuietGot = len(qlat)
			qmu.Unlock()
			if float64(delivered.Load()-d0)+drops >= float64(st.Published) && st.QuietGot >= st.QuietSent && plain.Load()-p0 >= st.Published || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		st.Delivered = delivered.Load() - d0
		st.Gaps = gaps.Load() - g0
		st.PlainGot = plain.Load() - p0
		// Delivery rates over the flood: what arrived by the end of the
		// step, plus the settle tail, over the step (an upper bound on
		// the sustained rate only when the tail is short; 100% rows are
		// what the ratio uses).
		st.DeliveredSec = float64(st.Delivered) / elapsed.Seconds()
		st.PlainSec = float64(st.PlainGot) / elapsed.Seconds()
		var drops float64
		for _, k := range dropKeys {
			if v := after[k] - before[k]; v != 0 {
				st.Drops[k] = v
				drops += v
			}
		}
		st.Reconnects = after["broker_reconnects"] - before["broker_reconnects"]
		qmu.Lock()
		lat, plat := slices.Clone(qlat), slices.Clone(plainQlat)
		qmu.Unlock()
		slices.Sort(lat)
		slices.Sort(plat)
		if len(plat) > 0 {
			st.PlainQuietP50Ms = float64(plat[len(plat)/2]) / 1e6
			st.PlainQuietP99Ms = float64(plat[min(len(plat)-1, len(plat)*99/100)]) / 1e6
		}
		if len(lat) > 0 {
			st.QuietP50Ms = float64(lat[len(lat)/2]) / 1e6
			st.QuietP99Ms = float64(lat[min(len(lat)-1, len(lat)*99/100)]) / 1e6
			st.QuietMaxMs = float64(lat[len(lat)-1]) / 1e6
		}
		res.Steps = append(res.Steps, st)
		h.logf("ingest: rate %d: published %d (%.0f/s), delivered %d, drops %v, reconnects %.0f, quiet %d/%d p99 %.1f ms, plain %d",
			rate, st.Published, st.PublishedSec, st.Delivered, st.Drops, st.Reconnects, st.QuietGot, st.QuietSent, st.QuietP99Ms, st.PlainGot)
		if n := float64(st.Delivered) + drops; n != float64(st.Published) {
			rep.failf("rate %d: delivered %d + counted drops %.0f = %.0f, published %d", rate, st.Delivered, drops, n, st.Published)
		}
		if st.Reconnects != 0 {
			rep.failf("rate %d: %.0f pub/sub reconnects", rate, st.Reconnects)
		}
		if st.QuietGot != st.QuietSent {
			rep.failf("rate %d: quiet channel got %d of %d", rate, st.QuietGot, st.QuietSent)
		}
		res.PlainMaxSec = max(res.PlainMaxSec, st.PlainSec)
		if st.Delivered == st.Published && st.Published > 0 {
			res.Best100Sec = max(res.Best100Sec, st.DeliveredSec)
		}
	}
	if log, err := os.ReadFile(filepath.Join(rdir, "redis.log")); err == nil && strings.Contains(string(log), "output buffer") {
		rep.failf("Redis closed a client for its output buffer limit")
	}

	// The raw write(2) loop over as many plain sockets.
	raw, err := startServer(ctx, serverSpec{name: "raw", argv: []string{h.exe, "-rawserver"}}, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer raw.stop()
	var rawConns []net.Conn
	defer func() {
		for _, c := range rawConns {
			c.Close()
		}
	}()
	for range f.clients {
		c, err := net.Dial("tcp", raw.wsAddr)
		if err != nil {
			return nil, err
		}
		rawConns = append(rawConns, c)
		go func() { _, _ = io.Copy(io.Discard, c) }()
	}
	for {
		s, err := raw.stats(ctx)
		if err != nil {
			return nil, err
		}
		if s.Conns >= int64(f.clients) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	frame := append([]byte{0x81, byte(f.payload)}, payload...)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+raw.adminAddr+"/write?repeat=100", strings.NewReader(string(frame)))
	resp, err := adminClient().Do(req)
	if err != nil {
		return nil, err
	}
	var rw rawWriteResult
	err = json.NewDecoder(resp.Body).Decode(&rw)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	res.RawWriteSec = float64(rw.Writes) / (float64(rw.LoopNs) / 1e9)
	if res.PlainMaxSec > 0 {
		res.Ratio = res.Best100Sec / res.PlainMaxSec
	}
	if res.Ratio < f.minRatio {
		rep.failf("highest 100%%-delivered rate %.0f/s is %.2fx the plain subscriber's %.0f/s (want >= %.2f)", res.Best100Sec, res.Ratio, res.PlainMaxSec, f.minRatio)
	}
	rep.Pass = len(rep.Failures) == 0
	rows := [][]string{{"target/s", "published/s", "delivered/s", "delivered %", "counted drops", "reconnects", "quiet got", "quiet p50 ms", "quiet p99 ms", "quiet max ms", "plain sub/s", "plain quiet p50/p99 ms"}}
	for _, s := range res.Steps {
		var drops float64
		for _, v := range s.Drops {
			drops += v
		}
		target := strconv.Itoa(s.Target)
		if s.Target == 0 {
			target = "full"
		}
		rows = append(rows, []string{target, fmt.Sprintf("%.0f", s.PublishedSec), fmt.Sprintf("%.0f", s.DeliveredSec),
			fmt.Sprintf("%.1f", 100*float64(s.Delivered)/float64(max(s.Published, 1))), fmt.Sprintf("%.0f", drops),
			fmt.Sprintf("%.0f", s.Reconnects), fmt.Sprintf("%d/%d", s.QuietGot, s.QuietSent),
			fmt.Sprintf("%.1f", s.QuietP50Ms), fmt.Sprintf("%.1f", s.QuietP99Ms), fmt.Sprintf("%.1f", s.QuietMaxMs), fmt.Sprintf("%.0f", s.PlainSec),
			fmt.Sprintf("%.1f/%.1f", s.PlainQuietP50Ms, s.PlainQuietP99Ms)})
	}
	rep.text = table(rows) + fmt.Sprintf("\nraw write(2) loop over %d sockets: %.0f writes/s\nhighest 100%%-delivered rate: %.0f/s = %.2fx the plain go-redis subscriber's best %.0f/s\n",
		f.clients, res.RawWriteSec, res.Best100Sec, res.Ratio, res.PlainMaxSec)
	return rep, nil
}
