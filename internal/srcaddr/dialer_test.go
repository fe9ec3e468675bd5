package srcaddr

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// acceptAll accepts on ln until it is closed and sends each conn on out.
func acceptAll(t *testing.T, ln net.Listener) <-chan net.Conn {
	t.Helper()
	out := make(chan net.Conn, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			out <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(out)
		for c := range out {
			c.Close()
		}
	})
	return out
}

func TestDialerRoundRobin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := acceptAll(t, ln)
	srcs, err := ParseList("127.0.3.1,127.0.3.2,127.0.3.3")
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDialer(srcs, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 9 {
		c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if want := srcs[i%3]; local != want {
			t.Fatalf("dial %d: local address %v, want %v", i, local, want)
		}
		on, err := BindNoPort(c.(*net.TCPConn))
		if err != nil || !on {
			t.Fatalf("dial %d: IP_BIND_ADDRESS_NO_PORT = %v, %v; want set", i, on, err)
		}
		select {
		case sc := <-accepted:
			remote := sc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			sc.Close()
			if remote != local {
				t.Fatalf("server saw %v, client bound %v", remote, local)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("server did not accept")
		}
	}
}

// TestBindNoPortDefersPort shows what the option buys: after bind(2) to
// (ip, 0) the kernel has reserved no port yet, so the ephemeral range is
// spent per 4-tuple at connect(2) time rather than per source address.
func TestBindNoPortDefersPort(t *testing.T) {
	for _, noPort := range []bool{false, true} {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if noPort {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
				unix.Close(fd)
				t.Fatal(err)
			}
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 3, 9}}); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		sa, err := unix.Getsockname(fd)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		port := sa.(*unix.SockaddrInet4).Port
		if noPort && port != 0 {
			t.Errorf("with IP_BIND_ADDRESS_NO_PORT bind reserved port %d, want 0", port)
		}
		if !noPort && port == 0 {
			t.Errorf("without the option bind reserved no port; test premise broken")
		}
	}
}

// TestDialerManyConnsFewSources opens many connections from one source
// address to two destinations and checks each gets a distinct port per
// destination; it logs how many ports both destinations share, which only
// the deferred port choice allows (the overlap depends on the kernel's
// port-search offsets, so it is reported, not asserted).
func TestDialerManyConnsFewSources(t *testing.T) {
	const perDst = 600
	var lns [2]net.Listener
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		acceptAll(t, ln) // server ends stay open until cleanup
	}
	src := []netip.Addr{netip.MustParseAddr("127.0.3.20")}
	d, err := NewDialer(src, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ports := [2]map[uint16]bool{{}, {}}
	for i := range 2 * perDst {
		dst := i % 2
		c, err := d.DialContext(context.Background(), "tcp4", lns[dst].Addr().String())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		ports[dst][c.LocalAddr().(*net.TCPAddr).AddrPort().Port()] = true
	}
	shared := 0
	for p := range ports[0] {
		if ports[1][p] {
			shared++
		}
	}
	t.Logf("%d conns from one source to two destinations; %d source ports used by both", 2*perDst, shared)
	if len(ports[0]) != perDst || len(ports[1]) != perDst {
		t.Fatalf("distinct ports per destination = %d, %d; want %d", len(ports[0]), len(ports[1]), perDst)
	}
}

func TestDialerFamilyMismatch(t *testing.T) {
	d, err := NewDialer([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.DialContext(context.Background(), "tcp", "[::1]:9"); !errors.Is(err, ErrFamily) {
		t.Fatalf("IPv4 source to IPv6 destination: error %v, want ErrFamily", err)
	}
	if _, err := NewDialer(nil, 0); !errors.Is(err, ErrEmpty) {
		t.Fatalf("NewDialer(nil) error %v, want ErrEmpty", err)
	}
}

func TestNofile(t *testing.T) {
	r, err := Nofile()
	if err != nil {
		t.Fatal(err)
	}
	if r.Soft > r.Hard || r.Hard == 0 {
		t.Fatalf("Nofile() = %+v", r)
	}
	r2, err := RaiseNofile()
	if err != nil {
		t.Fatal(err)
	}
	if r2.Soft != r2.Hard || r2.Hard != r.Hard {
		t.Fatalf("RaiseNofile() = %+v, want soft = hard = %d", r2, r.Hard)
	}
}
