package poller

import (
	"bufio"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// dialFrom dials addr from a chosen 127.0.0.x source address.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// upgradeStatus sends an upgrade request on conn and returns the response.
func upgradeStatus(t *testing.T, conn net.Conn, addr string) *http.Response {
	t.Helper()
	if _, err := conn.Write(handshakeRequest(addr)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	return resp
}

func TestMaxConnsPerIP(t *testing.T) {
	s, addr := startServer(t, Config{MaxConnsPerIP: 2}, Echo{})
	var held []net.Conn
	for range 2 {
		c := dialFrom(t, "127.0.0.2", addr)
		if r := upgradeStatus(t, c, addr); r.StatusCode != 101 {
			t.Fatalf("status %d, want 101", r.StatusCode)
		}
		held = append(held, c)
	}
	r := upgradeStatus(t, dialFrom(t, "127.0.0.2", addr), addr)
	if r.StatusCode != 503 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection from one IP: %d (Retry-After %q), want 503", r.StatusCode, r.Header.Get("Retry-After"))
	}
	// Another source address is unaffected.
	if r := upgradeStatus(t, dialFrom(t, "127.0.0.3", addr), addr); r.StatusCode != 101 {
		t.Fatalf("other IP: %d, want 101", r.StatusCode)
	}
	eventually(t, "per-IP refusal counted", func() bool {
		st := s.Stats()
		return st.RefusedPerIP == 1 && st.Refused == 1 && st.RefusedRate == 0
	})
	// Closing one frees a slot.
	held[0].Close()
	eventually(t, "slot released", func() bool { return s.Stats().Conns == 2 })
	if r := upgradeStatus(t, dialFrom(t, "127.0.0.2", addr), addr); r.StatusCode != 101 {
		t.Fatalf("after a close: %d, want 101", r.StatusCode)
	}
}

func TestConnectRate(t *testing.T) {
	s, addr := startServer(t, Config{ConnectRate: 0.5, ConnectBurst: 3}, Echo{})
	for i := range 3 {
		if r := upgradeStatus(t, dialFrom(t, "127.0.0.4", addr), addr); r.StatusCode != 101 {
			t.Fatalf("connect %d within the burst: %d", i, r.StatusCode)
		}
	}
	r := upgradeStatus(t, dialFrom(t, "127.0.0.4", addr), addr)
	retry, _ := strconv.Atoi(r.Header.Get("Retry-After"))
	if r.StatusCode != 503 || retry < 1 || retry > 2 {
		t.Fatalf("over the rate: %d Retry-After %q, want 503 with 1..2 s", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := upgradeStatus(t, dialFrom(t, "127.0.0.5", addr), addr); r.StatusCode != 101 {
		t.Fatalf("other IP: %d, want 101", r.StatusCode)
	}
	eventually(t, "rate refusal counted", func() bool { return s.Stats().RefusedRate == 1 })
}

func TestAdmissionSweep(t *testing.T) {
	a := newAdmission(Config{MaxConnsPerIP: 1, ConnectRate: 1e9})
	for i := range 3 * minSweep {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		st, ok, _, _ := a.admit(ip)
		if !ok {
			t.Fatalf("admit %v refused", ip)
		}
		a.release(st)
	}
	if n := len(a.ips); n > 2*minSweep {
		t.Fatalf("%d idle sources kept, want at most %d", n, 2*minSweep)
	}
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	if _, ok, _, _ := a.admit(v6a); !ok {
		t.Fatal("first v6 refused")
	}
	if _, ok, reason, _ := a.admit(v6b); ok || reason != "per_ip" {
		t.Fatalf("same /64: ok=%v reason=%q, want per_ip refusal", ok, reason)
	}
}

type expirer struct {
	recorder
	in time.Duration
}

func (e *expirer) Upgrade(c *Conn, _ *Request) (string, error) {
	c.SetExpiry(time.Now().Add(e.in), 4003, "token expired")
	return "", nil
}

func TestSetExpiryClosesOnTheWheel(t *testing.T) {
	h := &expirer{in: 300 * time.Millisecond}
	s, addr := startServer(t, Config{}, h)
	c := dialRaw(t, addr)
	start := time.Now()
	c.upgrade(0)
	// Traffic does not postpone the expiry.
	c.writeChopped(c.frame(ws.OpText, true, []byte("hi")), 0)
	if op, p, err := c.readFrame(); err != nil || op != ws.OpText || string(p) != "hi" {
		t.Fatalf("echo: %v %q %v", op, p, err)
	}
	code := c.expectClose()
	took := time.Since(start)
	if code != 4003 {
		t.Fatalf("close code %d, want 4003", code)
	}
	if took < 250*time.Millisecond || took > 2*time.Second {
		t.Fatalf("closed after %v, want about 300ms", took)
	}
	eventually(t, "expiry counted", func() bool { return s.Stats().Expired == 1 })
	eventually(t, "handler saw 4003", func() bool {
		cl := h.closes()
		return len(cl) == 1 && cl[0] == 4003
	})
}
