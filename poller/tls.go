package poller

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// wss on the lean event loops: TLS with no goroutine per connection.
//
// The handshake runs off the loops, on a goroutine that lives only for
// the handshake, over a duplicate of the socket parked in Go's own
// netpoller (so a half-open handshake costs a parked goroutine, not a
// thread). Its CPU is bounded: a handshake holds one of Config.TLSCPU
// tokens while it computes and gives it back while it waits for the
// peer, so a flood of handshakes cannot take more than that many cores
// from the established connections. The handshake timeout is the wheel's
// (HandshakeTimeout from accept covers TLS and the HTTP upgrade): on
// expiry the socket is shut down, which ends the blocked read.
//
// After the handshake the duplicate is closed and the socket joins a
// lean loop like any ws connection: one descriptor, no goroutine. The
// crypto/tls Conn then runs over tlsIO, a loop-owned net.Conn:
//
//   - Read serves the ciphertext the loop just read and otherwise returns
//     errWouldBlock, a net.Error whose Temporary() is true; crypto/tls
//     (conn.go, readRecordOrCCS) keeps a partial record buffered and does
//     not fail on it, so the loop feeds records in whatever pieces the
//     kernel delivers.
//   - Write appends ciphertext to a pooled buffer that the flush writes
//     with one write(2); the buffer goes back to the pool once written.
//
// Outbound frames are sealed at flush time: every frame queued since the
// last flush is coalesced into one plaintext batch (up to one record,
// 16 KiB) and encrypted once, so a burst of pushes becomes one record and
// one write(2) per connection (flushTLSLocked).

// maxRecordPlain is the largest TLS record plaintext (RFC 8446 §5.1).
const maxRecordPlain = 16 << 10

// tlsSlack bounds the plaintext crypto/tls may hold back between feeds
// (one partial record plus its header and overhead).
const tlsSlack = maxRecordPlain + 2048

// tlsReadBuf is a TLS connection's worker read buffer: half ciphertext,
// half (plus tlsSlack) plaintext.
const tlsReadBuf = 64 << 10

// errWouldBlock tells crypto/tls that no more ciphertext is available
// now; it keeps a partial record and returns the error to the loop.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "poller: tls: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// tlsState is a wss connection's TLS layer.
type tlsState struct {
	tc   *tls.Conn
	keys atomic.Pointer[tlsKeys] // lazy AES-GCM state (tls_keys.go); nil: crypto/tls's own
	io   tlsIO
}

// tlsIO is the net.Conn under a connection's tls.Conn. During the
// handshake it reads and writes hs, a duplicate of the socket in Go's
// netpoller; afterwards it serves in (set by the read side's owner) and
// collects out (guarded by mu: the read side writes alerts and key
// updates, the flush writes application data).
type tlsIO struct {
	c  *Conn
	hs *os.File
	in []byte

	mu  sync.Mutex
	out []byte // ciphertext not yet written; nil when idle (pooled)
	off int    // bytes of out already written
}

func (t *tlsIO) Read(p []byte) (int, error) {
	if hs := t.hs; hs != nil {
		s := t.c.srv
		s.tlsCPURelease()
		n, err := hs.Read(p)
		if !s.tlsCPUAcquire(t.c) {
			return n, ErrServerClosed
		}
		return n, err
	}
	if len(t.in) == 0 {
		return 0, errWouldBlock
	}
	n := copy(p, t.in)
	t.in = t.in[n:]
	return n, nil
}

func (t *tlsIO) Write(p []byte) (int, error) {
	if t.hs != nil {
		return t.hs.Write(p)
	}
	t.mu.Lock()
	if t.out == nil {
		t.out = t.c.srv.bufs.get(len(p))
	}
	t.out = append(t.out, p...)
	t.mu.Unlock()
	return len(p), nil
}

func (t *tlsIO) Close() error                        { return nil }
func (t *tlsIO) LocalAddr() net.Addr                 { return &net.TCPAddr{} }
func (t *tlsIO) RemoteAddr() net.Addr                { return t.c.RemoteAddr() }
func (t *tlsIO) SetDeadline(time.Time) error         { return nil }
func (t *tlsIO) SetReadDeadline(time.Time) error     { return nil }
func (t *tlsIO) SetWriteDeadline(tm time.Time) error { return nil }

// tlsCPUAcquire takes a handshake CPU token, waiting at most until the
// connection's handshake deadline. It reports false when it gave up.
func (s *Server) tlsCPUAcquire(c *Conn) bool {
	select {
	case s.tlsCPU <- struct{}{}:
		return true
	default:
	}
	tm := time.NewTimer(s.cfg.HandshakeTimeout)
	defer tm.Stop()
	select {
	case s.tlsCPU <- struct{}{}:
		return true
	case <-tm.C:
		return false
	}
}

func (s *Server) tlsCPURelease() { <-s.tlsCPU }

