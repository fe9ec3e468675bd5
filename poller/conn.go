package poller

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/pushd/pushd/codec"
)

// connState is a connection's life stage; stored in Conn.state.
type connState = uint32

const (
	stateHandshake connState = iota // reading the HTTP upgrade request
	stateOpen                       // upgraded; frames flow both ways
	stateClosing                    // our close frame is queued; waiting for the peer's
	stateFailed                     // protocol failure or refusal: input is discarded
	stateClosed                     // TCP closed; the close callback ran
)

// Conn is one client connection. The poller owns it: read state is touched
// only by the connection's processing goroutine, write state only under mu,
// timer state only under the wheel's lock. Other packages hold *Conn as a
// handle and use Send, Queue, Flush, Close, ID and the Value slot.
type Conn struct {
	srv *Server
	nc  netpoll.Connection
	fd  int
	id  uint64

	// The fields are ordered to keep a Conn in the 288-byte size class
	// (one per connection; TestConnSize): small ones share words.
	state    atomic.Uint32
	rd       atomic.Int32 // lean only: read events pending (count | rdHup); non-zero: someone owns reading
	lastRead atomic.Int64 // wheel tick the peer last showed it is alive: inbound bytes, or draining our backlog (peerDraining)
	pingTick int64        // accept tick until upgraded, then the tick of the last ping; wheel goroutine only
	timer    timerLink
	src      *ipState  // the source admission counted this connection in (nil without)
	ext      *connExt  // what only attached sockets and streams need; nil for most
	tls      *tlsState // wss (Server.ListenTLS); nil for ws

	// Expiry (SetExpiry): written before the connection opens, read by
	// the wheel goroutine after the schedule that publishes it (and
	// expireCode, at the end).
	expireTick   atomic.Int64 // 0: none
	expireReason string
	hintTick     atomic.Int64 // Expirer hint (SetExpiryHint); 0: none

	// Read side: processing goroutine only.
	// parser holds the frame parser's state between reads; nil while the
	// parser is idle (between messages: codec.Parser.Idle), which is
	// nearly always, so an idle connection does not carry its 64 bytes.
	parser *codec.Parser
	// partial holds bytes that had to outlive one OnRequest call: an
	// incomplete upgrade request, a control frame split across reads, or a
	// fragmented/split data message being assembled. nil when idle.
	partial  []byte
	value    any
	ctlStart int32 // offset in partial of a split control frame
	lowat    int32 // SO_RCVLOWAT currently set on fd (0: kernel default 1)
	// drained and rdSeen describe the read that handed off (lean): the
	// socket's receive queue was emptied by a short read, and the read
	// event count the loop had seen. A worker that finds no newer event
	// then gives the read side back without another read(2).
	rdSeen     int32
	assembling bool // a data message is being assembled into partial
	drained    bool
	opened     bool // Handler.Open ran; Handler.Close is owed
	deflate    bool // permessage-deflate negotiated; set during the upgrade
	// streaming: an HTTP stream (Streamer), not a WebSocket; its
	// heartbeat (ext) is what its timer writes every PingInterval. Set
	// before it opens.
	streaming bool
	// inline: this read runs on a lean event loop goroutine, so Handler
	// calls must be handed off to a worker (see handoff).
	inline bool

	// Lean backend (nc == nil) only.
	waitOut   atomic.Bool  // a flush hit EAGAIN and waits for EPOLLOUT
	acked     int32        // low 32 bits of TCP_INFO bytes_acked at the last pong-timeout check (peerDraining); wheel goroutine only
	stallTick atomic.Int64 // wheel tick the socket last stopped taking bytes; 0: not stalled

	// Write side: guarded by mu.
	mu       sync.Mutex
	q        [][]byte // frames waiting for the socket, oldest first
	pending  int      // bytes in q plus bytes handed to netpoll while stalled
	stallLen int      // bytes handed to netpoll's buffer by the current stall
	stalled  bool     // the socket was full; a drain goroutine owns the writes
	closed   bool     // the close callback ran; never write to fd again
	shutWr   bool     // shutdown(SHUT_WR) once q drains (after our close frame)
	closeNow bool     // a write failed: hang up before mu is released
	endCode  ws.StatusCode

	expireCode ws.StatusCode // SetExpiry's close code (see expireTick)
}

