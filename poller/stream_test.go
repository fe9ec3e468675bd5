package poller

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// streamer is a Handler whose plain GET /s opens a text stream; /bad gets
// a whole 403 response; anything else is passed on.
type streamer struct {
	recorder
	smu   sync.Mutex
	conns []*Conn
	reqs  []Request
}

func (h *streamer) Stream(c *Conn, r *Request) (StreamResponse, bool) {
	h.smu.Lock()
	h.reqs = append(h.reqs, *r)
	h.smu.Unlock()
	switch r.URI {
	case "/s":
		return StreamResponse{Header: "Content-Type: text/plain\r\n", Body: []byte("hello\n"), Open: true, Heartbeat: []byte("hb\n")}, true
	case "/bad":
		return StreamResponse{Status: http.StatusForbidden, Header: "Content-Type: text/plain\r\n", Body: []byte("no\n")}, true
	}
	return StreamResponse{}, false
}

func (h *streamer) StreamEnd(_ *Conn, code ws.StatusCode, reason string) []byte {
	return []byte("end " + reason + "\n")
}

func (h *streamer) Open(c *Conn) {
	h.recorder.Open(c)
	h.smu.Lock()
	h.conns = append(h.conns, c)
	h.smu.Unlock()
}

func (h *streamer) conn(i int) *Conn {
	h.smu.Lock()
	defer h.smu.Unlock()
	if i < len(h.conns) {
		return h.conns[i]
	}
	return nil
}

// TestStreamLifecycle drives a Streamer stream over TCP: the head without
// a length, the first bytes, Send, heartbeats, inbound bytes ignored, Close
// writing StreamEnd then a FIN, and Handler.Close once; a refusal is a
// whole response; other paths fall through to 400.
func TestStreamLifecycle(t *testing.T) {
	h := &streamer{}
	srv, addr := startServer(t, Config{PingInterval: 200 * time.Millisecond}, h)

	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(nc, "GET /s HTTP/1.1\r\nHost: x\r\nOrigin: http://o.example\r\nLast-Event-ID: e1:7\r\nAuthorization: Bearer t\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain" || resp.ContentLength != -1 || !resp.Close {
		t.Fatalf("head: %d %v len %d close %v", resp.StatusCode, resp.Header, resp.ContentLength, resp.Close)
	}
	body := bufio.NewReader(resp.Body)
	line := func() string {
		t.Helper()
		l, err := body.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, l)
		}
		return l
	}
	if l := line(); l != "hello\n" {
		t.Fatalf("first bytes %q", l)
	}
	eventually(t, "Open", func() bool { return h.conn(0) != nil })
	c := h.conn(0)
	if !c.Streaming() || !c.Open() {
		t.Fatalf("Streaming %v Open %v", c.Streaming(), c.Open())
	}
	h.smu.Lock()
	r := h.reqs[0]
	h.smu.Unlock()
	if r.Method != "GET" || r.Origin != "http://o.example" || r.LastEventID != "e1:7" || r.Authorization != "Bearer t" || r.Host != "x" {
		t.Fatalf("request %+v", r)
	}
	// Inbound bytes are dropped, not parsed as frames.
	if _, err := io.WriteString(nc, "\x88\x80garbage that is no frame\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.Send([]byte("push 1\n")); err != nil {
		t.Fatal(err)
	}
	if l := line(); l != "push 1\n" {
		t.Fatalf("push %q", l)
	}
	// Heartbeats come while it is quiet.
	start := time.Now()
	if l := line(); l != "hb\n" {
		t.Fatalf("heartbeat %q", l)
	}
	if l := line(); l != "hb\n" {
		t.Fatalf("second heartbeat %q", l)
	}
	t.Logf("two heartbeats after %v (PingInterval 200ms)", time.Since(start).Round(time.Millisecond))
	if err := c.Close(ws.StatusGoingAway, "bye"); err != nil {
		t.Fatal(err)
	}
	if err := c.Send([]byte("late\n")); err != ErrClosed {
		t.Fatalf("Send after Close: %v", err)
	}
	rest, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("read to EOF: %v", err)
	}
	if got := strings.ReplaceAll(string(rest), "hb\n", ""); got != "end bye\n" {
		t.Fatalf("tail %q", rest)
	}
	nc.Close()
	eventually(t, "Handler.Close", func() bool { return len(h.closes()) == 1 })
	if got := h.closes()[0]; got != ws.StatusGoingAway {
		t.Fatalf("close code %d", got)
	}
	if st := srv.Stats(); st.Streams != 1 {
		t.Fatalf("Streams %d", st.Streams)
	}

	for _, tc := range []struct {
		uri    string
		status int
		body   string
	}{{"/bad", 403, "no\n"}, {"/other", 400, ""}} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
		_, _ = io.WriteString(nc, "GET "+tc.uri+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		nc.Close()
		if resp.StatusCode != tc.status || tc.body != "" && string(b) != tc.body {
			t.Fatalf("%s: %d %q", tc.uri, resp.StatusCode, b)
		}
	}
}

// TestStreamPeerGone: a stream whose peer goes away ends with
// Handler.Close, and the connection leaves the registry.
func TestStreamPeerGone(t *testing.T) {
	h := &streamer{}
	srv, addr := startServer(t, Config{}, h)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(nc, "GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
	eventually(t, "Open", func() bool { return h.conn(0) != nil })
	nc.Close()
	eventually(t, "Handler.Close", func() bool { return len(h.closes()) == 1 })
	eventually(t, "no connections", func() bool { return srv.Stats().Conns == 0 })
}
