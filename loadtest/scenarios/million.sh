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
set -euo pipefail

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
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NODES=$(((TARGET + PER_NODE - 1) / PER_NODE))
WORKERS=$(((TARGET + PER_WORKER - 1) / PER_WORKER))
mkdir -p "$OUT"

pids=()
sampler=""
cleanup() {
	local p
	[ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
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
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" \
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
	"$OUT/pushd" -listen "127.0.0.1:$wp" -admin-listen "127.0.0.1:$ap" -log-format json -log-level warn "${tls_args[@]}" \
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

set +e
timeout --signal=INT --kill-after=60 "$TIMEOUT" "$OUT/loadtest" \
	-target "$(IFS=,; echo "${targets[*]}")" -redis "redis://127.0.0.1:$RPORT/0" \
	-conns "$TARGET" -workers "$WORKERS" -src "$SRC" -ramp "$RAMP" -max-handshakes 2000 \
	-handshake-timeout 30s -no-personal -groups 1 -rate 0 -group-rate 0.0667 -duration "$((BROADCASTS * 15 - 14))s" \
	-min-free-mib "$MIN_FREE_MIB" -ramp-timeout "$RAMP_TIMEOUT" -drain 60s -json "$OUT/report.json" "${lt_tls[@]}" "$@" \
	2>&1 | tee "$OUT/loadtest.out"
code=${PIPESTATUS[0]}
set -e
kill "$sampler" 2>/dev/null || true
sampler=""

/usr/bin/python3 - "$OUT" "$SLAB0" "$AVAIL0" "$NODES" "$WORKERS" "$TARGET" "$code" <<'PY' | tee "$OUT/summary.txt"
import csv, json, sys
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
PY
echo "files: $OUT/report.json $OUT/samples.tsv $OUT/summary.txt" >&2
exit "$code"