// connExt holds a connection's rarely used fields, out of Conn so that a
// connection stays in the 384-byte size class. Written by the read side's
// owner before the connection opens (Attach: before it is registered).
type connExt struct {
	remote    net.Addr // peer address of an attached socket (Server.Attach); nil: the socket's
	heartbeat []byte   // a stream's heartbeat
}

// Deflate reports whether the connection negotiated permessage-deflate
// (Config.Deflate): frames with RSV1 set (codec.CompileCompressedFrame)
// may then be queued to it. Valid from Handler.Upgrade on; it never
// changes afterwards.
func (c *Conn) Deflate() bool { return c.deflate }

// ID returns the connection's server-unique id.
func (c *Conn) ID() uint64 { return c.id }

// RemoteAddr returns the peer address.
func (c *Conn) RemoteAddr() net.Addr {
	if c.ext != nil && c.ext.remote != nil {
		return c.ext.remote
	}
	if c.nc != nil {
		return c.nc.RemoteAddr()
	}
	// Lean backend: asked for rarely (the upgrade), so not stored.
	ap, _ := peerAddr(c.fd)
	return netAddr(ap)
}

// Value returns what SetValue stored.
func (c *Conn) Value() any { return c.value }

// SetValue stores the handler's per-connection state. Call it from Upgrade
// or Open (the processing goroutine); Value may then be read anywhere.
func (c *Conn) SetValue(v any) { c.value = v }

// SetExpiry closes the connection with code and reason at t (e.g. when
// its credentials expire), rounded up to the timing wheel's tick. It costs
// no timer: the deadline rides on the connection's one wheel entry. Call
// it from Handler.Upgrade (before the connection opens); a zero t clears
// it.
func (c *Conn) SetExpiry(t time.Time, code ws.StatusCode, reason string) {
	if t.IsZero() {
		c.expireTick.Store(0)
		return
	}
	w := c.srv.wheel
	due := w.now.Load() + 1
	if d := time.Until(t); d > 0 {
		due = w.now.Load() + w.ticks(d)
	}
	c.expireCode, c.expireReason = code, reason
	c.expireTick.Store(due)
}

// ExtendExpiry moves the deadline SetExpiry set to t, keeping its close
// code and reason (an in-band token refresh). Safe from any goroutine at
// any time; it never clears a deadline (a zero t is ignored).
func (c *Conn) ExtendExpiry(t time.Time) {
	if t.IsZero() || c.expireTick.Load() == 0 {
		return
	}
	c.expireTick.Store(c.tickAt(t))
}

// SetExpiryHint makes the wheel call the Handler's Expirer.Expiring once
// at t (a zero t clears it), so the handler can ask the client for fresh
// credentials before SetExpiry's deadline. Like ExtendExpiry it costs no
// timer and is safe from any goroutine at any time.
func (c *Conn) SetExpiryHint(t time.Time) {
	if t.IsZero() {
		c.hintTick.Store(0)
		return
	}
	due := c.tickAt(t)
	c.hintTick.Store(due)
	if c.state.Load() == stateOpen {
		// Open: the connection is linked for its ping or an older
		// deadline; pull it forward when the hint comes first.
		c.srv.wheel.scheduleBefore(c, due)
	}
}

// tickAt is the wheel tick at or after t (at least the next one).
func (c *Conn) tickAt(t time.Time) int64 {
	w := c.srv.wheel
	if d := time.Until(t); d > 0 {
		return w.now.Load() + w.ticks(d)
	}
	return w.now.Load() + 1
}

// capDue returns due, or the expiry or hint tick or the write deadline of
// a stalled socket when that comes first.
func (c *Conn) capDue(due int64) int64 {
	if k := c.tlsKeys(); k != nil {
		cool := c.srv.tlsCoolTicks
		for _, g := range [2]*lazyGCM{&k.in, &k.out} {
			if u := g.used.Load(); u != 0 && u+cool < due {
				due = u + cool
			}
		}
	}
	if e := c.expireTick.Load(); e != 0 && e < due {
		due = e
	}
	if h := c.hintTick.Load(); h != 0 && h < due {
		due = h
	}
	if st := c.stallTick.Load(); st != 0 && st+c.srv.writeTicks < due {
		due = st + c.srv.writeTicks
	}
	return due
}

// Open reports whether the connection is upgraded and not closing.
func (c *Conn) Open() bool { return c.state.Load() == stateOpen }

