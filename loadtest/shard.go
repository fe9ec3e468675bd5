package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Roles of a process in a sharded run (-role).
const (
	roleDefault   = ""          // hold the shard's connections; shard 0 also publishes
	roleConns     = "conns"     // hold the shard's connections, never publish
	rolePublisher = "publisher" // publish only, hold no connections
)

// maxShards caps -shard's N.
const maxShards = 4096

// measureGrace separates the measured window's instant (when every shard
// marks its held set) from the first publication, so that a shard whose
// marking takes a moment still owes every message.
const measureGrace = time.Second

// countWait bounds how long a shard that does not publish waits, after
// its send window, for the publisher's count in Redis.
const countWait = 60 * time.Second

// shardOptions are the flags of a sharded run.
type shardOptions struct {
	spec           string // "i/N" as given; "" is not sharded
	index, count   int
	startAtRaw     string
	startAt        time.Time
	runID          string
	role           string
	maxClockOffset time.Duration
}

func (s *shardOptions) register(fs *flag.FlagSet) {
	s.count = 1
	fs.Func("shard", "run shard i of N (\"i/N\") of a run spread over N generator hosts: hold connections [i·conns/N, (i+1)·conns/N) with global channel numbering; needs -start-at and -redis", func(v string) error {
		i, n, ok := strings.Cut(v, "/")
		a, err1 := strconv.Atoi(i)
		b, err2 := strconv.Atoi(n)
		if !ok || err1 != nil || err2 != nil || b < 1 || b > maxShards || a < 0 || a >= b {
			return fmt.Errorf("want i/N with 0 ≤ i < N ≤ %d, got %q", maxShards, v)
		}
		s.spec, s.index, s.count = v, a, b
		return nil
	})
	fs.StringVar(&s.startAtRaw, "start-at", "", "sharded runs: RFC 3339 instant at which every shard starts its ramp; the measured window begins at start-at + -ramp-timeout on every shard")
	fs.StringVar(&s.runID, "run-id", "", "sharded runs: the run's id, the same on every shard (default: run-<start-at>)")
	fs.StringVar(&s.role, "role", "", "sharded runs: \"\" (shard 0 publishes), \"conns\" (hold connections, never publish) or \"publisher\" (publish only, hold none: run it beside N shards with -role conns)")
	fs.DurationVar(&s.maxClockOffset, "max-clock-offset", 10*time.Millisecond, "sharded runs: flag a shard whose clock is further than this from the publisher's (measured against Redis TIME)")
}

// sharded reports whether -shard was given.
func (s *shardOptions) sharded() bool { return s.spec != "" }

// publishes reports whether this process is the run's publisher.
func (s *shardOptions) publishes() bool {
	return !s.sharded() || s.role == rolePublisher || (s.role == roleDefault && s.index == 0)
}

// validate checks the sharding flags against the rest; it derives the
// run id and, when -seed is not given, the seed from it, so that every
// shard of a run agrees on both without more flags.
func (s *shardOptions) validate(o *options) []error {
	var errs []error
	if !s.sharded() {
		if s.startAtRaw != "" || s.runID != "" || s.role != "" {
			errs = append(errs, errors.New("-start-at, -run-id and -role need -shard i/N"))
		}
		return errs
	}
	switch s.role {
	case roleDefault, roleConns, rolePublisher:
	default:
		errs = append(errs, fmt.Errorf("-role %q: want \"\", conns or publisher", s.role))
	}
	if s.role != rolePublisher && o.workers > o.conns/s.count {
		errs = append(errs, fmt.Errorf("-workers %d exceeds this shard's %d connections", o.workers, o.conns/s.count))
	}
	if s.maxClockOffset <= 0 {
		errs = append(errs, errors.New("-max-clock-offset must be > 0"))
	}
	if o.child { // a worker process only needs its range and the clock
		return errs
	}
	if s.startAtRaw == "" {
		errs = append(errs, errors.New("-shard needs -start-at (RFC 3339, the same on every shard), e.g. -start-at "+time.Now().UTC().Add(2*time.Minute).Truncate(time.Minute).Format(time.RFC3339)))
	} else if t, err := time.Parse(time.RFC3339Nano, s.startAtRaw); err != nil {
		errs = append(errs, fmt.Errorf("-start-at %q is not RFC 3339: %w", s.startAtRaw, err))
	} else {
		s.startAt = t
	}
	if o.redisURL == "" {
		errs = append(errs, errors.New("-shard needs -redis on every shard: its TIME is the clock reference and the publisher posts its count there"))
	}
	if o.rampTimeout == 0 {
		errs = append(errs, errors.New("-shard needs -ramp-timeout: the measured window begins at -start-at + -ramp-timeout on every shard"))
	}
	if s.runID == "" {
		s.runID = "run-" + s.startAtRaw
	}
	if o.seed == 0 {
		h := fnv.New64a()
		h.Write([]byte(s.runID))
		o.seed = h.Sum64() | 1
	}
	return errs
}

