package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pushd/pushd/internal/srcaddr"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	endRamp := make(chan os.Signal, 1)
	signal.Notify(endRamp, syscall.SIGUSR1)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr, endRamp)
	signal.Stop(endRamp)
	stop()
	os.Exit(code)
}

// Hard caps on the flags: a typo must not become a runaway run.
const (
	maxConns    = 2_000_000
	maxRate     = 1_000_000
	maxDuration = 24 * time.Hour
	maxWorkers  = 256
)

// options are the parsed flags.
type options struct {
	targets       []string
	conns         int
	ramp          float64
	maxHS         int
	duration      time.Duration
	rate          float64
	groups        int
	groupRate     float64
	redisURL      string
	durable       bool
	publishURLs   []string
	pubConc       int
	src           string
	workers       int
	loops         int
	jsonPath      string
	maxP99        time.Duration
	minDelivery   float64
	seed          uint64
	hsTimeout     time.Duration
	maxAttempts   int
	drain         time.Duration
	rampTimeout   time.Duration
	progressIvl   time.Duration
	prefix        string
	noPersonal    bool
	minFreeMiB    int
	endRamp       <-chan os.Signal // SIGUSR1 in main: end the ramp now
	preflightOnly bool
	staging       stagingOptions // -ca, -insecure, -sni, tokens (staging.go)
	shard         shardOptions   // -shard, -start-at, -run-id, -role, -max-clock-offset (shard.go)

	child       bool
	workerIndex int
	exe         string
}

// usageHead opens -help: what the command does and the runs SREs make
// most, ready to paste (loopback targets; point them at staging).
const usageHead = `usage: loadtest -target ws://host:port/ws [flags]

Opens -conns pushd.v1 connections (Poisson ramp), publishes for -duration
through -redis or -publish-url, and reports connect/subscribe/delivery
latency, the delivery ratio and an SLO verdict. Exit: 0 every SLO held,
1 the run failed or was interrupted, 2 usage or preflight, 3 SLO breached.
Rates (msg/s) are over the send window (-duration), not the ramp or drain.

Common runs:

  # ramp and hold: 100,000 connections at 2,000/s from 3 workers and 254
  # source addresses, held 10 minutes with no publishing (memory, CPU,
  # pings); the report says how many were held and what each cost
  loadtest -target ws://127.0.0.1:8080/ws -conns 100000 -ramp 2000/s \
      -workers 3 -src 127.0.1.0/24 -rate 0 -duration 10m -json hold.json

  # broadcast storm: every connection on one group channel, 50 broadcasts/s
  # (each fans out to all of them), p99 and delivery judged
  loadtest -target ws://127.0.0.1:8080/ws -publish-url http://127.0.0.1:9090/publish \
      -conns 20000 -ramp 2000/s -groups 1 -no-personal -rate 0 -group-rate 50 \
      -duration 60s -max-p99 250ms -min-delivery 1

  # reconnect storm: 20,000 connections over two nodes with personal
  # traffic through Redis; meanwhile restart one node (systemctl restart
  # pushd): its clients wait the drain's reconnect hint, then redial the
  # same node until it is back (-max-attempts must cover the restart);
  # reconnects, errors and the delivery ratio show how the storm went
  loadtest -target ws://10.0.0.1:8080/ws,ws://10.0.0.2:8080/ws \
      -redis redis://127.0.0.1:6379/0 -conns 20000 -ramp 2000/s -rate 2000 \
      -duration 5m -max-attempts 10 -min-delivery 0.999

  # one shard of a run from 3 generator hosts (the same flags on each but
  # the index), then, when all are done, merge their reports
  loadtest -shard 0/3 -start-at 2026-12-05T15:00:00Z -run-id stg-1 \
      -target wss://push.staging.example/ws -redis redis://10.0.0.5:6379/0 \
      -conns 150000 -ramp 3000/s -ramp-timeout 5m -rate 5000 -duration 10m
  loadtest merge -redis redis://10.0.0.5:6379/0 -run-id stg-1 -json merged.json

  # check that the host can hold the run, start nothing
  loadtest -target ws://127.0.0.1:8080/ws -conns 100000 -workers 3 -preflight

Flags:
`