// process consumes every byte netpoll has buffered for c. It never returns
// with unread input: netpoll would call it again in a busy loop. Bytes that
// must outlive this call are copied into c.partial.
func (c *Conn) process() {
	r := c.nc.Reader()
	n := r.Len()
	if n == 0 {
		return
	}
	b, err := r.Next(n)
	if err != nil {
		c.hangup()
		return
	}
	c.consume(b)
	_ = r.Release()
}

// consume runs b, the next bytes read from the socket, through the
// handshake or the frame parser. It reports whether it handed the rest of
// the processing to a worker (lean backend, inline reads only): the
// caller then no longer owns the connection's read side.
func (c *Conn) consume(b []byte) (handedOff bool) {
	c.lastRead.Store(c.srv.wheel.now.Load())
	switch c.state.Load() {
	case stateHandshake:
		handedOff = c.handshake(b)
	case stateOpen, stateClosing:
		if c.streaming {
			// An HTTP stream reads nothing after its request: inbound
			// bytes (a pipelined request, junk) are dropped; EOF ends it.
			return false
		}
		handedOff = c.readFrames(b)
	}
	if handedOff {
		return true
	}
	if c.streaming {
		return false
	}
	if st := c.state.Load(); st == stateOpen || st == stateClosing {
		c.setLowat()
	}
	return false
}

// maxLowat caps the receive low-water mark: a large frame still wakes the
// connection every maxLowat bytes, and the kernel never has to hold more
// than this below the mark.
const maxLowat = 16 << 10

// setLowat sets SO_RCVLOWAT to the bytes the parser needs next (see
// codec.Parser.Need), so epoll reports the socket readable only once that
// much has arrived. A client that trickles a frame byte by byte then costs
// three wake-ups per frame (first two header bytes, rest of the header,
// payload) instead of one per byte. It costs one
// setsockopt only when the mark changes, i.e. only around partial frames.
func (c *Conn) setLowat() {
	need := idleNeed
	if c.parser != nil {
		need = c.parser.Need()
	}
	want := int32(min(need, maxLowat))
	if want == c.lowat || c.fd < 0 || c.tls != nil {
		// wss: the parser counts plaintext, the kernel ciphertext, and
		// crypto/tls may hold part of a record: no low-water mark.
		return
	}
	if unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, int(want)) == nil {
		c.lowat = want
	}
}

// idleNeed is what an idle parser needs next (codec.Parser.Need): the
// first two bytes of a frame header.
var idleNeed = new(codec.Parser).Need()

// codecConfig returns the parser configuration the connection negotiated.
func (c *Conn) codecConfig() *codec.Config {
	if c.deflate {
		return &c.srv.zCodecCfg
	}
	return &c.srv.codecCfg
}

// readFrames feeds b to the parser and acts on every chunk. It reports
// whether it handed the rest of b to a worker (see dataChunk).
//
// The parser runs on the stack unless the connection kept one (a frame or
// message split across reads): keepParser stores its state back only when
// it is not idle, before a chunk that may hand the read side to a worker
// and when the bytes run out.
func (c *Conn) readFrames(b []byte) (handedOff bool) {
	var local codec.Parser
	p := c.parser
	if p == nil {
		p = &local
		p.Init(c.codecConfig())
	}
	for len(b) > 0 {
		ch, n, ok, err := p.Next(b)
		b = b[n:]
		if err != nil {
			c.fail(err)
			return false
		}
		if !ok {
			c.keepParser(p)
			return false
		}
		if ch.MsgOp.IsControl() {
			c.controlChunk(ch)
		} else if c.state.Load() == stateOpen {
			// A complete message may go to a worker that reads on at
			// once: the parser's state must be in c first.
			p = c.keepParser(p)
			if c.dataChunk(ch, b) {
				return true
			}
		}
		if st := c.state.Load(); st != stateOpen && st != stateClosing {
			return false
		}
	}
	c.keepParser(p)
	return false
}

// keepParser stores p's state in c.parser when p is not idle (copying a
// stack parser to the heap once), drops c.parser when it is, and returns
// the parser to go on with.
func (c *Conn) keepParser(p *codec.Parser) *codec.Parser {
	if p.Idle() {
		c.parser = nil
		return p
	}
	if c.parser == nil {
		c.parser = new(codec.Parser)
	}
	if c.parser != p {
		*c.parser = *p
	}
	return c.parser
}

