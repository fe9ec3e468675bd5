package poller

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The write path. Frames are immutable byte slices shared by many
// connections; a connection's queue holds references, never copies.
//
// Whoever queues a frame also flushes, under c.mu, with non-blocking
// write/writev syscalls straight on the descriptor: on the common path a
// broadcast costs one syscall per connection and no goroutine. Holding mu
// across the syscall also fences the descriptor against close: the fd is
// closed only after the close callback, which takes mu, has run.
//
// When the kernel's send buffer is full, the lean backend keeps the queue
// and resumes on the next EPOLLOUT edge (lean_read.go, onWritable); the
// wheel closes a socket that took nothing for Config.WriteTimeout. The
// netpoll backend hands the rest of the queue to netpoll's output buffer,
// and one goroutine waits in netpoll's Flush until the socket drains or
// WriteTimeout passes. Either way a stalled connection is then closed as
// a slow consumer, new frames queue up to MaxPendingBytes meanwhile, and
// goroutines never grow with connections.

// maxIovecs bounds one writev call (IOV_MAX is 1024; 64 covers a burst).
const maxIovecs = 64

// Send queues frame b after everything already queued and flushes. b must
// be a complete WebSocket frame and must not be modified afterwards. It
// returns ErrClosed once the connection is closing, or ErrQueueFull (and
// queues nothing) when b would take the pending bytes over
// Config.MaxPendingBytes; a frame is always accepted into an empty queue.
func (c *Conn) Send(b []byte) error {
	c.mu.Lock()
	err := c.queueLocked(b, false)
	if err == nil {
		c.flushLocked()
	}
	c.unlock()
	return err
}

// Queue is Send without the flush: a caller queuing a burst calls Flush
// once afterwards, so the burst leaves in one writev.
func (c *Conn) Queue(b []byte) error {
	c.mu.Lock()
	err := c.queueLocked(b, false)
	c.mu.Unlock()
	return err
}

// Flush writes what Queue queued.
func (c *Conn) Flush() {
	c.mu.Lock()
	c.flushLocked()
	c.unlock()
}

// Pending returns the bytes queued but not yet taken by the kernel.
func (c *Conn) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending
}

// sendControl queues a frame the poller itself produces (pong, ping, close,
// handshake response) regardless of MaxPendingBytes, and flushes.
func (c *Conn) sendControl(b []byte) {
	c.mu.Lock()
	if n := c.writeDirectLocked(b); n < len(b) {
		_ = c.queueLocked(b[n:], true)
	}
	c.flushLocked()
	c.unlock()
}

// writeDirectLocked writes b at once when nothing is queued (ws, not
// stalled) and returns the bytes written; the caller queues the rest. The
// upgrade response and most control frames go out this way, so a
// connection that never receives a publication never allocates its queue.
// Lock c.mu must be held.
func (c *Conn) writeDirectLocked(b []byte) int {
	if c.tls != nil || len(c.q) > 0 || c.stalled || c.closed || c.fd < 0 {
		return 0
	}
	for {
		n, err := unix.Write(c.fd, b)
		switch err {
		case nil:
			return n
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0
		default:
			// flushLocked meets the same error on the queued bytes.
			return 0
		}
	}
}

// shutdownAfterFlush half-closes the socket once the queue drained and arms
// the close timeout; used after a refusal or a failed upgrade.
func (c *Conn) shutdownAfterFlush() {
	c.mu.Lock()
	c.shutWr = true
	c.flushLocked()
	c.unlock()
	c.srv.wheel.schedule(c, c.srv.wheel.now.Load()+c.srv.closeTicks)
}

// queueLocked appends b. Lock c.mu must be held.
func (c *Conn) queueLocked(b []byte, force bool) error {
	if c.closed {
		return ErrClosed
	}
	if !force {
		if c.state.Load() != stateOpen {
			return ErrClosed
		}
		if c.pending > 0 && c.pending+len(b) > c.srv.cfg.MaxPendingBytes {
			return ErrQueueFull
		}
	}
	c.q = append(c.q, b)
	c.pending += len(b)
	return nil
}