// ListenTLS binds the wss listener: connections accepted there run the
// TLS handshake with Config.TLS, then everything a ws connection does.
// Lean backend only (see doc.go). Call it once, after Listen and before
// Run.
func (s *Server) ListenTLS(addr string) (net.Addr, error) {
	if s.cfg.TLS == nil {
		return nil, fmt.Errorf("%w: ListenTLS without Config.TLS", ErrConfig)
	}
	if s.cfg.Backend != BackendLean {
		return nil, fmt.Errorf("%w: wss needs the lean backend", ErrConfig)
	}
	if s.ln == nil || s.tln != nil {
		return nil, fmt.Errorf("poller: ListenTLS must follow Listen, once")
	}
	ln, err := listen(addr, s.cfg.ReusePort, s.cfg.Backlog)
	if err != nil {
		return nil, err
	}
	ln.admit, ln.refuse, ln.admitFrom = s.ln.admit, s.ln.refuse, s.ln.admitFrom
	s.tln = ln
	return ln.addr, nil
}

// tlsConfig returns the server's TLS configuration with the record layer
// settings the loops rely on.
func tlsServerConfig(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	// One record per coalesced flush, whatever the connection's age.
	c.DynamicRecordSizingDisabled = true
	c.Renegotiation = tls.RenegotiateNever
	return c
}

// acceptTLS accepts pending wss connections and starts their handshakes.
func (s *Server) acceptTLS() {
	for range leanAcceptMax {
		nfd, _, src, err := s.tln.acceptFD()
		if err != nil {
			if !errors.Is(err, ErrListenerClosed) {
				s.log.Error("wss accept failed", "err", err)
			}
			return
		}
		if nfd < 0 {
			return
		}
		_ = unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		c := s.newConn(nil, nfd)
		c.src = src
		c.tls = &tlsState{}
		c.tls.io.c = c
		// The handshake goroutine owns the read side until it ends.
		c.rd.Store(1)
		if !s.register(c) {
			continue
		}
		s.tlsConns.Add(1)
		s.tlsWG.Add(1)
		go s.tlsHandshake(c)
	}
}