// controlChunk collects a control frame (at most 125 bytes, possibly split
// across reads) and handles it once complete. A control frame may arrive in
// the middle of a fragmented message: its bytes then follow the message's
// in c.partial, from ctlStart on, and are cut off again afterwards.
func (c *Conn) controlChunk(ch codec.Chunk) {
	if ch.First && ch.FrameEnd {
		c.control(ch.MsgOp, ch.Payload)
		return
	}
	if ch.First {
		c.ctlStart = int32(len(c.partial))
	}
	c.partial = append(c.partial, ch.Payload...)
	if !ch.FrameEnd {
		return
	}
	c.control(ch.MsgOp, c.partial[c.ctlStart:])
	c.partial = c.partial[:c.ctlStart]
	if !c.assembling {
		c.partial = nil
	}
}

// control handles one complete control frame.
func (c *Conn) control(op ws.OpCode, payload []byte) {
	switch op {
	case ws.OpPing:
		if c.state.Load() == stateOpen {
			c.sendControl(codec.AppendFrame(nil, ws.OpPong, true, payload))
		}
	case ws.OpPong:
		// Liveness is tracked by lastRead; nothing else to do.
	case ws.OpClose:
		c.peerClose(payload)
	}
}

// dataChunk delivers a data message, zero-copy when it arrived whole. On a
// lean event loop (c.inline) the Handler does not run here: the message
// and rest, the unparsed bytes after it, go to a worker, and dataChunk
// reports true.
func (c *Conn) dataChunk(ch codec.Chunk, rest []byte) (handedOff bool) {
	op := ch.MsgOp
	if ch.Compressed {
		op |= opInflate
	}
	if !c.assembling && ch.First && ch.MsgEnd {
		return c.deliver(op, ch.Payload, rest)
	}
	c.assembling = true
	c.partial = append(c.partial, ch.Payload...)
	if !ch.MsgEnd {
		return false
	}
	msg := c.partial
	c.partial, c.assembling = nil, false
	return c.deliver(op, msg, rest)
}

// deliver passes a complete message to Handler.Message, or, on a lean
// event loop, hands it and rest to a worker (reporting true).
func (c *Conn) deliver(op ws.OpCode, msg, rest []byte) (handedOff bool) {
	if c.inline {
		c.handoff(op, msg, rest)
		return true
	}
	c.message(op, msg)
	return false
}

// opInflate marks a data message that arrived compressed (RSV1,
// permessage-deflate) on its way to message; not a WebSocket opcode.
const opInflate ws.OpCode = 0x20

// inflateFirst is the pooled buffer a compressed message is first inflated
// into: client messages (ops) fit; larger ones are measured, then inflated
// again into a buffer of exactly their size.
const inflateFirst = 16 << 10

// message calls Handler.Message with a complete data message, inflating it
// first when op carries opInflate. Inflating runs here, on the goroutine
// that owns the read side (a worker on lean, never an event loop), with an
// inflater and an output buffer taken from pools for this message only: an
// idle connection holds no flate state. The inflated size is bounded by
// MaxMessageSize (1009 past it); data that does not inflate gets 1007, text
// that is not UTF-8 1007.
//
// Memory: a message is inflated into a pooled 16 KiB buffer; one that does
// not fit is first measured without keeping its output
// (codec.Decompressor.InflatedSize, a 16 KiB scratch) and only then, if
// within the limit, inflated into a buffer of exactly its size. So a
// decompression bomb costs CPU up to MaxMessageSize of output and no
// memory beyond the pooled buffers, and a legitimate large message one
// exact allocation (TestZipBomb measures pushd's peak RSS).
func (c *Conn) message(op ws.OpCode, msg []byte) {
	s := c.srv
	if op&opInflate == 0 {
		s.h.Message(c, op, msg)
		return
	}
	op &^= opInflate
	s.stats.inflated.Add(1)
	d, _ := s.inflaters.Get().(*codec.Decompressor)
	if d == nil {
		d = new(codec.Decompressor)
	}
	limit := s.cfg.MaxMessageSize
	buf := s.bufs.get(inflateFirst)
	// cap-1: Decompress reads one byte past its limit to see it crossed;
	// within cap it never reallocates the pooled buffer.
	first := int64(cap(buf) - 1)
	if limit > 0 {
		first = min(first, limit)
	}
	out, err := d.Decompress(buf, msg, first)
	if errors.Is(err, codec.ErrMessageTooBig) && (limit <= 0 || limit > first) {
		var n int64
		if n, err = d.InflatedSize(msg, limit); err == nil {
			s.bufs.put(buf)
			out, err = d.Decompress(make([]byte, 0, n+1), msg, limit)
		}
	}
	s.inflaters.Put(d)
	switch {
	case errors.Is(err, codec.ErrMessageTooBig):
		s.stats.inflateTooBig.Add(1)
		c.fail(codec.ErrMessageTooBig)
	case err != nil:
		c.fail(codec.ErrDeflateData)
	case op == ws.OpText && !codec.ValidUTF8(out):
		c.fail(codec.ErrInvalidUTF8)
	default:
		s.h.Message(c, op, out)
	}
	// An exact-size buffer is left to the GC (put keeps exact class sizes
	// only); on error out may be the pooled buffer emptied.
	s.bufs.put(out)
}

