#!/usr/bin/env bash
# scripts/test.sh: the one test command for pushd (README and CI run this).
#
# On a fresh Debian machine with only Go and Node 20 it installs what is
# missing (Debian peers, redis-server and prometheus via apt, the npm peers via npm ci),
# then runs: gofmt check, go vet, the race-enabled test suite (conformance
# against independent WebSocket peers included) on the lean event-loop
# backend and, for every package that drives a poller, again on netpoll
# (there without the tests of the layers above the poller),
# the allocation tests without -race, a benchmark smoke run, and the
# deploy/ module's tests (Helm chart, alert rules, dashboard, Prometheus).
#
# The repository holds several Go modules: the server (the root), bench,
# bench/peers and deploy (their own modules so the server module requires
# only what pushd and its tests use). Every module must be tidy
# (go mod tidy -diff); the run fails on the first one that is not.
#
# Usage: scripts/test.sh            install missing tools, then run everything
#        scripts/test.sh install    only install missing tools
#        scripts/test.sh tidy       only check that every module is tidy
#
# Never installs nodejs/npm through apt: that would replace the NodeSource
# Node 20 with Debian's Node 18 (see /work/shared/CONFORMANCE.md).
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n==> [%ds] %s\n' "$SECONDS" "$*"; }
die() { printf 'scripts/test.sh: %s\n' "$*" >&2; exit 1; }

