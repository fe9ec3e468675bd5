// Package poller is pushd's event loop: it accepts TCP connections,
// upgrades them to WebSocket and runs every connection's protocol state
// machine with no goroutine per connection, on one of two backends
// (Config.Backend, pushd -poller):
//
//   - lean (the default): pushd's own epoll loops through
//     golang.org/x/sys/unix (lean.go, lean_read.go);
//   - netpoll: github.com/cloudwego/netpoll's EventLoop, kept for
//     comparison and for what it does well (its mature buffers and
//     Flush-with-timeout).
//
// wss (Server.ListenTLS, Config.TLS) runs on lean only: see "wss" below.
//
// Both run the same Conn: the same handshake, codec.Parser state machine,
// timing wheel, close handshake, limits and write queue; every poller,
// conformance and end-to-end test runs on both (scripts/test.sh runs the
// suite with PUSHD_POLLER=lean and again with PUSHD_POLLER=netpoll).
//
// # Why lean is the default (measured, same runs, same binary)
//
//	go -C bench run . -servers pushd-netpoll,pushd-lean,ref idle
//	  user-space bytes per idle subscribed connection (RSS slope 2k→19k):
//	  netpoll 3,979-3,981 B, lean 484-494 B, gorilla ref 17,218 B;
//	  heap_inuse/conn 4,109 B vs 446 B; goroutines flat on both
//	  (16 and 15 from 2k to 19k connections).
//	go -C bench run . -servers pushd-lean,pushd-netpoll slowwriters
//	  1,000 clients dribbling one byte per 10 ms, slow writers alone,
//	  quiet host, five runs: lean 4.4-4.9 % of a core, netpoll
//	  4.4-5.3 % (gorilla, goroutine per connection: 70 %); of lean's,
//	  user space is 0.2-0.5 points, the rest is the kernel copying and
//	  freeing 100,000 one-byte segments a second.
//	go -C bench run . fanout -variants '-poller netpoll;-poller lean'
//	  19k subscribers vs a raw write() loop, two runs with the order
//	  swapped: single push lean 1.33/1.12× raw, netpoll 1.44/1.17×;
//	  16-message bursts lean 6.7/8.6×, netpoll 8.3/6.7× — whichever ran
//	  first won by ~25 %; the write path is the same code on both.
//
// netpoll's cost per idle connection is structure it keeps for every
// connection (its connection object, input and output LinkBuffers, two
// write barriers); lean keeps a 288-byte Conn (fd, state, timer link,
// queue head) in a descriptor-indexed table and nothing else while idle:
// the frame parser's state is kept only between reads that split a frame
// (Conn.readFrames), the write queue's array only once a frame had to wait,
// and the upgrade's scratch (Request, gobwas Upgrader) is pooled.
//
// # The lean loops
//
// Each loop owns an epoll set, a shared 64 KiB read buffer and an eventfd
// for shutdown. The loop goroutine parks in Go's own netpoller on the
// epoll descriptor (itself pollable) and drains it with zero-timeout
// epoll_wait calls, so no thread blocks per loop (lean.go, newLoop). Connections are registered once, edge-triggered for input
// and output (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET), on loop fd % loops;
// no epoll_ctl follows. A readable socket is read into the loop's buffer
// and parsed right there: partial frames, pings, pongs and close frames
// never leave the loop. A complete upgrade request or data message is
// handed, copied into a size-classed pooled buffer together with the bytes
// after it, to a worker (Config.Runner, cmd/pushd's ants pool), which calls
// the Handler and keeps reading the socket until it would block. One
// goroutine owns a connection's read side at a time (Conn.rd, see
// lean_read.go). Writes go straight to the socket from whoever queues a
// frame; on EAGAIN the queue stays and the next EPOLLOUT edge flushes it;
// a socket that takes nothing for WriteTimeout is closed as a slow
// consumer by the timing wheel. A connection ends when its read side sees
// EOF or an error (hangup is shutdown(2), which makes that happen): the
// owner runs the close callback, then close(2).
//
// # What it owns
//
// Accept (its own non-blocking listener: SO_REUSEPORT, the MaxConns cap,
// the per-source MaxConnsPerIP cap and ConnectRate token bucket — all
// answered with 503 + Retry-After before a Conn exists — EMFILE shedding;
// Attach takes already connected sockets through the same admission),
// the wss listener and its TLS record layer (tls.go), the HTTP
// upgrade (gobwas/ws zero-copy Upgrader, Handler.Upgrade decides; a plain
// GET goes to an optional HTTPResponder), the per-connection read state
// machine over codec.Parser, control frames (ping → pong, the close
// handshake), message assembly bounded by MaxMessageSize, the outbound
// queue and its flush, heartbeats and timeouts on one timing wheel, the
// connection registry (Each, StopAccepting for a drain) and RLIMIT_NOFILE
// awareness. It must never know about channels, Redis or auth policy: it
// calls Handler hooks.
//
// # Lifecycle
//
//	accept ─▶ prepare: Conn created, handshake deadline on the wheel
//	   │
//	   ▼  bytes arrive (lean: loop read → Conn.consume; netpoll: OnRequest → Conn.process)
//	handshake: request head collected (bounded by MaxHeaderBytes)
//	   │        Handler.Upgrade decides ─▶ 101 queued ─▶ Handler.Open
//	   ▼
//	open: codec.Parser chunks ─▶ data: Handler.Message (zero-copy when the
//	   │                           message arrived whole)
//	   │                       ─▶ ping: pong queued; pong: liveness only
//	   │                       ─▶ close: echoed, then closing
//	   ▼  Conn.Close / protocol error / peer close
//	closing: close frame queued, SHUT_WR after it, TCP closed when the peer
//	   │     answers or after CloseTimeout
//	   ▼
//	close callback (lean: read side saw EOF; netpoll: its callback)
//	   ─▶ unregister, wheel cancel ─▶ Handler.Close
//
// # HTTP streams (SSE, NDJSON)
//
// A Handler that is also a Streamer may keep a plain HTTP GET open as a
// response stream (stream.go): the head goes out without a length
// ("Connection: close", the body ends with the connection), the
// connection is then open like an upgraded one — Handler.Open, the same
// write queue, MaxPendingBytes, WriteTimeout, expiry, Each and Close —
// but no frame parser runs: inbound bytes are dropped and EOF ends it.
// The timer writes the Streamer's heartbeat every PingInterval instead
// of a ping (there is no pong), and Close writes StreamEnd's bytes then
// a FIN instead of a close frame. An idle stream costs what an idle
// WebSocket costs: no goroutine, no buffer.
//
// # Partial frames: always consume, copy only what must outlive the call
//
// netpoll calls OnRequest again, in a busy loop, while unread input
// remains, and a lean loop's read buffer is reused by the next socket. So
// Conn.consume always takes every byte read (on netpoll, Conn.process
// takes Reader.Next of Reader.Len and releases it). codec.Parser keeps up to 13
// bytes of a split frame header inside itself; payload bytes are unmasked
// in place and handed on at once. Only what must outlive the call is
// copied into the connection's one partial buffer: an incomplete upgrade
// request, a control frame split across reads, or a data message that
// arrived in several frames or reads. An idle connection holds no buffer of
// its own. A client that trickles a frame one byte at a time therefore
// costs one short read per wake-up and nothing in between (no goroutine
// blocked in Next, no spin), and SO_RCVLOWAT, set from Parser.Need, keeps
// the kernel from waking the loop before the rest of a small frame is in.
//
// # Writes
//
// Send/Queue/Flush append immutable frames to a per-connection queue
// bounded by MaxPendingBytes and flush it with one write/writev straight on
// the non-blocking descriptor, by whichever goroutine queued (one at a time,
// under the connection's mutex). If the kernel's send buffer is full, lean
// keeps the queue and flushes it on the next EPOLLOUT edge (no goroutine;
// the wheel closes a socket that takes nothing for WriteTimeout); netpoll
// hands the rest to its output buffer and one goroutine waits in its
// Flush (bounded by WriteTimeout), so there goroutines grow only with
// connections that are stalled at that moment. See write.go.
//
// # permessage-deflate
//
// With Config.Deflate the upgrade accepts a permessage-deflate offer (RFC
// 7692, codec.NegotiateDeflate) and answers server_no_context_takeover and
// client_no_context_takeover whatever was offered; client_max_window_bits
// is accepted at any value. Conn.Deflate tells the Handler, which may then
// queue frames compressed once for many connections
// (codec.CompileCompressedFrame). A compressed inbound message is collected
// like any other and inflated where the Handler would run (a worker on
// lean, never an event loop) with a pooled codec.Decompressor into a pooled
// buffer, bounded by MaxMessageSize after inflating: a decompression bomb
// is closed with 1009 without its buffer ever passing the limit. Nothing
// flate-related stays with a connection between messages.
//
// # wss
//
// ListenTLS opens a second listener on the lean loops. Its connections
// get a Conn at accept (admission, MaxConns and the handshake timeout as
// for ws) and run the TLS handshake off the loops, on a goroutine that
// lives only for the handshake, over a dup of the socket parked in Go's
// netpoller; Config.TLSCPU tokens bound the handshakes computing at once
// (a handshake gives its token back while it waits for the peer). Then
// the socket joins its loop: one descriptor, no goroutine. crypto/tls
// runs over a loop-fed adapter: its Read serves what the loop read and
// otherwise returns a net.Error whose Temporary() is true, which
// crypto/tls answers by keeping the partial record (conn.go,
// readRecordOrCCS); its Write collects ciphertext in a pooled buffer
// written with one write(2) and released once written. The flush seals
// every frame queued since the last flush into one record (up to 16 KiB).
// crypto/tls's input buffers are released whenever they are empty
// (tls_idle.go), and a TLS 1.3 AES-GCM connection unused for 2 s drops
// both AES-GCM states, keeping only the keys (tls_keys.go: 1.75 KiB of
// the ~4.3 KiB a wss connection cost; rebuilt on the next record). netpoll owns its connections' reads and buffers, so it
// would need the same adapter inside its OnRequest and its output
// buffer; it is not done: ListenTLS refuses the netpoll backend.
//
// # Timers
//
// One hashed timing wheel per Server (wheel.go, Tick resolution, one
// goroutine) holds each connection's single next deadline: handshake
// timeout, next ping, pong timeout or close timeout, capped by the
// connection's expiry (Conn.SetExpiry: e.g. a token's exp, closed with the
// Handler's code; Conn.ExtendExpiry moves it after a refresh) and by its
// expiry hint (Conn.SetExpiryHint: the Handler's Expirer is called once
// then). Reads only store the
// current tick in an atomic; deadlines are recomputed lazily when due. The
// first ping of connections accepted in a burst is spread over a quarter
// of PingInterval.
//
// # Concurrency
//
// Server methods are goroutine-safe. Handler callbacks for one connection
// never run concurrently with each other (lean: the read side's single
// owner; netpoll: its per-connection processing lock); Conn.Send, Queue,
// Flush and Close are safe from any goroutine. Goroutines: the event loops
// (lean: Config.Loops; netpoll: its pollers), the worker pool that runs
// hand-offs (Config.Runner) or OnRequest (netpoll.Configure's Runner),
// the wheel, and on netpoll one per stalled connection — never one per
// connection.
package poller
