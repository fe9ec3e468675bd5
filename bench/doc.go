// Command bench runs pushd's end-to-end benchmarks: each scenario builds
// cmd/pushd, starts it as its own process, drives it from a client process
// (bench re-executes itself with -client), reads the server's cost from
// /proc and its admin /stats, and compares it with a reference server
// measured the same way in the same run.
//
// bench is a Go module of its own (github.com/pushd/pushd/bench, which
// replaces github.com/pushd/pushd with ../), so its plotting and
// measurement libraries stay out of the server module; run it with
// go -C bench (or from bench/). It builds cmd/pushd inside the server
// module, so the binary it measures is the one pushd ships.
//
// Usage:
//
//	go -C bench run . -list
//	go -C bench run . [-json] [-servers pushd,ref] [-pushd-bin path] [-profile-dir dir] <scenario> [scenario flags]
//	go -C bench run . idle -plateaus 2000,19000 -sources 127.0.1.0/24
//	go -C bench run . slowwriters -slow 1000 -normal 50 -slow-only 10s -during 10s
//	go -C bench run . fanout -conns 19000 -repeat 5 -burst 16
//	go -C bench run . fanout -variants ';-chunk-size 4096;-workers 2'
//	go -C bench run . slowconsumers -slow 1000 -normal 1000 -total 209715200
//	go -C bench run . ingest -rates 50000,100000,200000,300000,0 -step 8s
//	go -C bench run . -peers all
//	go -C bench run . -peers pushd,nbio -plateaus 2000,19000 -lat-duration 10s
//
// Scenarios (see -list for their flags and invariants):
//
//	idle           user-space bytes per idle upgraded connection (RSS slope) and
//	               goroutines at each plateau; pushd must stay ≤ 4 KiB/conn and flat
//	idlesse        the same for SSE: idle /ws?ch=idle WebSockets, then idle
//	               /sse?ch=idle streams (2,000 → 10,000), each against a fresh
//	               pushd.v1 process; an SSE stream must cost ≤ a WebSocket
//	               + 512 B and no goroutine
//	slowwriters    1,000 clients dribbling frames one byte per 10 ms: pushd CPU
//	               < 5% of a core with the slow writers alone, and no stall of
//	               50 normal echo clients with both (baseline, slow-only and
//	               combined windows, every figure printed)
//	fanout         19,000 subscribers of one channel: deliveries/s of one
//	               publication and of 16-message bursts, as a ratio to a raw
//	               write(2) loop over 19,000 sockets measured in the same run
//	slowconsumers  1,000 never-reading + 1,000 reading clients, 200 MB
//	               published: heap bound, complete in-order delivery, and
//	               the disconnect/drop/conflate outcomes with their counters
//	ingest         Redis ingest under a publish flood: 1,000 clients on personal
//	               channels, plain PUBLISH at increasing rates (pipelined, 4
//	               connections); per rate delivered, counted drops, pub/sub
//	               reconnects, quiet-channel latency, beside a plain go-redis
//	               subscriber's receive rate and a raw write(2) loop over as
//	               many sockets, in the same run
//	peers          (-peers all|<list> is short for "peers -only ...") pushd
//	               side by side with gorilla/websocket, gobwas/ws, nbio,
//	               centrifuge and npm ws, one after another in one run:
//	               bytes per idle subscriber, goroutines and threads,
//	               broadcast deliveries/s to 19,000 subscribers ÷ the raw
//	               write(2) loop, publish→receive p50/p99 on personal
//	               channels, CPU s per million deliveries, connections/s;
//	               writes bench/results/<date>.md and its PNG plots
//
// Every report ends with the host's load average at start and end; a run
// above 1.5 (on this 2-core host) is marked noisy, so its timings can be
// discounted.
//
// Every run is bounded (-timeout per scenario), stops by itself and kills the
// processes it started; a failed invariant makes the exit status non-zero.
// On a shared host, background load shows up as client shortfall (the
// slowwriters client cannot send at the specified rate; the report then
// projects the CPU to that rate) and as latency spikes for both servers.
// Running as root under `nice -n -10 go -C bench run . ...` gives the server
// and client processes (both servers alike) priority over that load.
// The peers live in bench/peers: one Go module of their own (so their
// libraries stay out of pushd's module graph) with a command per library,
// and ws-node with its package-lock.json, which the scenario installs with
// npm ci. Each is a small server that does pushd's job (GET /ws?ch= to
// subscribe, POST /publish?ch= on its admin listener to broadcast) and
// logs the same "listening" lines.
// The reference server ("ref") is a plain net/http + gorilla/websocket echo
// server with one goroutine per connection, started from this same binary
// with -refserver.
//
// Internal modes (started by bench itself, not meant for users):
//
//	bench -client idle|slow|echo|fanout|consumers ...   (idle -sse: SSE streams instead of upgrades)
//	                              the client side, JSON lines on stdin/stdout
//	bench -refserver ...          the reference echo server
//	bench -rawserver ...          the fan-out reference: accepts TCP sockets,
//	                              writes a frame to all with plain write(2)
//
// bench ships in no server binary; no server package imports it.
package main