func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
	}
	fs.Func("target", "WebSocket URL(s) to load, comma-separated, e.g. ws://127.0.0.1:8080/ws (required; no default)", func(s string) error {
		o.targets = splitList(s)
		return nil
	})
	fs.IntVar(&o.conns, "conns", 100, "connections to hold (max 2,000,000)")
	fs.Func("ramp", "connect rate, connections/s (\"5000/s\" or \"5000\"); arrivals are Poisson (default 500/s)", func(s string) error {
		v, err := strconv.ParseFloat(strings.TrimSuffix(s, "/s"), 64)
		o.ramp = v
		return err
	})
	fs.IntVar(&o.maxHS, "max-handshakes", 1000, "cap on handshakes in flight, over all workers")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "publishing window after the ramp (max 24h)")
	fs.Float64Var(&o.rate, "rate", 100, "personal-channel publications per second (open loop)")
	fs.IntVar(&o.groups, "groups", 0, "group channels: connection i also subscribes group i mod groups (fan-out conns/groups)")
	fs.Float64Var(&o.groupRate, "group-rate", 0, "group-channel publications per second (open loop)")
	fs.StringVar(&o.redisURL, "redis", "", "publish through Redis (redis://host:port/db): PUBLISH pushd:{ch}, or FCALL pushd_publish with -durable")
	fs.BoolVar(&o.durable, "durable", false, "with -redis: FCALL pushd_publish (history) instead of PUBLISH")
	fs.Func("publish-url", "publish through pushd's POST /publish (http://admin/publish), comma-separated, round-robin", func(s string) error {
		o.publishURLs = splitList(s)
		return nil
	})
	fs.IntVar(&o.pubConc, "publish-concurrency", 32, "HTTP publish requests in flight")
	fs.StringVar(&o.src, "src", "", "source addresses/CIDRs (e.g. 127.0.1.0/24), dialed with IP_BIND_ADDRESS_NO_PORT")
	fs.IntVar(&o.workers, "workers", 1, "worker processes (re-executions of this binary; each holds conns/workers)")
	fs.IntVar(&o.loops, "loops", 0, "event loops (threads) per worker (0: GOMAXPROCS)")
	fs.StringVar(&o.jsonPath, "json", "", "write the JSON report (schema pushd.loadtest.v1) to this file")
	fs.DurationVar(&o.maxP99, "max-p99", 0, "SLO: publish→receive p99 above this exits 3 (0: off)")
	fs.Float64Var(&o.minDelivery, "min-delivery", 0, "SLO: delivery ratio below this exits 3 (0: off)")
	fs.Uint64Var(&o.seed, "seed", 0, "seed for arrivals, jitter and keys (0: random, printed)")
	fs.DurationVar(&o.hsTimeout, "handshake-timeout", 10*time.Second, "bound on each of connect, upgrade and subscribe")
	fs.IntVar(&o.maxAttempts, "max-attempts", 3, "consecutive failed attempts before a connection is given up")
	fs.DurationVar(&o.drain, "drain", 3*time.Second, "after publishing stops, wait at most this long for deliveries")
	fs.DurationVar(&o.rampTimeout, "ramp-timeout", 0, "bound on the ramp (0: 2×conns/ramp + 30s)")
	fs.DurationVar(&o.progressIvl, "progress", 5*time.Second, "progress log interval when stderr is not a terminal")
	fs.StringVar(&o.prefix, "prefix", "lt:", "channel name prefix: <prefix>u:<i> personal, <prefix>g:<k> group")
	fs.BoolVar(&o.noPersonal, "no-personal", false, "subscribe only the group channel (needs -groups; no personal publications)")
	fs.IntVar(&o.minFreeMiB, "min-free-mib", 0, "end the ramp when the host's MemAvailable falls below this many MiB (0: off); SIGUSR1 also ends it")
	fs.BoolVar(&o.preflightOnly, "preflight", false, "run the preflight checks only and exit (0 fits, 2 does not)")
	fs.BoolVar(&o.child, "worker-child", false, "internal: run as a worker process of a parent loadtest")
	fs.IntVar(&o.workerIndex, "worker-index", 0, "internal: this worker's index")
	fs.StringVar(&o.exe, "worker-exe", "", "internal: binary to re-execute for -workers (default: this executable)")
	o.staging.register(fs)
	o.shard.register(fs)
	return fs
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseOptions parses and validates args; every problem is reported at once.
func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{ramp: 500}
	fs := newFlagSet(o, stderr)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if len(o.targets) == 0 {
		bad("-target is required (no default target: name the server you mean to load)")
	}
	if o.conns < 1 || o.conns > maxConns {
		bad("-conns %d outside 1..%d", o.conns, maxConns)
	}
	if o.ramp <= 0 || o.ramp > maxRate {
		bad("-ramp %v outside (0, %d]", o.ramp, maxRate)
	}
	if o.rate < 0 || o.rate > maxRate || o.groupRate < 0 || o.groupRate > maxRate {
		bad("-rate/-group-rate outside [0, %d]", maxRate)
	}
	if o.duration <= 0 || o.duration > maxDuration {
		bad("-duration %v outside (0, %v]", o.duration, maxDuration)
	}
	if o.workers < 1 || o.workers > maxWorkers || o.workers > o.conns {
		bad("-workers %d outside 1..min(%d, conns)", o.workers, maxWorkers)
	}
	if o.groups < 0 || (o.groupRate > 0 && o.groups == 0) {
		bad("-group-rate needs -groups > 0")
	}
	if o.noPersonal && (o.groups == 0 || o.rate > 0) {
		bad("-no-personal needs -groups > 0 and -rate 0")
	}
	if o.redisURL != "" && len(o.publishURLs) > 0 && !o.shard.sharded() {
		bad("-redis and -publish-url are exclusive (except with -shard, where -redis is the coordinator)")
	}
	if (o.rate > 0 || o.groupRate > 0) && o.redisURL == "" && len(o.publishURLs) == 0 && !o.preflightOnly {
		bad("publishing (-rate/-group-rate > 0) needs -redis or -publish-url")
	}
	if o.minDelivery < 0 || o.minDelivery > 1 {
		bad("-min-delivery %v outside [0, 1]", o.minDelivery)
	}
	if o.maxHS < 1 || o.maxAttempts < 1 || o.pubConc < 1 {
		bad("-max-handshakes, -max-attempts and -publish-concurrency must be ≥ 1")
	}
	errs = append(errs, o.staging.validate(o.targets)...)
	if o.loops <= 0 {
		o.loops = runtime.GOMAXPROCS(0)
	}
	errs = append(errs, o.shard.validate(o)...)
	if o.seed == 0 {
		o.seed = rand.Uint64() | 1
	}
	if o.rampTimeout == 0 {
		o.rampTimeout = time.Duration(2*float64(o.conns)/o.ramp*float64(time.Second)) + 30*time.Second
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrUsage, errors.Join(errs...))
	}
	return o, nil
}