install_missing() {
	step "check toolchain"
	command -v go >/dev/null || die "go is not installed (Go $(sed -n 's/^go //p' go.mod) is required)"
	command -v node >/dev/null || die "node is not installed (Node >= 20.18.1 is required; never apt-get install nodejs)"
	command -v npm >/dev/null || die "npm is not installed (it ships with Node 20)"
	go version
	echo "node $(node --version), npm $(npm --version 2>/dev/null)"

	local missing=()
	/usr/bin/python3 -c 'import websockets' 2>/dev/null || missing+=(python3-websockets)
	[ -x /usr/bin/chromium ] || missing+=(chromium)
	command -v redis-server >/dev/null || missing+=(redis-server)
	command -v openssl >/dev/null || missing+=(openssl) # a TLS client we did not write (poller: every TLS 1.3 suite)
	command -v zbarimg >/dev/null || missing+=(zbar-tools) # decodes the QR demo's codes (cmd/pushd)
	command -v prometheus >/dev/null || missing+=(prometheus) # deploy/: alert rules and dashboard against a real Prometheus
	command -v prometheus-redis-exporter >/dev/null || missing+=(prometheus-redis-exporter)
	if [ "${#missing[@]}" -gt 0 ]; then
		local sudo=()
		[ "$(id -u)" -eq 0 ] || sudo=(sudo)
		step "apt-get install ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		"${sudo[@]}" apt-get update
		"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
	else
		step "Debian peers present (python3-websockets, chromium, redis-server, zbar-tools, prometheus, prometheus-redis-exporter)"
	fi

	step "npm ci (conformance/node: ws, undici)"
	(cd conformance/node && npm ci --no-audit --no-fund --loglevel=error)
	step "npm ci (clients/js: ws for the JS client's Node tests)"
	(cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
}

# go_modules prints the directory of every Go module in the repository,
# the root first.
go_modules() {
	find . -name node_modules -prune -o -name go.mod -print | sed 's#/go.mod$##' | sort
}

check_tidy() {
	local m
	for m in $(go_modules); do
		step "go mod tidy -diff ($m)"
		(cd "$m" && go mod tidy -diff) || die "module $m is not tidy: run (cd $m && go mod tidy)"
	done
	# The server module must not pull bench's plotting libraries.
	if grep -q gonum go.mod; then
		die "go.mod mentions gonum: bench-only dependencies belong in bench/go.mod"
	fi
}

run_tests() {
	check_tidy

	step "gofmt check"
	local unformatted
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		# Tracked and new files; a tracked file deleted in the work tree is skipped.
		unformatted=$(git ls-files -z --cached --others --exclude-standard -- '*.go' |
			while IFS= read -r -d '' f; do if [ -f "$f" ]; then printf '%s\0' "$f"; fi; done |
			xargs -0 -r gofmt -l)
	else
		unformatted=$(find . -name node_modules -prune -o -name '*.go' -print0 | xargs -0 -r gofmt -l)
	fi
	if [ -n "$unformatted" ]; then
		printf 'files need gofmt:\n%s\n' "$unformatted" >&2
		exit 1
	fi

	local m
	for m in $(go_modules); do
		step "go vet ./... ($m)"
		(cd "$m" && go vet ./...)
	done

	# pushd has two event-loop backends (poller/doc.go). The whole suite
	# runs on lean; everything that drives a poller (its own tests, the
	# conformance peers, the real binary's end-to-end and fan-out tests,
	# the JS client, bench's smoke tests) runs again on netpoll. The
	# binary and the poller tests pick the backend from PUSHD_POLLER.
	# On netpoll the real binary's tests of the layers above the poller
	# are skipped (netpoll_skip): the Redis broker's faults, presence, the
	# server API, the admin lock-down, the deploy files and the demo page
	# exercise the same code on either backend, and they are a third of
	# the suite's time. Transport, limits, security, slow consumers, SSE,
	# drain, publish and metrics tests run on both. Tests that pin
	# -poller lean (every wss test: wss always runs on the lean loops) are
	# skipped there too, since they would only repeat the lean pass.
	step "PUSHD_POLLER=lean go test -race -shuffle=on -timeout 15m ./... (server module, then bench)"
	PUSHD_POLLER=lean go test -race -shuffle=on -timeout 15m ./...
	(cd bench && PUSHD_POLLER=lean go test -race -shuffle=on -timeout 15m ./...)

	step "PUSHD_POLLER=netpoll go test -race -shuffle=on (every package that drives a poller; -skip the layers above it)"
	netpoll_skip='^(TestRedis|TestPresenceStorm$|TestPresenceTwoNodes$|TestServerAPI|TestAdmin|TestMetricsRedisBroker$|TestDeploy|TestDemo|TestChromiumWSS$|TestWSSPeers$|TestSecurityWSS|TestSSEOverTLS$|TestSecuritySIGHUPReload$)'
	PUSHD_POLLER=netpoll go test -race -shuffle=on -timeout 15m -skip "$netpoll_skip" ./poller/... ./protocol/... ./conformance/... ./cmd/pushd/... ./clients/...
	# bench: only the harness tests that start pushd without pinning a
	# backend (the rest measure the reference server or parse reports).
	(cd bench && PUSHD_POLLER=netpoll go test -race -shuffle=on -timeout 15m -run '^(TestFanoutHarness|TestSlowConsumersHarness)$' ./...)

	# AllocsPerRun tests skip under -race (sync.Pool drops Puts there), so
	# the zero-allocation promises run once more without it. Every such
	# test has "Allocs" in its name.
	step "go test -count=1 -run Allocs ./... (no -race: zero-allocation promises)"
	go test -count=1 -run Allocs ./...

	step "benchmark smoke: go test -run='^\$' -bench=. -benchtime=1x ./... (server module, then bench)"
	go test -run='^$' -bench=. -benchtime=1x ./...
	(cd bench && go test -run='^$' -bench=. -benchtime=1x ./...)

	# deploy/ is a module of its own (Helm v4 and k8s.io/api stay out of the
	# server's go.mod): the Helm chart rendered and decoded strictly, the
	# alert rules under promtool, and a real Prometheus scraping a real pushd
	# and redis-server (deploy/doc.go).
	# No -race here: deploy holds no concurrent code of ours (render, decode,
	# scrape), and a race build of Helm and client-go costs minutes of CI.
	step "deploy module: go test ./... (Helm chart, alert rules, dashboard, image, live Prometheus)"
	(cd deploy && go test -shuffle=on -timeout 10m ./...)
}

start=$SECONDS
if [ "${1:-}" = tidy ]; then
	check_tidy
	step "every module is tidy ($((SECONDS - start)) s)"
	exit 0
fi
install_missing
if [ "${1:-}" = install ]; then
	step "install done in $((SECONDS - start)) s"
	exit 0
fi
run_tests
step "all checks passed in $((SECONDS - start)) s"
