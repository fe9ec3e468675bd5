package srcaddr

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Dialer dials TCP connections from a fixed set of source addresses, taken
// in round-robin order, with IP_BIND_ADDRESS_NO_PORT set before bind(2).
// It is safe for concurrent use. Build it with NewDialer.
type Dialer struct {
	sources []netip.Addr
	timeout time.Duration
	next    atomic.Uint64
}

// NewDialer returns a Dialer over sources (copied). timeout bounds each dial
// including connect(2); 0 means no bound beyond the context.
func NewDialer(sources []netip.Addr, timeout time.Duration) (*Dialer, error) {
	if len(sources) == 0 {
		return nil, ErrEmpty
	}
	return &Dialer{sources: append([]netip.Addr(nil), sources...), timeout: timeout}, nil
}

// Sources returns a copy of the dialer's source addresses.
func (d *Dialer) Sources() []netip.Addr { return append([]netip.Addr(nil), d.sources...) }

// NextSource returns the source address the next dial will use and advances
// the round-robin position.
func (d *Dialer) NextSource() netip.Addr {
	i := d.next.Add(1) - 1
	return d.sources[i%uint64(len(d.sources))]
}

// DialContext connects to address ("host:port", a literal IP; network
// "tcp", "tcp4" or "tcp6") from the next source address. Its signature
// matches net.Dialer.DialContext, so it plugs into http.Transport and
// WebSocket dialers. Errors are wrapped with the source address.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	src := d.NextSource()
	if dst, err := netip.ParseAddrPort(address); err == nil && dst.Addr().Unmap().Is4() != src.Is4() {
		return nil, fmt.Errorf("dial %s from %s: %w", address, src, ErrFamily)
	}
	nd := net.Dialer{
		Timeout:   d.timeout,
		LocalAddr: &net.TCPAddr{IP: src.AsSlice(), Port: 0},
		Control:   bindNoPort,
	}
	c, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", address, src, err)
	}
	return c, nil
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT. net.Dialer calls Control after
// socket(2) and before bind(2), which is exactly when the option must be set:
// bind then records only the address and connect(2) picks a port that makes
// the 4-tuple unique (Linux ≥ 4.2). The option lives at the IP level for both
// IPv4 and IPv6 sockets.
func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return fmt.Errorf("raw control: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("setsockopt IP_BIND_ADDRESS_NO_PORT: %w", serr)
	}
	return nil
}

// BindNoPort reports whether the IP_BIND_ADDRESS_NO_PORT option is set on c
// (a *net.TCPConn or anything with SyscallConn). Tests and preflight use it.
func BindNoPort(c syscall.Conn) (bool, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, fmt.Errorf("syscall conn: %w", err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT)
	}); err != nil {
		return false, fmt.Errorf("raw control: %w", err)
	}
	if serr != nil {
		return false, fmt.Errorf("getsockopt IP_BIND_ADDRESS_NO_PORT: %w", serr)
	}
	return v != 0, nil
}