// resolveTargets turns ws:// URLs into IPv4 endpoints.
func resolveTargets(ctx context.Context, urls []string) ([]target, error) {
	var out []target
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%w: -target %q: %w", ErrUsage, s, err)
		}
		if u.Scheme != "ws" && u.Scheme != "wss" {
			return nil, fmt.Errorf("%w: -target %q: the scheme must be ws:// or wss://", ErrUsage, s)
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"ws": "80", "wss": "443"}[u.Scheme]
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("%w: -target %q: port: %w", ErrUsage, s, err)
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", u.Hostname())
		if err != nil || len(ips) == 0 {
			return nil, fmt.Errorf("%w: -target %q: no IPv4 address: %v", ErrUsage, s, err)
		}
		path := u.RequestURI()
		out = append(out, target{Host: u.Host, Path: path, Addr: ips[0].Unmap().As4(), Port: p, TLS: u.Scheme == "wss", ServerName: u.Hostname()})
	}
	return out, nil
}

// parseSources expands -src into IPv4 addresses.
func parseSources(s string) ([][4]byte, error) {
	if s == "" {
		return nil, nil
	}
	addrs, err := srcaddr.ParseList(s)
	if err != nil {
		return nil, fmt.Errorf("%w: -src: %w", ErrUsage, err)
	}
	out := make([][4]byte, 0, len(addrs))
	for _, a := range addrs {
		if !a.Is4() {
			return nil, fmt.Errorf("%w: -src %s: only IPv4 sources", ErrUsage, a)
		}
		out = append(out, a.As4())
	}
	return out, nil
}

