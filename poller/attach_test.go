package poller

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/pushd/pushd/codec"
)

// socketPair returns the server end's descriptor and the client end as a
// net.Conn.
func socketPair(t *testing.T) (int, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "client")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return fds[0], conn
}

// TestAttach: a socket handed over with Attach upgrades, echoes and
// closes like an accepted one; admission applies to the given address.
func TestAttach(t *testing.T) {
	h := &recorder{}
	s, _ := startServer(t, Config{MaxConnsPerIP: 1}, h)
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
	fd, conn := socketPair(t)
	if err := s.Attach(fd, remote); err != nil {
		t.Fatal(err)
	}
	c := &rawClient{t: t, conn: conn, br: bufio.NewReader(conn), cfg: codec.Config{Role: codec.RoleClient}}
	c.p.Init(&c.cfg)
	c.upgrade(7)
	c.writeChopped(c.frame(ws.OpText, true, []byte("over a socketpair")), 3)
	if op, p, err := c.readFrame(); err != nil || op != ws.OpText || string(p) != "over a socketpair" {
		t.Fatalf("echo: %v %q %v", op, p, err)
	}
	// A second socket from the same address is refused with the 503.
	fd2, conn2 := socketPair(t)
	if err := s.Attach(fd2, remote); err == nil {
		t.Fatal("second attach from one address admitted with MaxConnsPerIP 1")
	}
	_ = conn2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn2), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("refused attach answered %v %v", resp, err)
	}
	c.writeChopped(c.frame(ws.OpClose, true, codec.AppendClose(nil, 1000, "")[2:]), 0)
	c.expectEOF()
	eventually(t, "closed and released", func() bool { return s.Stats().Conns == 0 && len(h.closes()) == 1 })
	fd3, conn3 := socketPair(t)
	if err := s.Attach(fd3, remote); err != nil {
		t.Fatalf("attach after the release: %v", err)
	}
	c3 := &rawClient{t: t, conn: conn3, br: bufio.NewReader(conn3), cfg: codec.Config{Role: codec.RoleClient}}
	c3.p.Init(&c3.cfg)
	c3.upgrade(0)
}
