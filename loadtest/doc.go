// Command loadtest is the load generator SREs run against a pushd
// deployment before a launch: it opens many pushd.v1 WebSocket
// connections, publishes through the path backends use (Redis PUBLISH /
// FCALL pushd_publish, or POST /publish), measures connect, subscribe and
// publish→receive latency with HDR histograms, counts every delivery, and
// exits with a verdict against latency and delivery SLOs.
//
// # Usage
//
//	go run ./loadtest -target ws://127.0.0.1:8080/ws \
//	    -redis redis://127.0.0.1:6379/0 \
//	    -conns 50000 -workers 3 -src 127.0.1.0/24 -ramp 5000/s \
//	    -rate 5000 -duration 60s -json report.json \
//	    -max-p99 20ms -min-delivery 0.9999
//
// A staging deployment behind TLS and tokens:
//
//	go run ./loadtest -target wss://push.staging.example/ws -ca staging-ca.pem \
//	    -jwt-hs256-secret-file hs256.secret \
//	    -jwt-claims '{"sub":"{i}","exp":{exp},"channels":["lt:u:{i}"]}' \
//	    -publish-url https://admin.staging.example/publish -conns 20000 -rate 2000
//
// wss:// targets verify the server against -ca (default: the system
// roots; -insecure skips it; -sni sets the server name). The TLS handshake
// runs on a goroutine that lives only for the handshake; a held wss
// connection is served by the loops like a ws one (tls.go). Tokens travel
// as ?token=: -token (one for all), -token-file (line i mod n for
// connection i) or, with -jwt-hs256-secret-file, an HS256 token signed
// here per connection from the -jwt-claims template ({i}: the connection
// index, so each connection is its own user and may read its own
// personal channel; {exp}: now + -jwt-ttl; {prefix}: -prefix). The
// summary's tls line gives the versions negotiated and the share of
// handshakes resumed from a session ticket (one session cache per loop).
//
// -target is required (a comma-separated list spreads connections round
// robin over several nodes); there is no default target. Every run is
// bounded: -conns (≤ 2,000,000), -ramp, -rate, -duration (≤ 24h) have small
// defaults and hard caps, and the run stops by itself. SIGINT or SIGTERM
// stops it early: publishing stops, workers report what they measured, and
// a report marked partial is printed (and written with -json). The seed is
// printed on every run; -seed replays the same arrivals, jitter and keys.
//
// # Scenario and its invariants
//
// Connection i (0 ≤ i < -conns) upgrades to <target>?ch=<prefix>u:<i>
// (its personal channel; left out with -no-personal) and, with -groups G,
// also <prefix>g:<i mod G>; it
// then sends {"op":"ping"}: the pong proves the URL subscriptions live
// (subscribe latency = 101 → pong). Connections arrive as a Poisson
// process at -ramp per second (open model: the gaps are each connection's
// jitter), with at most -max-handshakes handshakes in flight.
//
// When the ramp is over (every connection open or given up, -ramp-timeout,
// MemAvailable below -min-free-mib, or SIGUSR1), connections not yet
// started are abandoned and those open at that moment are the held set
// and the measured window begins: the publisher sends personal message k
// (k = 0, 1, ...) to channel u:<k mod conns> with sequence k/conns+1, and
// group message j to g:<j mod G> with sequence j/G+1, at exactly -rate and
// -group-rate per second (open loop, pipelined). Each payload is
// {"k":"u"|"g","q":<seq>,"t":<scheduled send time, CLOCK_MONOTONIC ns>}
// (wall-clock Unix ns in sharded runs);
// latency is receive time minus the scheduled time, so a publisher that
// falls behind shows as latency (no coordinated omission). Because the
// schedule is a function of the publication count, each worker computes
// what each held connection was owed; per connection the client checks
// that sequences arrive in order once (invariants: delivered = expected,
// duplicates = 0, gaps = 0 for a healthy run). After -duration the tool
// waits until deliveries stop for 1 s (at most -drain).
//
// A dropped connection reconnects with full-jitter exponential backoff
// (100 ms × 2^attempt, capped at 5 s) or, when the server sent
// {"op":"reconnect","after_ms":N} before closing (1001 going away, 1012
// restart), after N ms plus up to 10% jitter. Messages published while it
// was away count as lost. -max-attempts consecutive failures give a
// connection up.
//
// # Exit codes
//
//	0  the run completed and every SLO held
//	1  run error: a worker failed, publishing could not start, or the run
//	   was interrupted (the partial report is still printed)
//	2  usage: bad flags, or preflight found the host cannot hold the run
//	   (the fixes are printed and nothing is started)
//	3  an SLO was breached: p99 above -max-p99 or delivery ratio below
//	   -min-delivery (checked on partial runs too)
//
// # Preflight
//
// Before anything is started, internal/srcaddr checks RLIMIT_NOFILE
// (hard, per worker process: conns/workers + headroom), fs.nr_open,
// fs.file-max (twice the connections when the target is on this host) and
// the ephemeral port budget: ports per (source address, destination) pair
// against conns / (sources × destinations). Each finding prints with the
// exact fix (sysctl, prlimit, -workers K, -src CIDR). -preflight runs only
// the checks.
//
// # Report (-json), schema "pushd.loadtest.v1"
//
// The file is the Report struct, encoded with encoding/json. Field by
// field (latencies in microseconds; all counts are totals over workers):
//
//	schema                 "pushd.loadtest.v1"
//	seed, partial, error   the seed; true (with error) when interrupted or failed
//	targets, publish       the -target URLs; "redis PUBLISH" | "redis FCALL pushd_publish" | "http POST /publish" | "none"
//	config                 {conns, ramp_per_sec, rate_per_sec, group_rate_per_sec, groups, duration_seconds, sources, loops_per_worker}
//	conns_requested        -conns
//	conns_held             open when the measured window began (delivery is owed to these)
//	conns_failed           given up after -max-attempts
//	conns_open_end         open when the run stopped
//	reconnects             re-dials after an established connection dropped
//	ramp_seconds           time to the end of the ramp
//	ramp_stopped_by        "" when every connection was started, else why the ramp ended:
//	                       "ramp-timeout D", "memory: MemAvailable ...", "SIGUSR1", "interrupted"
//	conns_not_started      never dialed because the ramp ended first
//	conns_peak             most connections open at once (sampled every 250 ms)
//	connect_latency_us     {count, min, mean, p50, p90, p99, p999, max}: connect(2) start → 101
//	subscribe_latency_us   same shape: 101 → pong
//	latency_us             same shape: personal publication, scheduled send → receive
//	group_latency_us       same shape: group publication
//	published_personal, published_group   publications sent (failed ones included: they are lost)
//	publish_errors         {class: count}: redis_<ERR>, redis_conn, http_status_N, http_conn
//	publisher_max_lag_ms   worst lateness of the publisher behind its schedule
//	expected               deliveries owed to the held connections
//	delivered              unique in-order deliveries received by them
//	duplicates, gaps       repeated sequence numbers; sequence numbers skipped
//	lost                   expected − delivered
//	delivery_ratio         delivered / expected (0 when nothing was expected)
//	msgs_per_sec           delivered / send_seconds
//	published_per_sec      (published_personal + published_group) / send_seconds
//	send_seconds           the publishing (send) window: -duration, or less if interrupted
//	window_seconds         send window plus drain
//	errors                 {class: count}: errno names (EADDRNOTAVAIL, EMFILE, ECONNREFUSED, ...),
//	                       bind_<errno>, timeout_connect|handshake|subscribe, handshake_status_N,
//	                       handshake_bad_accept, close_<code>, eof, reconnect_hint, server_err, ...
//	close_codes            {code: count} close frames received
//	workers                worker processes
//	cpu_seconds            user+sys CPU of all workers (the publisher in the parent is not included)
//	rss_bytes              sum of worker RSS at the start of the window
//	user_bytes_per_conn    (RSS at window start − RSS after the loops were built) / held:
//	                       the user-space cost of a held connection
//	heap_bytes_per_conn    same with Go heap + stacks in use
//	conn_struct_bytes      size of the per-connection struct
//	histograms             {connect, subscribe, latency, group_latency}: HDR V2 compressed, base64
//	                       (hdrhistogram.Decode), what merge adds
//	shard                  sharded runs: {run_id, index, count, role, publishes, config_digest, start_at,
//	                       late_ms, window_late_ms, clock_ref, clock_offset_us, clock_rtt_us,
//	                       max_clock_offset_us, conns_lo, conns_hi}
//	merged                 merged reports: {run_id, config_digest, shards, files, max_clock_offset_us,
//	                       clock_bound_us, clock_flagged, late}
//	slo                    {max_p99_us, min_delivery, breaches: [...], ok}
//	exit_code, verdict     the exit status and the same verdict the report's SLO line prints:
//	                       "OK (exit 0)", "BREACHED (exit 3): ...", "NOT JUDGED (exit 1): the run failed: ..."
//
// # Sharded runs: many generator hosts
//
// -shard i/N runs shard i of a run spread over N hosts (README "Many
// generator hosts"): it holds connections [i·conns/N, (i+1)·conns/N) with
// global channel numbering, and -ramp is the run's rate (each shard ramps
// at ramp/N). Every shard needs the same -start-at (RFC 3339: the ramp
// begins then), -ramp-timeout (the measured window begins at start-at +
// ramp-timeout on every shard, the first publication 1 s later), -redis
// and -run-id (default run-<start-at>; -seed defaults to a hash of it).
// Exactly one process publishes: shard 0, or, with -role conns on every
// shard, one -role publisher process. It posts its count to Redis
// (<prefix>loadtest:{run}:published); the other shards wait for it (at most
// 60 s after their window) to know what each connection was owed. Payloads
// carry wall-clock Unix nanoseconds; each shard measures its clock's offset
// from Redis TIME at start. A shard that starts late says so (shard.late_ms,
// shard.window_late_ms). Each shard stores its report in Redis
// (<prefix>loadtest:{run}:report:<i>, 7 days) as well as in -json.
//
// loadtest merge [-json out] a.json b.json ... (or -redis URL -run-id ID)
// checks that the reports are one run (run id, seed, configuration digest,
// N), every shard once and one publisher, then adds the encoded HDR
// histograms and the counts exactly, judges the SLOs recorded in the
// reports like a single-host run, prints the same table and exits with the
// same codes (2 when it refuses). The merged report flags a run whose
// largest clock offset from the publisher exceeds -max-clock-offset.
//
// # Process model and memory
//
// With -workers N > 1 the command re-executes itself N times (worker i
// holds connections [i·conns/N, (i+1)·conns/N)), so a run can exceed one
// process's RLIMIT_NOFILE; the parent publishes and merges the workers'
// histograms (hdrhistogram snapshots) and counters. Parent and workers
// speak JSON lines over the workers' stdin/stdout (see runChild); workers
// run in their own process group (^C reaches only the parent, which stops
// them) and die with the parent (PDEATHSIG).
//
// Each worker runs -loops event loops (default GOMAXPROCS), each an epoll
// instance on a locked OS thread with non-blocking sockets it opened
// itself: no goroutine and no buffer per connection. A connection costs a
// 56-byte struct plus, only while a frame is split across reads, its tail.
// Sockets are bound to -src addresses with IP_BIND_ADDRESS_NO_PORT, so the
// kernel picks the port at connect(2) and only the 4-tuple must be unique.
//
// # What it must never do
//
// Be imported by server packages; dial a target that was not named; run
// unbounded in time or count.
package main