// peerClose answers the peer's close frame (RFC 6455 §5.5.1).
func (c *Conn) peerClose(payload []byte) {
	code, _, err := codec.ParseClose(payload)
	if err != nil {
		c.fail(err)
		return
	}
	if c.state.Load() == stateClosing {
		// Our close was already sent; the handshake is complete.
		c.setEndCode(code)
		c.hangup()
		return
	}
	reply := code
	if code == ws.StatusNoStatusRcvd {
		reply = ws.StatusNormalClosure
	}
	c.setEndCode(code)
	c.closeWith(reply, "", stateClosing)
}

// fail closes the connection after a protocol error with the error's close
// code (RFC 6455 §7.1.7) and discards further input.
func (c *Conn) fail(err error) {
	code := codec.CloseCode(err)
	reason := ""
	if e, ok := err.(*codec.Error); ok {
		reason = e.Reason
	}
	c.srv.stats.protocolErrors.Add(1)
	c.closeWith(code, reason, stateFailed)
}

// Close starts the closing handshake with code and reason: the close frame
// is queued after everything already queued, further sends fail with
// ErrClosed, and TCP is closed when the peer answers or after
// Config.CloseTimeout. Safe from any goroutine; later calls do nothing.
func (c *Conn) Close(code ws.StatusCode, reason string) error {
	if !c.closeWith(code, reason, stateClosing) {
		return ErrClosed
	}
	return nil
}

// closeWith moves c from open (or handshake) to next, queues the close
// frame and arms the close timeout. It reports whether it made the move.
func (c *Conn) closeWith(code ws.StatusCode, reason string, next connState) bool {
	for {
		st := c.state.Load()
		if st != stateOpen && st != stateHandshake {
			return false
		}
		if c.state.CompareAndSwap(st, next) {
			if st == stateHandshake {
				// No WebSocket yet: nothing to send a close frame on.
				c.hangup()
				return true
			}
			break
		}
	}
	c.setEndCode(code)
	var last []byte
	if c.streaming {
		if st, ok := c.srv.h.(Streamer); ok {
			last = st.StreamEnd(c, code, reason)
		}
	} else {
		last = codec.AppendClose(nil, code, reason)
	}
	c.mu.Lock()
	if len(last) > 0 {
		_ = c.queueLocked(last, true)
	}
	c.shutWr = true
	c.flushLocked()
	c.unlock()
	c.srv.wheel.schedule(c, c.srv.wheel.now.Load()+c.srv.closeTicks)
	return true
}

// setEndCode records the code the connection ends with; the first wins.
func (c *Conn) setEndCode(code ws.StatusCode) {
	c.mu.Lock()
	if c.endCode == 0 {
		c.endCode = code
	}
	c.mu.Unlock()
}

