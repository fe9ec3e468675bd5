#!/usr/bin/env bash
# cluster.sh — a local pushd cluster under load, on loopback only.
#
# Starts redis-server, NODES pushd processes joined through it (-redis), and
# runs loadtest against all nodes with WORKERS worker processes and source
# addresses SRC, publishing through Redis. Everything it starts is stopped
# on exit (normal, error or ^C), and the whole run is bounded by TIMEOUT.
#
# Acceptance 1 (50,000 connections, 5,000 personal publishes/s for 60 s):
#   loadtest/scenarios/cluster.sh
# Smaller:
#   CONNS=3000 WORKERS=1 DURATION=5s RATE=500 loadtest/scenarios/cluster.sh
#
# Settings (environment): NODES=3 CONNS=50000 WORKERS=3 RATE=5000
# DURATION=60s RAMP=5000 SRC=127.0.1.0/24 OUT=<dir> TIMEOUT=900 (seconds) WSS=0
# (1: load the nodes' wss listeners instead, TLS plus a test CA);
# extra arguments are passed to loadtest (e.g. -max-p99 20ms -durable).
set -euo pipefail

NODES=${NODES:-3}
CONNS=${CONNS:-50000}
WORKERS=${WORKERS:-3}
RATE=${RATE:-5000}
DURATION=${DURATION:-60s}
RAMP=${RAMP:-5000}
SRC=${SRC:-127.0.1.0/24}
TIMEOUT=${TIMEOUT:-900}
OUT=${OUT:-$(mktemp -d /tmp/pushd-cluster.XXXXXX)}
PUSHD_ARGS=${PUSHD_ARGS:-}
WSS=${WSS:-0}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"

pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	sleep 1
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

echo "building pushd and loadtest into $OUT" >&2
(cd "$ROOT" && go build -o "$OUT/pushd" ./cmd/pushd && go build -o "$OUT/loadtest" ./loadtest)
lt_tls=()
if [ "$WSS" = 1 ]; then
	wss_setup
	lt_tls=(-ca "$OUT/wss-cert.pem")
fi

RPORT=$(freeport)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" \
	--maxclients 10000 >"$OUT/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

targets=()
admins=()
for i in $(seq 1 "$NODES"); do
	wp=$(freeport)
	ap=$(freeport)
	tls_args=()
	if [ "$WSS" = 1 ]; then
		tp=$(freeport)
		tls_args=(-poller lean -tls-listen "127.0.0.1:$tp" -tls-cert "$OUT/wss-cert.pem" -tls-key "$OUT/wss-key.pem")
	fi
	# shellcheck disable=SC2086
	"$OUT/pushd" -listen "127.0.0.1:$wp" -admin-listen "127.0.0.1:$ap" -log-format json -log-level warn "${tls_args[@]}" \
		-redis "redis://127.0.0.1:$RPORT/0" $PUSHD_ARGS >"$OUT/pushd$i.log" 2>&1 &
	pids+=($!)
	if [ "$WSS" = 1 ]; then
		targets+=("wss://127.0.0.1:$tp/ws")
	else
		targets+=("ws://127.0.0.1:$wp/ws")
	fi
	admins+=("127.0.0.1:$ap")
done
for a in "${admins[@]}"; do
	for _ in $(seq 100); do curl -fsS "http://$a/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "redis 127.0.0.1:$RPORT, pushd nodes: ${targets[*]}" >&2

set +e
timeout --signal=INT --kill-after=30 "$TIMEOUT" "$OUT/loadtest" \
	-target "$(IFS=,; echo "${targets[*]}")" -redis "redis://127.0.0.1:$RPORT/0" \
	-conns "$CONNS" -workers "$WORKERS" -src "$SRC" -ramp "$RAMP" -max-handshakes 2000 \
	-rate "$RATE" -duration "$DURATION" -json "$OUT/report.json" "${lt_tls[@]}" "$@"
code=$?
set -e

for i in $(seq 1 "$NODES"); do
	a=${admins[$((i - 1))]}
	echo "pushd node $i /stats: $(curl -fsS "http://$a/stats" 2>/dev/null | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print({k: d.get(k) for k in ("conns","subscriptions","rss_bytes","heap_inuse","delivered","slow_disconnects","dropped")})' 2>/dev/null)" >&2
done
echo "report: $OUT/report.json, exit code $code" >&2
exit "$code"
