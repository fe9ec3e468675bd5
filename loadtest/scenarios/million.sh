#!/usr/bin/env bash
# million.sh — how many concurrent pushd.v1 WebSocket connections this one
# machine holds (goal 1,000,000), and how long a broadcast to all of them
# takes. Loopback only; everything started is stopped on exit.
#
# It starts redis-server, ceil(TARGET/PER_NODE) pushd processes (one port
# each, joined through Redis: each process is under the ~20,000-file
# RLIMIT_NOFILE) and runs loadtest with ceil(TARGET/PER_WORKER) worker
# processes from SRC source addresses. Every connection subscribes the one
# group channel lt:g:0 (-no-personal, -groups 1); the ramp runs at RAMP/s
# until TARGET is reached, or ends early when MemAvailable < MIN_FREE_MIB
# (the machine is shared: a million sockets must not OOM it) or after
# RAMP_TIMEOUT. Then BROADCASTS publications go to lt:g:0 through Redis
# (PUBLISH pushd:{lt:g:0}), one every 15 s (a broadcast to a million
# sockets keeps two cores busy for seconds); their delivery latency is the
# time-to-all.
#
# Reported (also in $OUT/summary.txt): connections reached, what stopped
# the ramp (memory / file limits / ports / pushd refusing / timeouts /
# time), the broadcast time-to-all (p50/p99/max over all deliveries), and
# bytes per connection: pushd user space (RSS delta / conns), loadtest user
# space (its report), kernel slab (Slab delta / conns, both socket ends).
#
#   loadtest/scenarios/million.sh                   # the full run
#   TARGET=60000 loadtest/scenarios/million.sh      # a quick rehearsal
#
# Settings (environment): TARGET=1000000 PER_NODE=19500 PER_WORKER=19500
# RAMP=2500 SRC=127.0.1.0/24 MIN_FREE_MIB=3072 BROADCASTS=3
# RAMP_TIMEOUT=900s TIMEOUT=1500 (seconds, whole run) OUT=<dir> WSS=0 (1: every
# connection over wss, TLS on pushd's event loops, trusting a test certificate).
# PERF=1: profile the broadcasts. A system-wide `perf record -a -g -F 499`
# ($OUT/perf.data) starts at PERF_START_PCT=90 % of the ramp (at a million
# sockets perf takes tens of seconds to start) and is analysed from the end
# of the ramp to the end of the drain ($OUT/perf-window.txt), and
# PPROF_SECS of Go CPU profile of pushd node 1, run with -admin-pprof
# ($OUT/pushd1.cpu.pprof); the CPU split by process (this run's, by pid)
# and kernel/user space goes into summary.txt, the top symbols per process
# into $OUT/perf-top.txt.
# After the broadcasts, every run measures the Redis PUBLISH ceiling with
# `redis-benchmark -P 16` on the run's redis-server (BENCH_N=200000
# requests) and reports it beside the Redis→node forwarding of the run.
set -euo pipefail

# NETNS=1: run everything in a network namespace of its own whose TCP
# established-connection hash has EHASH buckets (default 2^21). The host's
# table is sized at boot (262,144 buckets here): two million loopback
# sockets make chains of about 8, walked for every segment. The namespace
# is created with net.ipv4.tcp_child_ehash_entries set, which is put back
# at once; the loopback device comes up and the host's TCP settings that
# matter here are copied in.
if [ "${NETNS:-0}" = 1 ] && [ -z "${MILLION_NETNS:-}" ]; then
	ns=pushd-million-$$
	child=/proc/sys/net/ipv4/tcp_child_ehash_entries
	old=$(cat "$child")
	settings=()
	for k in net/ipv4/ip_local_port_range net/core/somaxconn net/ipv4/tcp_max_syn_backlog net/ipv4/tcp_rmem \
		net/ipv4/tcp_wmem net/ipv4/tcp_tw_reuse net/ipv4/tcp_fin_timeout net/ipv4/tcp_max_tw_buckets; do
		[ -r "/proc/sys/$k" ] && settings+=("$k=$(tr '\t' ' ' <"/proc/sys/$k")")
	done
	echo "${EHASH:-2097152}" >"$child"
	ip netns add "$ns" || { echo "$old" >"$child"; exit 1; }
	echo "$old" >"$child"
	trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
	ip netns exec "$ns" ip link set lo up
	for kv in "${settings[@]}"; do
		ip netns exec "$ns" sh -c "echo '${kv#*=}' >/proc/sys/${kv%%=*}" 2>/dev/null || true
	done
	set +e
	ip netns exec "$ns" env MILLION_NETNS="$ns" bash "$0" "$@"
	exit $?