func isLoopback(ts []target) bool {
	for _, t := range ts {
		if !netip.AddrFrom4(t.Addr).IsLoopback() {
			return false
		}
	}
	return true
}

// run is the command; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runMain(ctx, args, stdout, stderr, nil)
}

// runMain is run with the SIGUSR1 channel that ends the ramp early.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer, endRamp <-chan os.Signal) int {
	if len(args) > 0 && args[0] == "merge" {
		return runMerge(args[1:], stdout, stderr)
	}
	o, err := parseOptions(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			printErr(stderr, err)
		}
		return ExitUsage
	}
	o.endRamp = endRamp
	targets, err := resolveTargets(ctx, o.targets)
	if err == nil {
		var src [][4]byte
		if src, err = parseSources(o.src); err == nil {
			if o.child {
				return runChildMode(ctx, o, targets, src, stdout, stderr)
			}
			return coordinate(ctx, o, targets, src, stdout, stderr)
		}
	}
	printErr(stderr, err)
	return ExitUsage
}

// workerRange is worker i's share [lo, hi) of n connections over k workers.
func workerRange(n, k, i int) (int, int) { return n * i / k, n * (i + 1) / k }

// shardRange is this process's share [lo, hi) of the run's connections:
// all of them, or with -shard i/N shard i's (channel numbering stays
// global); a -role publisher process holds none.
func (o *options) shardRange() (int, int) {
	if o.shard.role == rolePublisher {
		return 0, 0
	}
	return workerRange(o.conns, o.shard.count, o.shard.index)
}

func (o *options) workerConfig(targets []target, src [][4]byte, i int) workerConfig {
	slo, shi := o.shardRange()
	lo, hi := workerRange(shi-slo, o.workers, i)
	lo, hi = lo+slo, hi+slo
	return workerConfig{
		Lo: lo, Hi: hi, Total: o.conns, Loops: o.loops, Targets: targets, Sources: src,
		Ramp:             o.ramp / float64(o.workers*o.shard.count), // -ramp is the run's rate
		MaxInflight:      max(o.maxHS/(o.workers*o.loops), 1),
		HandshakeTimeout: o.hsTimeout, MaxAttempts: o.maxAttempts,
		Groups: o.groups, Prefix: o.prefix, Seed: o.seed, NoPersonal: o.noPersonal,
		WallClock: o.shard.sharded(),
		staging:   &o.staging,
	}
}

func runChildMode(ctx context.Context, o *options, targets []target, src [][4]byte, stdout, stderr io.Writer) int {
	if _, err := srcaddr.RaiseNofile(); err != nil {
		fmt.Fprintln(stderr, "loadtest worker:", err)
	}
	// The parent stops a child through stdin; a terminal ^C reaches only
	// the parent's process group, and a dead parent closes stdin.
	if err := runChild(ctx, o.workerConfig(targets, src, o.workerIndex), os.Stdin, stdout); err != nil {
		fmt.Fprintln(stderr, "loadtest worker:", err)
		return ExitRunError
	}
	return ExitOK
}
