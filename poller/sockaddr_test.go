package poller

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// accept4 and peerAddr read the same addresses x/sys does, and peerAddr
// allocates nothing.
func TestRawSockaddrs(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			host := "127.0.0.1:0"
			if network == "tcp6" {
				host = "[::1]:0"
			}
			ln, err := net.Listen(network, host)
			if err != nil {
				t.Skipf("no %s loopback here: %v", network, err) // tcp4 below is the check that must run
			}
			defer ln.Close()
			lfd := fdOfListener(t, ln)
			cl, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			want := cl.LocalAddr().(*net.TCPAddr).AddrPort()
			want = netip.AddrPortFrom(want.Addr().Unmap(), want.Port())
			var nfd int
			var got netip.AddrPort
			for range 100 {
				if nfd, got, err = accept4(lfd, unix.SOCK_CLOEXEC); err != unix.EAGAIN {
					break
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(nfd)
			if got != want {
				t.Fatalf("accept4 peer %v, want %v", got, want)
			}
			sa, err := unix.Getpeername(nfd)
			if err != nil {
				t.Fatal(err)
			}
			peer, err := peerAddr(nfd)
			if err != nil || peer != want {
				t.Fatalf("peerAddr %v %v, want %v", peer, err, want)
			}
			if ta := tcpAddr(sa).(*net.TCPAddr); ta.Port != int(peer.Port()) || !ta.IP.Equal(peer.Addr().AsSlice()) {
				t.Fatalf("x/sys says %v, peerAddr %v", ta, peer)
			}
			if n := testing.AllocsPerRun(100, func() { _, _ = peerAddr(nfd) }); n != 0 {
				t.Fatalf("peerAddr allocates %v times", n)
			}
		})
	}
	if _, err := peerAddr(-1); err == nil {
		t.Fatal("peerAddr(-1): no error")
	}
}

func fdOfListener(t *testing.T, ln net.Listener) int {
	t.Helper()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}