// args are the flags a worker process of this shard needs.
func (s *shardOptions) args() []string {
	if !s.sharded() {
		return nil
	}
	return []string{"-shard", s.spec, "-role", s.role}
}

// configDigest identifies the run's configuration: every shard of one run
// has the same digest. It leaves out what may differ per host: -shard's
// index, -role, -workers, -loops, -src, -json, -max-handshakes.
func (o *options) configDigest() string {
	h := sha256.New()
	fmt.Fprintf(h, "run=%s\nseed=%d\nshards=%d\nstart=%s\ntargets=%s\nconns=%d\nramp=%g\nrate=%g\ngroup_rate=%g\ngroups=%d\n",
		o.shard.runID, o.seed, o.shard.count, o.shard.startAt.UTC().Format(time.RFC3339Nano), strings.Join(o.targets, ","),
		o.conns, o.ramp, o.rate, o.groupRate, o.groups)
	fmt.Fprintf(h, "duration=%v\nramp_timeout=%v\ndrain=%v\nprefix=%s\nno_personal=%t\ndurable=%t\npublish_urls=%s\nmax_p99=%v\nmin_delivery=%g\nmax_attempts=%d\n",
		o.duration, o.rampTimeout, o.drain, o.prefix, o.noPersonal, o.durable, strings.Join(o.publishURLs, ","), o.maxP99, o.minDelivery, o.maxAttempts)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ShardInfo is a shard's part of the report.
type ShardInfo struct {
	RunID        string `json:"run_id"`
	Index        int    `json:"index"`
	Count        int    `json:"count"`
	Role         string `json:"role"` // "shard" | "conns" | "publisher"
	Publishes    bool   `json:"publishes"`
	ConfigDigest string `json:"config_digest"`
	StartAt      string `json:"start_at"`
	// LateMs: how late this shard started its ramp after -start-at (0 on
	// time); WindowLateMs: how late it marked its measured set after
	// start-at + -ramp-timeout.
	LateMs       float64 `json:"late_ms"`
	WindowLateMs float64 `json:"window_late_ms"`
	// Clock: this host's wall clock minus the reference's (Redis TIME),
	// from the round trip with the smallest RTT.
	ClockRef         string `json:"clock_ref"`
	ClockOffsetUs    int64  `json:"clock_offset_us"`
	ClockRTTUs       int64  `json:"clock_rtt_us"`
	MaxClockOffsetUs int64  `json:"max_clock_offset_us"`
	// Conns is this shard's share [ConnsLo, ConnsHi) of the run.
	ConnsLo int `json:"conns_lo"`
	ConnsHi int `json:"conns_hi"`
}

func (s *ShardInfo) line() string {
	late := "on time"
	if s.LateMs > 0 || s.WindowLateMs > 0 {
		late = fmt.Sprintf("LATE: ramp %.0f ms, window %.0f ms after the common instant", s.LateMs, s.WindowLateMs)
	}
	return fmt.Sprintf("%d/%d (%s) of run %s, conns [%d, %d), %s; clock %+dµs vs %s (rtt %dµs)",
		s.Index, s.Count, s.Role, s.RunID, s.ConnsLo, s.ConnsHi, late, s.ClockOffsetUs, s.ClockRef, s.ClockRTTUs)
}

// measureClockOffset estimates this host's wall clock minus Redis's from
// 8 TIME round trips, keeping the one with the smallest RTT (its midpoint
// is the best guess of when Redis read its clock).
func measureClockOffset(ctx context.Context, rc *redis.Client) (offset, rtt time.Duration, err error) {
	rtt = -1
	for range 8 {
		t0 := time.Now()
		rt, err := rc.Time(ctx).Result()
		if err != nil {
			return 0, 0, fmt.Errorf("redis TIME: %w", err)
		}
		d := time.Since(t0)
		if rtt < 0 || d < rtt {
			mid := t0.Add(d / 2).Round(0) // wall clock only
			rtt, offset = d, mid.Sub(rt)
		}
	}
	return offset, rtt, nil
}

// countKey is where the publisher posts what it published.
func (o *options) countKey() string {
	return o.prefix + "loadtest:{" + o.shard.runID + "}:published"
}

// postedCount is the publisher's account in Redis.
type postedCount struct {
	Pub         published `json:"pub"`
	SendSeconds float64   `json:"send_seconds"`
}

// sleepUntil waits until t or ctx ends; false if ctx ended.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// executeSharded runs one shard: wait for -start-at, ramp until the
// common window instant (start-at + -ramp-timeout), mark the held set at
// that instant, then the publisher publishes from window + measureGrace
// for -duration and posts its count to Redis; every shard waits for that
// count (its connections' expected deliveries follow from it), drains and
// reports.
func executeSharded(ctx context.Context, o *options, targets []target, src [][4]byte, rep *Report, stderr io.Writer) (err error) {
	lo, hi := o.shardRange()
	role := o.shard.role
	if role == roleDefault {
		role = "shard"
	}
	info := &ShardInfo{RunID: o.shard.runID, Index: o.shard.index, Count: o.shard.count, Role: role,
		Publishes: o.shard.publishes(), ConfigDigest: o.configDigest(), StartAt: o.shard.startAtRaw,
		ClockRef: "redis TIME", MaxClockOffsetUs: o.shard.maxClockOffset.Microseconds(), ConnsLo: lo, ConnsHi: hi}
	rep.Shard = info
	ro, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return fmt.Errorf("-redis: %w", err)
	}
	ro.PoolSize = 4
	rc := redis.NewClient(ro)
	defer rc.Close()
	off, rtt, err := measureClockOffset(ctx, rc)
	if err != nil {
		return fmt.Errorf("clock offset: %w", err)
	}
	info.ClockOffsetUs, info.ClockRTTUs = off.Microseconds(), rtt.Microseconds()
	fmt.Fprintf(stderr, "loadtest: shard %s of run %s (%s), conns [%d, %d), clock %+v vs redis TIME (rtt %v)\n",
		o.shard.spec, o.shard.runID, role, lo, hi, off, rtt)

	start := o.shard.startAt
	window := start.Add(o.rampTimeout)
	if d := time.Until(start); d > 0 {
		fmt.Fprintf(stderr, "loadtest: waiting %v for -start-at %s\n", d.Round(time.Millisecond), o.shard.startAtRaw)
		if !sleepUntil(ctx, start) {
			return ErrInterrupted
		}
	} else {
		info.LateMs = float64(-d) / 1e6
		fmt.Fprintf(stderr, "loadtest: this shard starts %v after -start-at %s: it says so in its report\n", (-d).Round(time.Millisecond), o.shard.startAtRaw)
	}
	var hs []handle
	if hi > lo {
		if hs, err = startHandles(o, targets, src); err != nil {
			return err
		}
	}
	var pub published
	defer func() { err = errors.Join(err, collect(hs, pub, rep)) }()
	pp := newProgressPrinter(stderr, o.progressIvl)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()

	rampStart := time.Now()
	if err := rampPhase(ctx, o, hs, rep, pp, tick, window, "the window instant (start-at + ramp-timeout "+o.rampTimeout.String()+")"); err != nil {
		return err
	}
	rep.RampSeconds = time.Since(rampStart).Seconds()
	pp.print("ramp", sumProgress(hs), "done", true)
	for time.Now().Before(window) { // hold until the common instant
		next := time.Now().Add(250 * time.Millisecond)
		if next.After(window) {
			next = window
		}
		if !sleepUntil(ctx, next) {
			return ErrInterrupted
		}
		rep.PeakOpen = max(rep.PeakOpen, sumProgress(hs).Open)
	}
	if late := time.Since(window); late > 100*time.Millisecond {
		info.WindowLateMs = float64(late) / 1e6
	}
	if err := measureAll(ctx, hs); err != nil {
		return err
	}
	first := window.Add(measureGrace)
	if !sleepUntil(ctx, first) {
		return ErrInterrupted
	}
	windowStart := time.Now()
	if o.shard.publishes() {
		rep.Publish = "none"
		var pr pubResult
		if o.rate > 0 || o.groupRate > 0 {
			pcfg, perr := o.pubConfig(rep)
			if perr != nil {
				return perr
			}
			if pcfg.Redis != nil {
				defer pcfg.Redis.Close()
			}
			pctx, cancel := context.WithTimeout(ctx, o.duration)
			pdone := make(chan struct{})
			go func() {
				defer close(pdone)
				pr = runPublisher(pctx, pcfg, wallClock())
			}()
			watch(pdone, tick, hs, rep, pp)
			cancel()
		} else if !sleepUntil(ctx, windowStart.Add(o.duration)) {
			return ErrInterrupted
		}
		rep.SendSeconds = time.Since(windowStart).Seconds()
		pub = pr.Sent
		rep.PublishErrors, rep.PublisherMaxLagMs = pr.Errors, pr.MaxLagMs
		b, _ := json.Marshal(postedCount{Pub: pub, SendSeconds: rep.SendSeconds})
		// Posted even when interrupted: the other shards' expected counts
		// depend on what really went out.
		if perr := rc.Set(context.WithoutCancel(ctx), o.countKey(), b, 24*time.Hour).Err(); perr != nil {
			return fmt.Errorf("post the publisher's count to redis: %w", perr)
		}
	} else {
		rep.Publish = "another shard"
		end := windowStart.Add(o.duration)
		done := make(chan struct{})
		go func() { defer close(done); sleepUntil(ctx, end) }()
		watch(done, tick, hs, rep, pp)
		pc, werr := waitCount(ctx, rc, o.countKey(), countWait)
		if werr != nil {
			return werr
		}
		pub = pc.Pub
		rep.SendSeconds = pc.SendSeconds
	}
	drainPhase(ctx, hs, o.drain)
	rep.WindowSeconds = time.Since(windowStart).Seconds()
	end := sumProgress(hs)
	pp.print("done", end, "", true)
	if ctx.Err() != nil {
		return ErrInterrupted
	}
	if end.Measured == 0 && hi > lo {
		return ErrNoConns
	}
	return nil
}

