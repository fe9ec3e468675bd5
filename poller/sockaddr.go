package poller

import (
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// accept4 and peerAddr are unix.Accept4 and unix.Getpeername without
// their allocations (x/sys lets the raw address escape and builds a
// Sockaddr from it): a connection's address is read into the stack and
// returned as a netip.AddrPort. About 250 bytes of garbage less per
// connection.

// accept4 accepts one connection on the listening socket fd.
func accept4(fd, flags int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	l := uint32(unix.SizeofSockaddrAny)
	r, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), rawAddrPort(&rsa), nil
}

// peerAddr returns the peer address of the connected socket fd.
func peerAddr(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	l := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)))
	if e != 0 {
		return netip.AddrPort{}, e
	}
	return rawAddrPort(&rsa), nil
}

// rawAddrPort decodes an AF_INET or AF_INET6 address (IPv4-mapped IPv6
// addresses unmapped); the zero AddrPort for any other family.
func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), ntohs(a.Port))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), ntohs(a.Port))
	}
	return netip.AddrPort{}
}

// ntohs converts a port in network byte order, as the kernel stores it.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// netAddr returns ap as a *net.TCPAddr (an empty one for the zero
// AddrPort).
func netAddr(ap netip.AddrPort) net.Addr {
	if !ap.IsValid() {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}
