package poller

import (
	"sync"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// The lean backend's read side.
//
// An event loop reads a ready socket into the loop's one shared buffer
// and runs the codec on those bytes right there: partial frames, pings,
// pongs and close frames cost no goroutine hand-off, and an idle
// connection holds no buffer at all. The Handler never runs on a loop
// (Upgrade may verify a token or ask Redis for history): when the bytes
// complete an upgrade request or a data message, handoff copies that
// message and the unparsed rest into a pooled buffer and passes the
// connection's read side to a worker, which delivers it, parses the rest
// and goes on reading the socket itself until it would block.
//
// Exactly one goroutine owns a connection's read side at a time. Conn.rd
// counts readiness events: the event that moves it from zero makes its
// loop the owner; later events only add to it. An owner that read until
// EAGAIN gives ownership back with a compare-and-swap from the count it
// saw to zero; if an event arrived meanwhile the swap fails and it reads
// again, so no edge-triggered event is lost.

// rdHup is set in Conn.rd when epoll reported a hang-up or error: the
// owner then reads until EOF instead of stopping at the first short read.
const (
	rdHup   = 1 << 30
	rdCount = rdHup - 1
)

// opUpgrade marks a handed-off upgrade request (not a WebSocket opcode).
const opUpgrade ws.OpCode = 0x10

// workerBufSize is the read buffer a worker uses once it owns a
// connection's read side (pooled, returned when it gives the side back).
const workerBufSize = 16 << 10

// bufPools hold the hand-off copies in size classes from 256 B to 64 KiB
// (larger messages are allocated and left to the GC).
type bufPools struct {
	classes [9]sync.Pool // 256 << i
	reads   sync.Pool    // *[]byte of workerBufSize
	// tlsReads: *[]byte of tlsReadBuf, a wss worker's read buffer
	// (ciphertext and plaintext halves).
	tlsReads sync.Pool
}

func (p *bufPools) getTLSRead() *[]byte {
	if b, ok := p.tlsReads.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, tlsReadBuf)
	return &b
}

func (p *bufPools) get(n int) []byte {
	for i := range p.classes {
		if size := 256 << i; n <= size {
			if b, ok := p.classes[i].Get().(*[]byte); ok {
				return (*b)[:0]
			}
			return make([]byte, 0, size)
		}
	}
	return make([]byte, 0, n)
}

func (p *bufPools) put(b []byte) {
	c := cap(b)
	for i := range p.classes {
		if 256<<i == c {
			b = b[:0]
			p.classes[i].Put(&b)
			return
		}
	}
}

func (p *bufPools) getRead() *[]byte {
	if b, ok := p.reads.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, workerBufSize)
	return &b
}

// onReadable runs on an event loop for a readiness event; buf is the
// loop's shared read buffer.
func (c *Conn) onReadable(buf []byte, hup bool) {
	if hup {
		c.rd.Or(rdHup)
	}
	if c.rd.Add(1)&rdCount != 1 {
		return // another goroutine owns the read side and will see the event
	}
	c.readLoop(buf, true)
}

// readLoop reads and consumes until the socket would block and no new
// event arrived meanwhile, then gives up ownership of the read side. It
// returns at once when the processing was handed to a worker or the
// connection ended.
func (c *Conn) readLoop(buf []byte, inline bool) {
	for {
		seen := c.rd.Load()
		c.inline, c.rdSeen = inline, seen
		if c.readAvailable(buf, seen&rdHup != 0) {
			return // c belongs to a worker now, or is closed: hands off
		}
		c.inline = false
		if c.rd.CompareAndSwap(seen, 0) {
			return
		}
	}
}

// readAvailable reads until EAGAIN (or, without a hang-up, until a short
// read: more data raises a new edge). It reports true when it no longer
// owns the read side: handed off to a worker, or the connection ended.
func (c *Conn) readAvailable(buf []byte, hup bool) bool {
	if c.tls != nil {
		return c.readTLS(buf, hup)
	}
	for {
		n, err := unix.Read(c.fd, buf)
		if n > 0 {
			c.drained = n < len(buf) && !hup
			if c.consume(buf[:n]) {
				return true
			}
			if n < len(buf) && !hup {
				return false
			}
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		// EOF or a socket error: the connection is over.
		c.leanClosed()
		return true
	}
}

// handoff passes a complete upgrade request (op == opUpgrade) or data
// message, and rest, the bytes read after it, to a worker together with
// the read side. Both are copied: they live in the loop's shared buffer.
func (c *Conn) handoff(op ws.OpCode, msg, rest []byte) {
	s := c.srv
	b := s.bufs.get(len(msg) + len(rest))
	b = append(append(b, msg...), rest...)
	m := len(msg)
	// The loop must not touch c's read state after the submit.
	c.inline = false
	if op == opUpgrade {
		c.partial = nil // msg may have been collected there
	}
	s.runTask(func() { c.resume(op, b, m) })
}

// resume runs on a worker with the read side: it delivers what handoff
// passed, parses the rest, then reads the socket until it would block.
func (c *Conn) resume(op ws.OpCode, b []byte, m int) {
	s := c.srv
	if op == opUpgrade {
		c.finishHandshake(b[:m], b[m:])
	} else {
		c.message(op, b[:m])
		if st := c.state.Load(); (st == stateOpen || st == stateClosing) && m < len(b) {
			c.readFrames(b[m:])
		}
	}
	s.bufs.put(b)
	if st := c.state.Load(); st == stateOpen || st == stateClosing {
		c.setLowat()
	}
	// The loop's last read was short and no event came since: nothing
	// is waiting in the socket, so give the read side back without
	// reading (a new edge will come with new data).
	if c.drained && c.rd.CompareAndSwap(c.rdSeen, 0) {
		return
	}
	if c.tls != nil {
		rb := s.bufs.getTLSRead()
		c.readLoop(*rb, false)
		s.bufs.tlsReads.Put(rb)
		return
	}
	rb := s.bufs.getRead()
	c.readLoop(*rb, false)
	s.bufs.reads.Put(rb)
}

// leanClosed ends a lean connection once its read side saw EOF or an
// error: the close callback (no write touches fd after it), then close(2),
// which also removes fd from its epoll set. Only the read side's owner
// calls it, once; the owner never gives the side back afterwards.
func (c *Conn) leanClosed() {
	c.srv.closed(c)
	_ = unix.Close(c.fd)
}

// onWritable runs on an event loop when epoll reports the socket
// writable: a flush that stalled on EAGAIN resumes.
func (c *Conn) onWritable() {
	if !c.waitOut.Swap(false) {
		return
	}
	c.mu.Lock()
	if !c.stalled || c.closed {
		c.mu.Unlock()
		return
	}
	before := c.pending
	c.stalled = false
	c.flushLocked()
	drained := !c.stalled && !c.closed && len(c.q) == 0
	switch {
	case !c.stalled:
		c.stallTick.Store(0)
	case c.pending < before:
		// Progress: the write deadline counts from now.
		c.stallTick.Store(c.srv.wheel.now.Load())
	}
	c.unlock()
	if d, ok := c.srv.h.(Drainer); ok && drained {
		d.Drained(c)
	}
}