// watch prints progress and tracks the peak until done closes.
func watch(done <-chan struct{}, tick *time.Ticker, hs []handle, rep *Report, pp *progressPrinter) {
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			p := sumProgress(hs)
			rep.PeakOpen = max(rep.PeakOpen, p.Open)
			pp.print("publish", p, "", false)
		}
	}
}

// ErrNoCount means the publisher's count never arrived in Redis.
var ErrNoCount = errors.New("the publisher's count did not arrive in redis")

// waitCount polls key until the publisher has posted its count, at most d.
func waitCount(ctx context.Context, rc *redis.Client, key string, d time.Duration) (postedCount, error) {
	deadline := time.Now().Add(d)
	for {
		b, err := rc.Get(ctx, key).Bytes()
		if err == nil {
			var pc postedCount
			if jerr := json.Unmarshal(b, &pc); jerr != nil {
				return pc, fmt.Errorf("publisher's count at %s: %w", key, jerr)
			}
			return pc, nil
		}
		if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			return postedCount{}, fmt.Errorf("read the publisher's count: %w", err)
		}
		if ctx.Err() != nil {
			return postedCount{}, ErrInterrupted
		}
		if time.Now().After(deadline) {
			return postedCount{}, fmt.Errorf("%w within %v of the window's end (key %s): is the publisher shard running?", ErrNoCount, d, key)
		}
		sleepUntil(ctx, time.Now().Add(200*time.Millisecond))
	}
}

