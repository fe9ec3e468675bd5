package main_test

// Acceptance of issue 6, item 4: per-IP and connect-rate limits answer 503
// + Retry-After before the upgrade, are counted in /stats and leave other
// source addresses alone; a connection sending faster than
// -max-message-rate is closed with 1008 and counted.

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/internal/pushdtest"
)

// upgradeFrom dials addr from source address src and sends an upgrade
// request; it returns the status, the Retry-After header and the
// connection (open when upgraded).
func upgradeFrom(t *testing.T, src, addr string) (int, string, net.Conn) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, upgradeReq("/ws")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("from %s: no HTTP answer: %v", src, err)
	}
	_ = c.SetDeadline(time.Time{})
	return resp.StatusCode, resp.Header.Get("Retry-After"), c
}

func TestSecurityAdmission(t *testing.T) {
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{
		"-max-conns-per-ip", "3",
	}})
	addr := p.WSAddr
	rows := []struct {
		name, src  string
		want       int
		retryAfter bool
	}{
		{"1st from .2", "127.0.0.2", 101, false},
		{"2nd from .2", "127.0.0.2", 101, false},
		{"3rd from .2", "127.0.0.2", 101, false},
		{"4th from .2 over -max-conns-per-ip", "127.0.0.2", 503, true},
		{"1st from .3 unaffected", "127.0.0.3", 101, false},
		{"1st from .4 unaffected", "127.0.0.4", 101, false},
	}
	for _, r := range rows {
		status, retry, _ := upgradeFrom(t, r.src, addr)
		if status != r.want || (r.retryAfter && retry == "") {
			t.Fatalf("%s: %d (Retry-After %q), want %d", r.name, status, retry, r.want)
		}
	}
	waitStat(t, p, "refused_per_ip", func(v float64) bool { return v == 1 })
	if v := stats(t, p)["refused_rate"].(float64); v != 0 {
		t.Errorf("/stats refused_rate = %v, want 0", v)
	}
}

func TestSecurityConnectRate(t *testing.T) {
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-connect-rate", "2", "-connect-burst", "6"}})
	addr := p.WSAddr
	// .5 may open 6 at once (the burst); the 7th within the same second
	// is refused with a Retry-After.
	for i := range 6 {
		if status, _, _ := upgradeFrom(t, "127.0.0.5", addr); status != 101 {
			t.Fatalf("connect %d within the burst: %d", i, status)
		}
	}
	status, retry, _ := upgradeFrom(t, "127.0.0.5", addr)
	if n, _ := strconv.Atoi(retry); status != 503 || n < 1 {
		t.Fatalf("over -connect-rate: %d Retry-After %q, want 503 with Retry-After >= 1", status, retry)
	}
	if status, _, _ := upgradeFrom(t, "127.0.0.6", addr); status != 101 {
		t.Fatalf("other IP during .5's refusal: %d", status)
	}
	waitStat(t, p, "refused_rate", func(v float64) bool { return v == 1 })
	// The bucket refills at 2/s.
	time.Sleep(600 * time.Millisecond)
	if status, _, _ := upgradeFrom(t, "127.0.0.5", addr); status != 101 {
		t.Fatalf("after the refill: %d, want 101", status)
	}
	st := stats(t, p)
	if st["refused"].(float64) != 1 || st["refused_per_ip"].(float64) != 0 {
		t.Errorf("/stats refused = %v refused_per_ip = %v, want 1 and 0", st["refused"], st["refused_per_ip"])
	}
}

func TestSecurityMessageRate(t *testing.T) {
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-max-message-rate", "10", "-max-message-burst", "10"}})
	calm := dial(t, p, "/ws?ch=calm")
	ready(t, calm)
	flood := dial(t, p, "/ws")
	for range 50 {
		if err := flood.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
			break
		}
	}
	pongs := 0
	for {
		_ = flood.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := flood.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 1008 {
				t.Fatalf("flooding client: %v, want close 1008", err)
			}
			break
		}
		pongs++
	}
	if pongs < 10 || pongs > 11 {
		t.Errorf("%d replies before the close, want the burst (10)", pongs)
	}
	waitStat(t, p, "rate_limit_closes", func(v float64) bool { return v == 1 })
	// The calm client is unaffected.
	seq := mustPublish(t, p, "calm", `1`)
	expectPush(t, calm, "calm", seq, `1`)
	ready(t, calm)
}
