// Command bench runs pushd's end-to-end benchmarks: each scenario builds
// cmd/pushd, starts it as its own process, drives it from a client process
// (bench re-executes itself with -client), reads the server's cost from
// /proc and its admin /stats, and compares it with a reference server
// measured the same way in the same run.
//
// Usage:
//
//	go run ./bench -list
//	go run ./bench [-json] [-ref=false] [-pushd-bin path] <scenario> [scenario flags]
//	go run ./bench idle -plateaus 2000,19000 -sources 127.0.1.0/24
//	go run ./bench slowwriters -slow 1000 -normal 50 -during 10s
//
// Scenarios (see -list for their flags and invariants):
//
//	idle         user-space bytes per idle upgraded connection (RSS slope) and
//	             goroutines at each plateau; pushd must stay ≤ 4 KiB/conn and flat
//	slowwriters  1,000 clients dribbling frames one byte per 10 ms: pushd CPU
//	             < 5% of a core and no stall of 50 normal echo clients
//
// Every run is bounded (-timeout per scenario), stops by itself and kills the
// processes it started; a failed invariant makes the exit status non-zero.
// On a shared host, background load shows up as client shortfall (the
// slowwriters client cannot send at the specified rate; the report then
// projects the CPU to that rate) and as latency spikes for both servers.
// Running as root under `nice -n -10 go run ./bench ...` gives the server
// and client processes (both servers alike) priority over that load.
// The reference server ("ref") is a plain net/http + gorilla/websocket echo
// server with one goroutine per connection, started from this same binary
// with -refserver.
//
// Internal modes (started by bench itself, not meant for users):
//
//	bench -client idle|slow ...   the client side, JSON lines on stdin/stdout
//	bench -refserver ...          the reference server
//
// bench ships in no server binary; no server package imports it.
package main