// reportKey is where a shard's report is kept in Redis for `loadtest
// merge -redis`: "p" for a -role publisher process, else the shard index.
func reportKey(prefix, runID, who string) string {
	return prefix + "loadtest:{" + runID + "}:report:" + who
}

// reportTTL bounds how long Redis keeps a run's reports.
const reportTTL = 7 * 24 * time.Hour

// storeShardReport keeps rep in Redis for reportTTL.
func storeShardReport(o *options, rep *Report) error {
	ro, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return fmt.Errorf("store the report in redis: %w", err)
	}
	rc := redis.NewClient(ro)
	defer rc.Close()
	b, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	who := strconv.Itoa(o.shard.index)
	if o.shard.role == rolePublisher {
		who = "p"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rc.Set(ctx, reportKey(o.prefix, o.shard.runID, who), b, reportTTL).Err(); err != nil {
		return fmt.Errorf("store the report in redis: %w", err)
	}
	return nil
}

// loadShardReports reads the reports of run runID from Redis: shard 0's
// gives N, then shards 1..N-1 and a -role publisher's if there is one. A
// missing shard is left out (mergeReports names it).
func loadShardReports(ctx context.Context, redisURL, prefix, runID string) ([]string, [][]byte, error) {
	ro, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: -redis: %w", ErrUsage, err)
	}
	rc := redis.NewClient(ro)
	defer rc.Close()
	get := func(who string) ([]byte, error) {
		b, err := rc.Get(ctx, reportKey(prefix, runID, who)).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		return b, err
	}
	var names []string
	var docs [][]byte
	n := 0
	for i := 0; i == 0 || i < n; i++ {
		b, err := get(strconv.Itoa(i))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: read run %s from redis: %w", ErrMerge, runID, err)
		}
		if b == nil {
			if i == 0 {
				return nil, nil, fmt.Errorf("%w: no report of shard 0 of run %q under %s in redis (wrong -run-id or -prefix, or shard 0 did not finish)",
					ErrMerge, runID, reportKey(prefix, runID, "0"))
			}
			continue
		}
		if i == 0 {
			var head struct {
				Shard *ShardInfo `json:"shard"`
			}
			if json.Unmarshal(b, &head) != nil || head.Shard == nil || head.Shard.Count < 1 || head.Shard.Count > maxShards {
				return nil, nil, fmt.Errorf("%w: %s is not a shard's report", ErrMerge, reportKey(prefix, runID, "0"))
			}
			n = head.Shard.Count
		}
		names = append(names, reportKey(prefix, runID, strconv.Itoa(i)))
		docs = append(docs, b)
	}
	if b, err := get("p"); err != nil {
		return nil, nil, fmt.Errorf("%w: read run %s from redis: %w", ErrMerge, runID, err)
	} else if b != nil {
		names = append(names, reportKey(prefix, runID, "p"))
		docs = append(docs, b)
	}
	return names, docs, nil
}
