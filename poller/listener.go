package poller

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// listener is a non-blocking TCP listener that netpoll drives. It exists
// for three reasons netpoll's own listener cannot serve:
//
//   - SO_REUSEPORT, so several pushd processes share one port;
//   - admission before netpoll allocates anything: above MaxConns the
//     connection gets a 503 and is closed right in Accept;
//   - EMFILE shedding: netpoll's answer to EMFILE is to detach the listener
//     and retry forever, leaving clients hanging in the backlog. We keep one
//     spare descriptor; on EMFILE we release it, accept the pending
//     connection, refuse it with a 503 and take the spare back. Refusals
//     are clean and bounded by the arrival rate, never a spin.
//
// Accept returns (nil, nil) when it consumed a connection without handing
// it over; netpoll treats that as EAGAIN and keeps the listener armed
// (level-triggered), so the next pending connection raises another event.
type listener struct {
	fd     int
	addr   net.Addr
	admit  func() bool // reports whether one more connection fits
	refuse func(reason string)
	// admitFrom, when set, applies the per-source limits (admission.admit).
	admitFrom func(ip netip.Addr) (src *ipState, ok bool, reason string, retry int)

	mu     sync.Mutex // guards spare and closed against Close
	spare  int
	closed atomic.Bool
}

// refusal is written to connections turned away before the upgrade.
const refusal = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nserver at capacity\r\n"

// Listen opens a TCP listener on addr ("host:port"; port 0 picks one) with
// SO_REUSEADDR and, when reusePort is set, SO_REUSEPORT.
func listen(addr string, reusePort bool, backlog int) (*listener, error) {
	ap, err := resolve(addr)
	if err != nil {
		return nil, err
	}
	family := unix.AF_INET
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	fail := func(op string, err error) (*listener, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %s: %w", addr, op, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("SO_REUSEPORT", err)
		}
	}
	if err := unix.Bind(fd, sockaddr(ap, family)); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail("listen", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	spare, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open spare fd", err)
	}
	return &listener{fd: fd, addr: tcpAddr(sa), spare: spare}, nil
}

func resolve(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	ta, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: %w", addr, err)
	}
	return ta.AddrPort(), nil
}

func sockaddr(ap netip.AddrPort, family int) unix.Sockaddr {
	if family == unix.AF_INET {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func tcpAddr(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return &net.TCPAddr{}
}

// Accept implements net.Listener for netpoll. See the type comment for the
// (nil, nil) contract.
func (l *listener) Accept() (net.Conn, error) {
	nfd, peer, _, err := l.acceptFD()
	if err != nil || nfd < 0 {
		return nil, err
	}
	return &rawConn{fd: nfd, local: l.addr, remote: netAddr(peer)}, nil
}

// acceptFD accepts one connection and applies admission. It returns -1
// (and no error) when there was none or it was turned away, so the caller
// simply waits for the next readiness event; src is the source's admission
// state the connection must release (nil without per-source limits).
func (l *listener) acceptFD() (nfd int, peer netip.AddrPort, src *ipState, err error) {
	if l.closed.Load() {
		return -1, netip.AddrPort{}, nil, ErrListenerClosed
	}
	nfd, peer, err = accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	switch err {
	case nil:
	case unix.EAGAIN, unix.EINTR, unix.ECONNABORTED:
		return -1, netip.AddrPort{}, nil, nil
	case unix.EMFILE, unix.ENFILE:
		l.shed()
		return -1, netip.AddrPort{}, nil, nil
	default:
		if l.closed.Load() {
			return -1, netip.AddrPort{}, nil, ErrListenerClosed
		}
		return -1, netip.AddrPort{}, nil, fmt.Errorf("accept: %w", err)
	}
	if l.admit != nil && !l.admit() {
		l.turnAway(nfd, "capacity")
		return -1, netip.AddrPort{}, nil, nil
	}
	if l.admitFrom != nil {
		var ok bool
		var reason string
		var retry int
		if src, ok, reason, retry = l.admitFrom(peer.Addr()); !ok {
			l.turnAwayWith(nfd, refusalWith(retry, "too many connections from your address"), reason)
			return -1, netip.AddrPort{}, nil, nil
		}
	}
	return nfd, peer, src, nil
}

// shed refuses one pending connection while the process is out of file
// descriptors, using the spare descriptor.
func (l *listener) shed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.spare < 0 || l.closed.Load() {
		// No spare: pause briefly so a persistent EMFILE cannot spin the
		// poller; the backlog holds the client meanwhile.
		time.Sleep(10 * time.Millisecond)
		return
	}
	unix.Close(l.spare)
	l.spare = -1
	if nfd, _, err := unix.Accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC); err == nil {
		l.turnAway(nfd, "emfile")
	}
	if fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		l.spare = fd
	}
}

// turnAway writes the 503 refusal (best effort: the socket is fresh, so its
// send buffer has room) and closes nfd.
func (l *listener) turnAway(nfd int, reason string) {
	l.turnAwayWith(nfd, []byte(refusal), reason)
}

// turnAwayWith counts the refusal, writes msg (an HTTP refusal) and closes
// nfd. The count comes first so that anyone who has seen the refusal also
// sees it counted in Stats.
func (l *listener) turnAwayWith(nfd int, msg []byte, reason string) {
	if l.refuse != nil {
		l.refuse(reason)
	}
	_, _ = unix.Write(nfd, msg)
	// SHUT_WR first so the refusal is followed by a FIN; close(2) alone
	// would reset the connection when the client's request is unread.
	_ = unix.Shutdown(nfd, unix.SHUT_WR)
	unix.Close(nfd)
}

// Close stops the listener. It is idempotent.
func (l *listener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.mu.Lock()
	if l.spare >= 0 {
		unix.Close(l.spare)
		l.spare = -1
	}
	l.mu.Unlock()
	// netpoll detaches the descriptor before calling Close during its
	// shutdown; when we are closed first, close(2) removes it from epoll.
	return unix.Close(l.fd)
}

// Addr implements net.Listener.
func (l *listener) Addr() net.Addr { return l.addr }

// Fd implements netpoll.Listener.
func (l *listener) Fd() int { return l.fd }

// rawConn hands an accepted descriptor to netpoll, which only uses Fd and
// the addresses; the read/write methods exist to satisfy net.Conn and are
// never called (netpoll reads and writes the descriptor itself).
type rawConn struct {
	fd            int
	local, remote net.Addr
}

func (c *rawConn) Read([]byte) (int, error)         { return 0, ErrClosed }
func (c *rawConn) Write([]byte) (int, error)        { return 0, ErrClosed }
func (c *rawConn) Close() error                     { return unix.Close(c.fd) }
func (c *rawConn) LocalAddr() net.Addr              { return c.local }
func (c *rawConn) RemoteAddr() net.Addr             { return c.remote }
func (c *rawConn) SetDeadline(time.Time) error      { return nil }
func (c *rawConn) SetReadDeadline(time.Time) error  { return nil }
func (c *rawConn) SetWriteDeadline(time.Time) error { return nil }
func (c *rawConn) Fd() int                          { return c.fd }
