// Package poller is pushd's event loop: it accepts TCP connections,
// upgrades them to WebSocket and runs every connection's protocol state
// machine on github.com/cloudwego/netpoll, with no goroutine per
// connection.
//
// # What it owns
//
// Accept (its own non-blocking listener: SO_REUSEPORT, the MaxConns cap,
// the per-source MaxConnsPerIP cap and ConnectRate token bucket — all
// answered with 503 + Retry-After before netpoll allocates anything —
// EMFILE shedding; Attach takes already connected sockets, e.g. the
// plaintext end of cmd/pushd's wss front end, through the same admission), the HTTP upgrade (gobwas/ws zero-copy Upgrader,
// Handler.Upgrade decides), the per-connection read state machine over
// codec.Parser, control frames (ping → pong, the close handshake),
// message assembly bounded by MaxMessageSize, the outbound queue and its
// flush, heartbeats and timeouts on one timing wheel, the connection
// registry and RLIMIT_NOFILE awareness. It must never know about channels,
// Redis or auth policy: it calls Handler hooks.
//
// # Lifecycle
//
//	accept ─▶ prepare: Conn created, handshake deadline on the wheel
//	   │
//	   ▼  bytes arrive (netpoll OnRequest → Conn.process)
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
//	netpoll close callback ─▶ unregister, wheel cancel ─▶ Handler.Close
//
// # Partial frames: always consume, copy only what must outlive the call
//
// netpoll calls OnRequest again, in a busy loop, while unread input
// remains. So Conn.process always takes every buffered byte (Reader.Next of
// Reader.Len) and releases it before returning. codec.Parser keeps up to 13
// bytes of a split frame header inside itself; payload bytes are unmasked
// in place and handed on at once. Only what must outlive the call is
// copied into the connection's one partial buffer: an incomplete upgrade
// request, a control frame split across reads, or a data message that
// arrived in several frames or reads. An idle connection holds no buffer of
// its own. A client that trickles a frame one byte at a time therefore
// costs one short OnRequest per byte and nothing in between (no goroutine
// blocked in Next, no spin).
//
// # Writes
//
// Send/Queue/Flush append immutable frames to a per-connection queue
// bounded by MaxPendingBytes and flush it with one write/writev straight on
// the non-blocking descriptor, by whichever goroutine queued (one at a time,
// under the connection's mutex). If the kernel's send buffer is full, the
// rest is handed to netpoll's output buffer and one goroutine waits in
// netpoll's Flush (bounded by WriteTimeout), so goroutines grow only with
// connections that are stalled at that moment. See write.go.
//
// # Timers
//
// One hashed timing wheel per Server (wheel.go, Tick resolution, one
// goroutine) holds each connection's single next deadline: handshake
// timeout, next ping, pong timeout or close timeout, capped by the
// connection's expiry (Conn.SetExpiry: e.g. a token's exp, closed with the
// Handler's code). Reads only store the
// current tick in an atomic; deadlines are recomputed lazily when due. The
// first ping of connections accepted in a burst is spread over a quarter
// of PingInterval.
//
// # Concurrency
//
// Server methods are goroutine-safe. Handler callbacks for one connection
// never run concurrently with each other (netpoll's per-connection
// processing lock); Conn.Send, Queue, Flush and Close are safe from any
// goroutine. Goroutines: netpoll's poller loops, the worker pool that runs
// OnRequest (injected by cmd/pushd through netpoll.Configure), the wheel,
// and one per stalled connection — never one per connection.
package poller