fi

TARGET=${TARGET:-1000000}
PER_NODE=${PER_NODE:-19500}
PER_WORKER=${PER_WORKER:-19500}
RAMP=${RAMP:-2500}
SRC=${SRC:-127.0.1.0/24}
MIN_FREE_MIB=${MIN_FREE_MIB:-3072}
BROADCASTS=${BROADCASTS:-3}
RAMP_TIMEOUT=${RAMP_TIMEOUT:-900s}
TIMEOUT=${TIMEOUT:-1500}
OUT=${OUT:-$(mktemp -d /tmp/pushd-million.XXXXXX)}
WSS=${WSS:-0}
PERF=${PERF:-0}
# Seconds of pushd's Go CPU profile from the end of the ramp: the broadcast
# window and the last broadcast at about 80,000 deliveries/s.
PPROF_SECS=${PPROF_SECS:-$((BROADCASTS * 15 - 14 + TARGET / 80000))}
PERF_START_PCT=${PERF_START_PCT:-90}
BENCH_N=${BENCH_N:-200000}
# GOMAXPROCS of each pushd process and of loadtest and its workers (empty:
# Go's default, the number of cores). Extra arguments go to loadtest
# (e.g. -loops 1).
NODE_PROCS=${NODE_PROCS:-}
REDIS_NICE=${REDIS_NICE:--10}
LT_PROCS=${LT_PROCS:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NODES=$(((TARGET + PER_NODE - 1) / PER_NODE))
WORKERS=$(((TARGET + PER_WORKER - 1) / PER_WORKER))
mkdir -p "$OUT"

pids=()
sampler=""
profiler=""
cleanup() {
	local p
	[ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
	[ -n "$profiler" ] && kill -INT "$profiler" 2>/dev/null || true
	[ -n "$profiler" ] && pkill -INT -P "$profiler" 2>/dev/null || true
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	sleep 2
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# WSS=1: every node also serves wss (-tls-listen, on the lean loops) with a
# self-signed P-256 certificate made here, and loadtest loads the wss
# listeners, trusting that certificate (-ca).
wss_setup() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
		-keyout "$OUT/wss-key.pem" -out "$OUT/wss-cert.pem" 2>/dev/null
}

freeport() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
meminfo() { awk -v k="$1:" '$1==k {print $2}' /proc/meminfo; }

echo "million: target $TARGET, $NODES pushd processes, $WORKERS loadtest workers, out $OUT" >&2
(cd "$ROOT" && go build -o "$OUT/pushd" ./cmd/pushd && go build -o "$OUT/loadtest" ./loadtest)
lt_tls=()
if [ "$WSS" = 1 ]; then
	wss_setup
	lt_tls=(-ca "$OUT/wss-cert.pem")
fi

SLAB0=$(meminfo Slab)
AVAIL0=$(meminfo MemAvailable)

RPORT=$(freeport)
# Redis runs at nice REDIS_NICE (default -10, when allowed): one thread
# serving every node, among hundreds of runnable threads during the ramp it
# got so little CPU that the nodes' canaries timed out (3 s), the nodes
# went unready and answered 503 to every new connection (a 1M attempt
# stuck at 173,000 open with 2.1M 503s).
nice_args=()
if nice -n "$REDIS_NICE" true 2>/dev/null; then
	nice_args=(nice -n "$REDIS_NICE")
fi
"${nice_args[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" \
	--maxclients 10000 >"$OUT/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

targets=()
admins=()
pushd_pids=()
for i in $(seq 1 "$NODES"); do
	wp=$(freeport)
	ap=$(freeport)
	tls_args=()
	if [ "$WSS" = 1 ]; then
		tp=$(freeport)
		tls_args=(-poller lean -tls-listen "127.0.0.1:$tp" -tls-cert "$OUT/wss-cert.pem" -tls-key "$OUT/wss-key.pem")
	fi
	# Pings every 10 minutes: a million connections pinged every 25 s is
	# 40,000 pings/s on two cores, and the run is about holding sockets.
	pprof_args=()
	if [ "$PERF" = 1 ] && [ "$i" = 1 ]; then
		pprof_args=(-admin-pprof)
	fi
	GOMAXPROCS=$NODE_PROCS "$OUT/pushd" -listen "127.0.0.1:$wp" -admin-listen "127.0.0.1:$ap" -log-format json -log-level warn "${tls_args[@]}" "${pprof_args[@]}" \
		-redis "redis://127.0.0.1:$RPORT/0" -ping-interval 10m -handshake-timeout 30s >"$OUT/pushd$i.log" 2>&1 &
	pids+=($!)
	pushd_pids+=($!)
	if [ "$WSS" = 1 ]; then
		targets+=("wss://127.0.0.1:$tp/ws")
	else
		targets+=("ws://127.0.0.1:$wp/ws")
	fi
	admins+=("127.0.0.1:$ap")
done
for a in "${admins[@]}"; do
	for _ in $(seq 200); do curl -fsS "http://$a/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "redis 127.0.0.1:$RPORT and $NODES pushd nodes ready" >&2

# Sampler: every 5 s, TCP sockets in use, pushd and loadtest RSS, slab.
(
	set +e
	printf 't\testab\tpushd_rss_kb\tloadtest_rss_kb\tslab_kb\tavail_kb\n'
	while :; do
		# TCP sockets in use (both ends of each loopback connection): cheap
		# to read, unlike ss over two million sockets.
		estab=$(awk '$1=="TCP:" {print $3}' /proc/net/sockstat)
		prss=0
		for p in "${pushd_pids[@]}"; do
			r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
			prss=$((prss + ${r:-0}))
		done
		lrss=$(ps -C loadtest -o rss= 2>/dev/null | awk '{s+=$1} END {print s+0}')
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date +%s)" "$estab" "$prss" "$lrss" "$(meminfo Slab)" "$(meminfo MemAvailable)"
		sleep 5
	done
) >"$OUT/samples.tsv" &
sampler=$!
sleep 1 # the first sample (the baseline) is taken before any connection

# PERF=1: from the end of the ramp (loadtest's "ramp ... done" line) to
# the end of the drain (its "done" line, 1 s after the last delivery),
# perf records the whole host; its samples are attributed by process id
# to this run's redis-server, pushd and loadtest processes (pids.txt).
# pushd node 1 gives a Go CPU profile of the broadcast window.
descendants() {
	ps -e -o pid=,ppid=,comm= | awk -v root=$$ '{p[$1]=$2; c[$1]=$3} END {for (x in p) {y=x; while (y in p && y!=root && y>1) y=p[y]; if (y==root) print x, c[x]}}'
}
if [ "$PERF" = 1 ]; then
	: >"$OUT/loadtest.out"
	(
		set +e
		# perf needs tens of seconds to start at a million sockets (it reads
		# the maps of every thread), so it starts when the ramp is at
		# PERF_START_PCT and its samples are cut to the window by time
		# (CLOCK_MONOTONIC, as /proc/uptime reads it).
		mono() { awk '{print $1}' /proc/uptime; }
		until grep -qE '\] ramp +open .* done$' "$OUT/loadtest.out" 2>/dev/null; do
			open=$(tail -n 1 "$OUT/loadtest.out" 2>/dev/null | grep -oE 'open [0-9]+/' | tr -dc 0-9)
			[ -n "$open" ] && [ "$open" -ge $((TARGET * PERF_START_PCT / 100)) ] && break
			sleep 0.2
		done
		perf record -a -g -F 499 -k CLOCK_MONOTONIC -o "$OUT/perf.data" >"$OUT/perf-record.log" 2>&1 &
		perfpid=$!
		until grep -qE '\] ramp +open .* done$' "$OUT/loadtest.out" 2>/dev/null; do sleep 0.1; done
		mono >"$OUT/perf-window.txt"
		curl -fsS -o "$OUT/pushd1.cpu.pprof" "http://${admins[0]}/debug/pprof/profile?seconds=$PPROF_SECS" 2>"$OUT/pprof.err" &
		descendants >"$OUT/pids.txt"
		for _ in $(seq $(((BROADCASTS * 15 + 300) * 10))); do
			grep -qE '\] done +open' "$OUT/loadtest.out" 2>/dev/null && break
			sleep 0.1
		done
		mono >>"$OUT/perf-window.txt"
		kill -INT "$perfpid"
		wait
	) &
	profiler=$!
fi

set +e
GOMAXPROCS=$LT_PROCS timeout --signal=INT --kill-after=60 "$TIMEOUT" "$OUT/loadtest" \
	-target "$(IFS=,; echo "${targets[*]}")" -redis "redis://127.0.0.1:$RPORT/0" \
	-conns "$TARGET" -workers "$WORKERS" -src "$SRC" -ramp "$RAMP" -max-handshakes 2000 \
	-handshake-timeout 30s -no-personal -groups 1 -rate 0 -group-rate 0.0667 -duration "$((BROADCASTS * 15 - 14))s" \
	-min-free-mib "$MIN_FREE_MIB" -ramp-timeout "$RAMP_TIMEOUT" -drain 60s -json "$OUT/report.json" "${lt_tls[@]}" "$@" \
	2>&1 | tee "$OUT/loadtest.out"
code=${PIPESTATUS[0]}
set -e
kill "$sampler" 2>/dev/null || true
sampler=""

# The Redis PUBLISH ceiling on this run's redis-server, the nodes still
# subscribed (a channel nobody subscribes: Redis's own per-command cost).
bench_out=$(timeout 120 redis-benchmark -p "$RPORT" -n "$BENCH_N" -P 16 -q PUBLISH bench:ceiling x 2>/dev/null | tr '\r' '\n' | grep -E 'requests per second' | tail -1 || true)
echo "${bench_out:-redis-benchmark failed}" >"$OUT/redis-benchmark.txt"
redis-cli -p "$RPORT" info stats >"$OUT/redis-stats.txt" 2>/dev/null || true
# Each node's fan-out time (encode once, then queue and write to every
# local subscriber: the lean backend writes inline).
for a in "${admins[@]}"; do
	curl -fsS "http://$a/metrics" 2>/dev/null | awk -v a="$a" '$1=="pushd_fanout_duration_seconds_sum" {s=$2} $1=="pushd_fanout_duration_seconds_count" {c=$2} $1=="pushd_messages_delivered_total" {d=$2} END {print a "\t" s+0 "\t" c+0 "\t" d+0}'
done >"$OUT/fanout.tsv"

if [ -n "$profiler" ]; then
	# perf stops at the end of the drain.
	wait "$profiler" 2>/dev/null || true
	profiler=""
	if [ -s "$OUT/perf.data" ]; then
		window=$(paste -sd, "$OUT/perf-window.txt")
		perf script -i "$OUT/perf.data" --time "$window" -F comm,pid,tid,time,ip,sym,dso -G 2>/dev/null | gzip >"$OUT/perf-samples.txt.gz" || true
		perf report -i "$OUT/perf.data" --time "$window" --children --sort comm,sym --stdio -g none 2>/dev/null | head -400 >"$OUT/perf-children.txt" || true
	fi
fi

/usr/bin/python3 - "$OUT" "$SLAB0" "$AVAIL0" "$NODES" "$WORKERS" "$TARGET" "$code" <<'PY' | tee "$OUT/summary.txt"
import csv, json, os, re, sys
out, slab0, avail0, nodes, workers, target, code = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
try:
    r = json.load(open(out + "/report.json"))
except Exception as e:
    print("no report (%s); loadtest exit code %d" % (e, code)); sys.exit(0)
rows = list(csv.DictReader(open(out + "/samples.tsv"), delimiter="\t"))
peak = max(rows, key=lambda x: int(x["estab"])) if rows else None
first = rows[0] if rows else None
conns = r["conns_peak"]
print("million scenario: target %d, %d pushd processes, %d loadtest workers, exit code %d" % (target, nodes, workers, code))
print("connections reached: peak %d open (held in the broadcast window: %d, failed %d, never started %d), ramp %.0f s" % (conns, r["conns_held"], r["conns_failed"], r["conns_not_started"], r["ramp_seconds"]))
# What stopped it.
errs = r.get("errors") or {}
why = []
if r.get("ramp_stopped_by"):
    why.append("ramp ended early: " + r["ramp_stopped_by"])
names = {"EMFILE": "per-process file limit (RLIMIT_NOFILE)", "ENFILE": "host file limit (fs.file-max)",
         "EADDRNOTAVAIL": "ephemeral ports (add -src addresses)", "ENOBUFS": "kernel memory", "ENOMEM": "kernel memory",
         "handshake_status_503": "pushd refused (its max-conns / RLIMIT_NOFILE)", "ECONNREFUSED": "listen backlog / server gone",
         "timeout_connect": "connect timeouts (CPU or accept backlog)", "timeout_handshake": "upgrade timeouts (server CPU)",
         "timeout_subscribe": "subscribe timeouts (server CPU)"}
for k, v in sorted(errs.items(), key=lambda kv: -kv[1]):
    why.append("%s ×%d%s" % (k, v, (" → " + names[k]) if k in names else ""))
if conns >= target:
    print("stopped by: nothing, the target was reached" + ((" (errors on the way, retried: " + "; ".join(why) + ")") if why else ""))
else:
    print("stopped by: " + ("; ".join(why) if why else "unknown (see loadtest.out)"))
g = r["group_latency_us"]
print("broadcast: %d publications to everyone; deliveries %d of %d expected (ratio %.6f); time-to-all max %.1f ms, p99 %.1f ms, p50 %.1f ms" % (
    r["published_group"], r["delivered"], r["expected"], r["delivery_ratio"], g["max"] / 1e3, g["p99"] / 1e3, g["p50"] / 1e3))
if peak and int(peak["estab"]) > 0:
    est = int(peak["estab"]) // 2  # both ends of each loopback connection are listed
    print("at the peak sample: %d connections (/proc/net/sockstat: %d TCP sockets in use)" % (est, int(peak["estab"])))
    print("bytes per connection: pushd user space %.0f B (RSS %d MiB total), loadtest user space %.0f B (report; RSS %d MiB total), kernel slab %.0f B (Slab +%d MiB, both ends), MemAvailable fell %d MiB" % (
        (int(peak["pushd_rss_kb"]) - int(first["pushd_rss_kb"])) * 1024 / est, int(peak["pushd_rss_kb"]) // 1024,
        r["user_bytes_per_conn"], int(peak["loadtest_rss_kb"]) // 1024,
        (int(peak["slab_kb"]) - slab0) * 1024 / est, (int(peak["slab_kb"]) - slab0) // 1024,
        (avail0 - int(peak["avail_kb"])) // 1024))
# Delivery rate: a broadcast reaches every measured connection within its
# time-to-all; the slowest broadcast's rate is measured conns / max.
meas = r["conns_held"]
if g["max"] > 0:
    print("delivery rate: %d connections in time-to-all max %.3f s = %.0f deliveries/s on the host (%.0f per pushd node, %d connections each)" % (
        meas, g["max"] / 1e6, meas / (g["max"] / 1e6), meas / (g["max"] / 1e6) / nodes, meas // nodes))
try:
    fo = [l.split("\t") for l in open(out + "/fanout.tsv").read().split("\n") if l.strip()]
    fs, fc = sum(float(x[1]) for x in fo), sum(float(x[2]) for x in fo)
    if fc > 0:
        print("pushd fan-out (pushd_fanout_duration_seconds: encode, queue and write to every local subscriber; all nodes): %d batches, mean %.1f ms each" % (fc, fs / fc * 1e3))
except Exception:
    pass
bench = open(out + "/redis-benchmark.txt").read().strip() if os.path.exists(out + "/redis-benchmark.txt") else "not run"
print("Redis→node forwarding: each broadcast is 1 PUBLISH that Redis forwards to %d node subscribers (%d messages forwarded per broadcast, %d in the run); Redis PUBLISH ceiling in this run (redis-benchmark -P 16, channel without subscribers): %s" % (
    nodes, nodes, nodes * r["published_group"], bench))
# PERF=1: CPU split of the profiled window by process (this run's
# processes by pid, pids.txt) and kernel/user space, from perf script.
import gzip
pf = out + "/perf-samples.txt.gz"
if os.path.exists(pf):
    ours = {}
    for line in open(out + "/pids.txt"):
        f = line.split()
        if len(f) >= 2 and f[1] in ("pushd", "loadtest", "redis-server"):
            ours[f[0]] = f[1]
    split, syms, total = {}, {}, 0
    t0 = t1 = None
    bucket = {}  # 100 ms interval → {class: samples} of this run's processes
    for line in gzip.open(pf, "rt", errors="replace"):
        m = re.match(r"\s*(.+?)\s+(\d+)/(\d+)\s+([\d.]+):\s+([0-9a-f]+)\s+(.*)\s+\((.*)\)\s*$", line)
        if not m:
            continue
        pid, t, sym, dso = m.group(2), float(m.group(4)), m.group(6).strip(), m.group(7)
        total += 1
        kern = dso.startswith("[kernel") or dso == "[unknown]" and int(m.group(5), 16) >= 0xffff800000000000
        t0 = t if t0 is None else t0
        t1 = t
        if pid == "0":
            k = "idle"
        elif pid in ours:
            k = ours[pid] + (" kernel" if kern else " user")
            syms[(k, sym)] = syms.get((k, sym), 0) + 1
            b = bucket.setdefault(int(t * 10), {})
            b[k] = b.get(k, 0) + 1
        else:
            k = "other processes"
        split[k] = split.get(k, 0) + 1
    busy = total - split.get("idle", 0)
    run = sum(v for k, v in split.items() if k not in ("idle", "other processes"))
    print("CPU from the end of the ramp to the end of the drain (perf record -a -F 499, %d samples on both cores):" % total)
    print("  %-20s %8s %8s %8s" % ("", "all", "busy", "this run"))
    for k in ["pushd kernel", "pushd user", "loadtest kernel", "loadtest user", "redis-server kernel", "redis-server user", "other processes", "idle"]:
        v = split.get(k, 0)
        print("  %-20s %7.2f%% %s %s" % (k, v * 100 / total,
            ("%7.2f%%" % (v * 100 / busy)) if k != "idle" and busy else "        ",
            ("%7.2f%%" % (v * 100 / run)) if k not in ("idle", "other processes") and run else ""))
    # CPU per delivery: a broadcast shows as a run of 100 ms intervals in
    # which this run's processes used at least a quarter of the host (gaps
    # under 1 s joined); runs cut by the end of the recording, or by its
    # start when perf began late, were not profiled whole and are left out.
    cap = (os.cpu_count() or 1) * 499 / 10
    busyb = sorted(k for k, v in bucket.items() if sum(v.values()) >= cap / 4)
    runs = []
    for k in busyb:
        if runs and k - runs[-1][1] <= 10:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    # perf-window.txt: the window's start; when perf was already recording
    # then, a run starting with the window is whole.
    try:
        w0 = float(open(out + "/perf-window.txt").read().split()[0])
    except Exception:
        w0 = None
    lead = 0 if w0 is not None and t0 is not None and t0 - w0 < 0.2 else 1
    whole = [r for r in runs if t0 is not None and r[0] >= int((t0 + lead) * 10) and r[1] / 10 < t1 - 0.5]
    per_bc = r["delivered"] / max(r["published_group"], 1)
    if whole:
        cpu = {}
        for a, b in whole:
            for k in range(a - 2, b + 4):
                for c, v in bucket.get(k, {}).items():
                    cpu[c] = cpu.get(c, 0) + v
        n = per_bc * len(whole)
        us = lambda v: v / 499 / n * 1e6
        tot = sum(cpu.values())
        print("CPU per delivery in the %d broadcast(s) profiled whole (busy for %s s): %.1f µs (%s); 1,000,000 deliveries at this cost are %.1f CPU-s, %.1f s on %d cores" % (
            len(whole), "/".join("%.1f" % ((b - a + 1) / 10) for a, b in whole), us(tot),
            ", ".join("%s %.1f" % (c, us(cpu.get(c, 0))) for c in ["pushd kernel", "pushd user", "loadtest kernel", "loadtest user", "redis-server kernel", "redis-server user"] if cpu.get(c)),
            us(tot), us(tot) / (os.cpu_count() or 1), os.cpu_count() or 1))
    else:
        print("CPU per delivery: no broadcast profiled whole (runs of busy intervals: %d)" % len(runs))
    with open(out + "/perf-top.txt", "w") as f:
        for k in ["pushd kernel", "pushd user", "loadtest kernel", "loadtest user", "redis-server kernel", "redis-server user"]:
            cs = sorted(((n, s) for (kk, s), n in syms.items() if kk == k), reverse=True)
            print("%s: %d samples (%.1f%% of this run's); top symbols, share of this run's samples" % (k, split.get(k, 0), split.get(k, 0) * 100 / max(run, 1)), file=f)
            for n, s in cs[:25]:
                print("  %6.2f%%  %s" % (n * 100 / max(run, 1), s), file=f)
PY
echo "files: $OUT/report.json $OUT/samples.tsv $OUT/summary.txt" >&2
exit "$code"
