package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// wss connections on the loadtest loops. The TLS handshake is the only
// blocking step: it runs on a goroutine that lives for the handshake only
// (bounded by -max-handshakes, as every handshake in flight is, and by
// -handshake-timeout), over a duplicate of the socket parked in Go's
// netpoller, while the socket is out of the loop's epoll set. When it
// ends, the goroutine puts the socket back (EPOLL_CTL_ADD: it is
// writable, so the loop sees it at once) and the loop carries on with the
// upgrade. From then on crypto/tls runs over clientIO, fed from the
// loop's reads: Read serves the ciphertext just read and otherwise
// returns errWouldBlock (Temporary: crypto/tls keeps a partial record),
// Write collects ciphertext for one write(2). A held wss connection costs
// its crypto/tls state and no goroutine.

// errWouldBlock tells crypto/tls that no more ciphertext is available.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tls: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// tlsConn is a wss connection's TLS layer.
type tlsConn struct {
	tc   *tls.Conn
	io   clientIO
	done atomic.Int32 // 0 handshaking, 1 done, 2 failed
	fail string       // error class when failed; written before done
}

// clientIO is the net.Conn under tlsConn.tc.
type clientIO struct {
	hs  *os.File // during the handshake
	in  []byte
	out []byte
}

func (c *clientIO) Read(p []byte) (int, error) {
	if c.hs != nil {
		return c.hs.Read(p)
	}
	if len(c.in) == 0 {
		return 0, errWouldBlock
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *clientIO) Write(p []byte) (int, error) {
	if c.hs != nil {
		return c.hs.Write(p)
	}
	c.out = append(c.out, p...)
	return len(p), nil
}

func (c *clientIO) Close() error                     { return nil }
func (c *clientIO) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *clientIO) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *clientIO) SetDeadline(time.Time) error      { return nil }
func (c *clientIO) SetReadDeadline(time.Time) error  { return nil }
func (c *clientIO) SetWriteDeadline(time.Time) error { return nil }

// startTLS takes conns[i]'s connected socket out of the epoll set and
// runs its TLS handshake on a goroutine.
func (l *loop) startTLS(i int, now int64) {
	c := &l.conns[i]
	fd := int(c.fd)
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	dfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		l.fail(i, "tls_dup_"+errClass(err), now)
		return
	}
	t := &tlsConn{}
	t.io.hs = os.NewFile(uintptr(dfd), "wss")
	t.tc = tls.Client(&t.io, l.tlsCfg)
	c.tls = t
	l.setPhase(c, stTLS, c.phaseNs) // the connect phase's clock keeps running
	epfd, timeout := l.epfd, l.cfg.HandshakeTimeout
	l.tlsWG.Add(1)
	go func() {
		defer l.tlsWG.Done()
		_ = t.io.hs.SetDeadline(time.Now().Add(timeout))
		err := t.tc.HandshakeContext(context.Background())
		_ = t.io.hs.Close()
		t.io.hs = nil
		state := int32(1)
		if err != nil {
			state = 2
			t.fail = "tls_handshake"
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.fail = "timeout_tls"
			}
		}
		t.done.Store(state)
		// Back into the loop's set: writable at once, so the loop sees it.
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP, Fd: int32(fd)}
		_ = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	}()
}

// tlsReady runs on the loop when a handshaking wss socket is back in the
// epoll set: it records the outcome and sends the upgrade request.
func (l *loop) tlsReady(i int, now int64) {
	c := &l.conns[i]
	t := c.tls
	switch t.done.Load() {
	case 0:
		return
	case 2:
		l.fail(i, t.fail, now)
		return
	}
	st := t.tc.ConnectionState()
	l.stats.tls[tls.VersionName(st.Version)]++
	if st.DidResume {
		l.stats.tls["resumed"]++
	}
	l.wbuf = l.upgrade(l.wbuf[:0], c)
	if !l.write(i, l.wbuf, now) {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: c.fd}
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, int(c.fd), &ev)
	l.setPhase(c, stHandshake, c.phaseNs)
}

// writeTLS encrypts b and writes the record(s) with one write(2).
func (l *loop) writeTLS(c *conn, b []byte) (int, error) {
	t := c.tls
	t.io.out = t.io.out[:0]
	if _, err := t.tc.Write(b); err != nil {
		return 0, err
	}
	n, err := unix.Write(int(c.fd), t.io.out)
	if err == nil && n == len(t.io.out) {
		n = len(b)
	}
	t.io.out = nil
	return n, err
}

// readTLS reads ciphertext and decrypts it into dst. It returns the
// plaintext length; n == 0 with a nil error means a partial record.
func (l *loop) readTLS(c *conn, dst []byte) (int, error) {
	raw := l.raw
	n, err := unix.Read(int(c.fd), raw)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, errEOF
	}
	t := c.tls
	t.io.in = raw[:n]
	m := 0
	for m < len(dst) {
		k, err := t.tc.Read(dst[m:])
		m += k
		if err != nil {
			t.io.in = nil
			if errors.Is(err, errWouldBlock) {
				return m, nil
			}
			return m, errTLS
		}
	}
	t.io.in = nil
	return m, errTLS // dst too small (cannot happen: raw is half its size)
}

// closeTLS ends the handshakes still running when the loop stops: their
// sockets are shut down, so the blocked reads return at once.
func (l *loop) closeTLS() {
	for i := range l.conns {
		if c := &l.conns[i]; c.state == stTLS && c.fd >= 0 {
			_ = unix.Shutdown(int(c.fd), unix.SHUT_RDWR)
		}
	}
	l.tlsWG.Wait()
}