// tlsHandshake runs one connection's TLS handshake, then hands the
// socket to its loop, or ends the connection.
func (s *Server) tlsHandshake(c *Conn) {
	defer s.tlsWG.Done()
	t := c.tls
	dfd, err := unix.FcntlInt(uintptr(c.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		s.stats.tlsFailures.Add(1)
		c.leanClosed()
		return
	}
	t.io.hs = os.NewFile(uintptr(dfd), "wss")
	_ = t.io.hs.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	t.tc = tls.Server(&t.io, s.tlsCfg)
	ok := s.tlsCPUAcquire(c)
	if ok {
		err = t.tc.HandshakeContext(context.Background())
		s.tlsCPURelease()
	} else {
		err = ErrServerClosed
	}
	_ = t.io.hs.Close()
	t.io.hs = nil
	if err != nil {
		s.tlsFailed(c, err)
		return
	}
	s.stats.tlsHandshakes.Add(1)
	st := t.tc.ConnectionState()
	if st.DidResume {
		s.stats.tlsResumed.Add(1)
	}
	if err := s.installTLSKeys(c, &st); err != nil {
		s.stats.tlsKeysKept.Add(1)
		if s.log.Enabled(context.Background(), -4) {
			s.log.Debug("wss keeps crypto/tls's AES-GCM state", "err", err)
		}
	} else if t.keys.Load() != nil {
		s.wheel.scheduleBefore(c, s.wheel.now.Load()+s.tlsCoolTicks)
	}
	// Handshake messages written after the last flight (TLS 1.3 session
	// tickets are sent in the handshake call) went out through hs.
	if err := s.lean.add(c); err != nil {
		s.log.Error("cannot register connection", "err", err)
		c.leanClosed()
		return
	}
	// Application data may already sit in crypto/tls's buffer (read with
	// the last handshake flight): no epoll edge will announce it, so this
	// goroutine, still the read side's owner, decrypts it first, then
	// reads the socket until it would block like any worker.
	rb := s.bufs.getTLSRead()
	if !c.tlsInput(nil, *rb) {
		c.readLoop(*rb, false)
	}
	s.bufs.tlsReads.Put(rb)
}

// tlsFailed ends a connection whose handshake failed. A plaintext HTTP
// request gets a 400 and is counted on its own.
func (s *Server) tlsFailed(c *Conn, err error) {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && looksLikeHTTP(rh.RecordHeader[:]) {
		s.stats.tlsPlaintext.Add(1)
		_, _ = unix.Write(c.fd, []byte("HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nthis port speaks wss (TLS); use wss:// or the ws listener\n"))
		_ = unix.Shutdown(c.fd, unix.SHUT_WR)
	} else {
		s.stats.tlsFailures.Add(1)
		if s.log.Enabled(context.Background(), -4) {
			s.log.Debug("wss handshake failed", "err", err)
		}
	}
	c.leanClosed()
}

// looksLikeHTTP reports whether a would-be TLS record header is the start
// of an HTTP/1 request.
func looksLikeHTTP(h []byte) bool {
	for _, m := range []string{"GET ", "POST ", "HEAD ", "PUT ", "OPTIO", "DELET", "PATCH", "CONNE"} {
		if bytes.HasPrefix(h, []byte(m[:min(len(m), len(h))])) {
			return true
		}
	}
	return false
}

// tlsInput decrypts raw (the ciphertext just read; nil to drain what
// crypto/tls holds) into buf and runs the plaintext through consume. It
// reports true when it no longer owns the read side: handed off to a
// worker, or the connection ended (a TLS error hangs it up; the owner
// then reads to EOF).
func (c *Conn) tlsInput(raw, buf []byte) (gone bool) {
	t := c.tls
	t.io.in = raw
	m := 0
	var err error
	for m < len(buf) {
		var n int
		n, err = t.tc.Read(buf[m:])
		m += n
		if err != nil {
			break
		}
	}
	t.io.in = nil
	c.srv.tlsBufs.release(t.tc)
	c.tlsFlushAlerts()
	if err == nil {
		// buf was too small for what crypto/tls had (cannot happen with
		// raw at most half of a tlsReadBuf-sized buffer): fail safe.
		err = ErrTLSBuffer
	}
	if m > 0 {
		if st := c.state.Load(); st != stateFailed && st != stateClosed {
			if c.consume(buf[:m]) {
				return true
			}
		}
	} else if len(raw) > 0 {
		c.lastRead.Store(c.srv.wheel.now.Load())
	}
	if err != errWouldBlock {
		// Peer's close_notify (EOF), a bad record, a refused
		// renegotiation: the connection is over.
		if !errors.Is(err, errWouldBlock) {
			c.srv.stats.tlsRecordErrors.Add(1)
			c.hangup()
		}
	}
	return false
}

// tlsFlushAlerts writes what the read side's crypto/tls produced (an
// alert, a key update answer).
func (c *Conn) tlsFlushAlerts() {
	t := &c.tls.io
	t.mu.Lock()
	pending := t.out != nil
	t.mu.Unlock()
	if pending {
		c.Flush()
	}
}

// readTLS is readAvailable for a wss connection: it reads ciphertext
// into the first part of buf and decrypts it into the rest.
func (c *Conn) readTLS(buf []byte, hup bool) bool {
	rawMax := (len(buf) - tlsSlack) / 2
	raw, plain := buf[:rawMax], buf[rawMax:]
	for {
		n, err := unix.Read(c.fd, raw)
		if n > 0 {
			c.drained = n < len(raw) && !hup
			if c.tlsInput(raw[:n], plain) {
				return true
			}
			if n < len(raw) && !hup {
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
		c.leanClosed()
		return true
	}
}

// flushTLSLocked seals every queued frame into records (one per 16 KiB
// of coalesced plaintext) and writes the ciphertext until it is all out
// or the socket is full. Lock c.mu must be held.
func (c *Conn) flushTLSLocked() {
	t := c.tls
	if len(c.q) > 0 && !c.closed {
		if !c.sealLocked() {
			c.failWriteLocked()
			return
		}
	}
	armed := false
	for !c.stalled && !c.closed {
		t.io.mu.Lock()
		if t.io.off == len(t.io.out) {
			if t.io.out != nil {
				c.srv.bufs.put(t.io.out)
				t.io.out, t.io.off = nil, 0
			}
			t.io.mu.Unlock()
			break
		}
		n, err := unix.Write(c.fd, t.io.out[t.io.off:])
		switch err {
		case nil:
		case unix.EINTR:
			t.io.mu.Unlock()
			continue
		case unix.EAGAIN:
			n = 0
		default:
			t.io.mu.Unlock()
			c.failWriteLocked()
			return
		}
		t.io.off += n
		done := t.io.off == len(t.io.out)
		c.pending = len(t.io.out) - t.io.off
		t.io.mu.Unlock()
		if done {
			continue
		}
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
	if c.pending == 0 && c.shutWr && !c.stalled && !c.closed {
		c.shutWr = false
		_ = unix.Shutdown(c.fd, unix.SHUT_WR)
	}
}

// sealLocked encrypts the queued frames: frames are coalesced into one
// plaintext batch per record. Lock c.mu must be held.
func (c *Conn) sealLocked() bool {
	s := c.srv
	total := 0
	for _, b := range c.q {
		total += len(b)
	}
	var batch []byte
	if len(c.q) > 1 {
		batch = s.bufs.get(min(total, maxRecordPlain))
	}
	ok := true
	write := func(p []byte) {
		if ok && len(p) > 0 {
			if _, err := c.tls.tc.Write(p); err != nil {
				ok = false
			}
		}
	}
	for _, b := range c.q {
		switch {
		case batch == nil:
			write(b)
		case len(batch)+len(b) <= maxRecordPlain:
			batch = append(batch, b...)
		default:
			write(batch)
			batch = batch[:0]
			if len(b) >= maxRecordPlain {
				write(b)
			} else {
				batch = append(batch, b...)
			}
		}
	}
	if batch != nil {
		write(batch)
		s.bufs.put(batch)
	}
	clear(c.q)
	c.q = c.q[:0]
	c.tls.io.mu.Lock()
	c.pending = len(c.tls.io.out) - c.tls.io.off
	c.tls.io.mu.Unlock()
	return ok
}