// onTimer runs on the wheel goroutine when c's deadline is due.
func (c *Conn) onTimer(now int64) {
	s := c.srv
	c.tlsCool(now)
	switch c.state.Load() {
	case stateHandshake:
		if now >= c.acceptTick()+s.handshakeTicks {
			s.stats.handshakeTimeouts.Add(1)
			c.hangup()
			return
		}
		s.wheel.schedule(c, c.capDue(c.acceptTick()+s.handshakeTicks))
	case stateOpen:
		if st := c.stallTick.Load(); st != 0 && now-st >= s.writeTicks {
			// Lean backend: the socket took nothing for WriteTimeout.
			s.stats.writeTimeouts.Add(1)
			c.mu.Lock()
			c.failWriteLocked()
			c.unlock()
			return
		}
		if e := c.expireTick.Load(); e != 0 && now >= e {
			s.stats.expired.Add(1)
			_ = c.Close(c.expireCode, c.expireReason)
			return
		}
		if h := c.hintTick.Load(); h != 0 && now >= h && c.hintTick.CompareAndSwap(h, 0) {
			if x, ok := s.h.(Expirer); ok {
				x.Expiring(c)
			}
		}
		if c.streaming {
			c.streamTimer(now)
			return
		}
		last := c.lastRead.Load()
		idle := now - last
		if idle >= s.pingTicks+s.pongTicks && c.peerDraining(now) {
			// Our ping waits behind a backlog the peer is still taking:
			// it gets a pong timeout's time from now (the write timeout
			// ends a backlog that stops moving).
			last = now - s.pingTicks
			c.lastRead.Store(last)
			idle = s.pingTicks
		}
		switch {
		case idle >= s.pingTicks+s.pongTicks:
			s.stats.pongTimeouts.Add(1)
			c.setEndCode(ws.StatusAbnormalClosure)
			c.hangup()
		case idle >= s.pingTicks:
			if c.pingTick <= last {
				c.pingTick = now
				c.sendControl(s.pingFrame)
			}
			s.wheel.schedule(c, c.capDue(last+s.pingTicks+s.pongTicks))
		default:
			s.wheel.schedule(c, c.capDue(last+s.pingTicks))
		}
	case stateClosing, stateFailed:
		c.hangup()
	}
}

// peerDraining reports, at a pong timeout, whether the peer has been
// taking our bytes although it sent none: a client reading a large
// backlog answers the ping only once it reaches it, so silence then is
// not death. Evidence: a write backlog of ours that moved within the write
// timeout (the lean backend renews stallTick on progress; netpoll's drain
// is bounded by the write timeout), or, with bytes in the kernel's send
// queue (SIOCOUTQ), bytes the peer acknowledged since the last check
// (TCP_INFO bytes_acked; the first sighting earns one more pong timeout).
// Not the queue's length: our own flushes refill it as fast as the peer
// drains it, so a draining peer could look stuck. A dead peer moves
// neither and is ended at the next check. Wheel goroutine only.
func (c *Conn) peerDraining(now int64) bool {
	if st := c.stallTick.Load(); st != 0 && now-st < c.srv.writeTicks {
		return true
	}
	if c.nc != nil {
		// netpoll: a drain goroutine is writing our backlog, bounded by
		// the write timeout.
		c.mu.Lock()
		stalled := c.stalled
		c.mu.Unlock()
		if stalled {
			return true
		}
	}
	q, err := unix.IoctlGetInt(c.fd, unix.SIOCOUTQ)
	if err != nil || q <= 0 {
		c.acked = 0
		return false
	}
	info, err := unix.GetsockoptTCPInfo(c.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return false
	}
	acked := int32(uint32(info.Bytes_acked)) // low 32 bits: any change is progress
	prev := c.acked
	c.acked = acked
	return prev == 0 || acked != prev
}

// hangup ends the connection with shutdown(2) in both directions: the
// kernel sends FIN after whatever is already queued, the peer's further
// data is answered with a reset, and epoll reports the hang-up, so netpoll
// closes the connection from its poller loop (onHup), outside any handler
// task. The poller never calls netpoll's Close: from inside a handler task,
// or racing with one, Close runs netpoll's close callbacks inside the task,
// and with handlers run inline on the loop (cmd/pushd -runner inline) that
// deadlocks in netpoll's FDOperator.Free, which spins until the loop marks
// the operator done. Holding c.mu and checking c.closed keeps a reused
// descriptor safe, as on the write path.
func (c *Conn) hangup() {
	c.mu.Lock()
	c.hangupLocked()
	c.mu.Unlock()
}

// hangupLocked is hangup with c.mu held.
func (c *Conn) hangupLocked() {
	if !c.closed && c.fd >= 0 {
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
}

// acceptTick is the tick the connection was accepted at. It is kept in
// pingTick until the upgrade, which is unused before then.
func (c *Conn) acceptTick() int64 { return c.pingTick }