// flushLocked writes the queue until it is empty or the socket is full.
// Lock c.mu must be held.
func (c *Conn) flushLocked() {
	if c.tls != nil {
		c.flushTLSLocked()
		return
	}
	armed := false
	for len(c.q) > 0 && !c.stalled && !c.closed {
		offered := 0
		for _, b := range c.q[:min(len(c.q), maxIovecs)] {
			offered += len(b)
		}
		n, err := writeFrames(c.fd, c.q)
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			n = 0
		default:
			c.failWriteLocked()
			return
		}
		c.consumeLocked(n)
		if n == offered {
			continue
		}
		if c.nc != nil {
			c.stallLocked()
			return
		}
		// Lean backend: wait for EPOLLOUT. Publish the wait first, then
		// try once more: an EPOLLOUT edge that came between the EAGAIN
		// and the publication would otherwise be lost.
		if !armed {
			armed = true
			c.waitOut.Store(true)
			continue
		}
		c.stalled = true
		if c.stallTick.Load() == 0 {
			now := c.srv.wheel.now.Load()
			c.stallTick.Store(now)
			c.srv.stats.stalls.Add(1)
			c.srv.wheel.scheduleBefore(c, now+c.srv.writeTicks)
		}
		return
	}
	if len(c.q) == 0 && c.shutWr && !c.stalled && !c.closed {
		c.shutWr = false
		_ = unix.Shutdown(c.fd, unix.SHUT_WR)
	}
}

// consumeLocked drops n written bytes from the head of the queue. Lock c.mu
// must be held.
func (c *Conn) consumeLocked(n int) {
	c.pending -= n
	i := 0
	for n > 0 {
		if n < len(c.q[i]) {
			c.q[i] = c.q[i][n:]
			break
		}
		n -= len(c.q[i])
		i++
	}
	if i > 0 {
		rest := copy(c.q, c.q[i:])
		clear(c.q[rest:])
		c.q = c.q[:rest]
	}
}

// stallLocked hands the queue to netpoll and starts the drain goroutine
// (netpoll backend).
// Lock c.mu must be held.
func (c *Conn) stallLocked() {
	w := c.nc.Writer()
	for i, b := range c.q {
		if _, err := w.WriteBinary(b); err != nil {
			c.failWriteLocked()
			return
		}
		c.stallLen += len(b)
		c.q[i] = nil
	}
	c.q = c.q[:0]
	c.stalled = true
	c.srv.stats.stalls.Add(1)
	go c.drain()
}

// drain waits, outside c.mu, until netpoll wrote the stalled bytes, then
// resumes direct writes. Its lifetime is bounded by WriteTimeout.
func (c *Conn) drain() {
	err := c.nc.Writer().Flush()
	c.mu.Lock()
	c.stalled = false
	c.pending -= c.stallLen
	c.stallLen = 0
	if err != nil {
		if !c.closed {
			c.srv.stats.writeTimeouts.Add(1)
			c.failWriteLocked()
		}
		c.unlock()
		return
	}
	c.flushLocked()
	drained := !c.stalled && !c.closed && len(c.q) == 0
	c.unlock()
	if d, ok := c.srv.h.(Drainer); ok && drained {
		d.Drained(c)
	}
}

// failWriteLocked abandons the queue after a write error and closes TCP.
// Lock c.mu must be held; the close callback runs later on another path.
func (c *Conn) failWriteLocked() {
	clear(c.q)
	c.q = c.q[:0]
	c.pending = 0
	if c.endCode == 0 {
		c.endCode = StatusSlowConsumer
	}
	c.closeNow = true
}

// unlock releases c.mu, hanging up first if a write failure asked for it.
func (c *Conn) unlock() {
	if c.closeNow {
		c.closeNow = false
		c.hangupLocked()
	}
	c.mu.Unlock()
}

// writeFrames writes up to maxIovecs frames with one write or writev call.
// The iovec array lives on the stack: no allocation per flush.
func writeFrames(fd int, q [][]byte) (int, error) {
	if len(q) == 1 {
		return unix.Write(fd, q[0])
	}
	var iov [maxIovecs]unix.Iovec
	n := 0
	for _, b := range q {
		if n == maxIovecs {
			break
		}
		if len(b) == 0 {
			continue
		}
		iov[n].Base = &b[0]
		iov[n].SetLen(len(b))
		n++
	}
	r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
