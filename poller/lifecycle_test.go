package poller

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

// A connection whose peer never reads is closed as a slow consumer once
// its socket took nothing for WriteTimeout, and counted.
func TestWriteTimeoutClosesStalledConn(t *testing.T) {
	opened := make(chan *Conn, 1)
	rec := &recorder{}
	h := &openRecorder{recorder: rec, ch: opened}
	s, addr := startServer(t, Config{WriteTimeout: 300 * time.Millisecond, MaxPendingBytes: 4 << 20}, h)
	c := dialRaw(t, addr)
	c.upgrade(0)
	sc := <-opened
	frame := codec.CompileFrame(ws.OpBinary, bytes.Repeat([]byte{'x'}, 64<<10))
	for i := 0; i < 64; i++ { // 4 MiB: far beyond both sockets' buffers
		if err := sc.Send(frame); err != nil {
			break
		}
	}
	eventually(t, "write timeout", func() bool { return s.Stats().WriteTimeouts == 1 })
	eventually(t, "close callback", func() bool { return len(rec.closes()) == 1 })
	if got := rec.closes()[0]; got != StatusSlowConsumer {
		t.Fatalf("closed with %d, want %d", got, StatusSlowConsumer)
	}
}

// A stalled socket that drains resumes writing and reports Drained.
func TestDrainedAfterStall(t *testing.T) {
	opened := make(chan *Conn, 1)
	h := &drainRecorder{openHook: openHook{ch: opened}}
	s, addr := startServer(t, Config{MaxPendingBytes: 8 << 20}, h)
	c := dialRaw(t, addr)
	c.upgrade(0)
	sc := <-opened
	payload := bytes.Repeat([]byte{'d'}, 32<<10)
	const n = 128 // 4 MiB
	for i := range n {
		if err := sc.Send(codec.CompileFrame(ws.OpBinary, append([]byte{byte(i)}, payload...))); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if s.Stats().Stalls == 0 {
		t.Fatal("socket never stalled")
	}
	for i := range n {
		op, p, err := c.readFrame()
		if err != nil || op != ws.OpBinary || p[0] != byte(i) {
			t.Fatalf("frame %d: op=%v err=%v", i, op, err)
		}
	}
	eventually(t, "Drained callback", func() bool { return h.drained.Load() > 0 })
	if got := sc.Pending(); got != 0 {
		t.Fatalf("pending %d after the drain", got)
	}
}

// Each visits every open connection; StopAccepting refuses new TCP
// connections while the existing ones keep working.
func TestEachAndStopAccepting(t *testing.T) {
	s, addr := startServer(t, Config{}, Echo{})
	clients := make([]*rawClient, 5)
	for i := range clients {
		clients[i] = dialRaw(t, addr)
		clients[i].upgrade(0)
	}
	eventually(t, "upgrades", func() bool { return s.Stats().Upgraded == 5 })
	seen := 0
	s.Each(func(c *Conn) bool { seen++; return true })
	if seen != 5 {
		t.Fatalf("Each saw %d connections, want 5", seen)
	}
	stopped := 0
	s.Each(func(*Conn) bool { stopped++; return stopped < 2 })
	if stopped != 2 {
		t.Fatalf("Each went on after false: %d calls", stopped)
	}
	s.StopAccepting()
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("dial succeeded after StopAccepting")
	}
	for i, c := range clients {
		msg := []byte{'m', byte(i)}
		c.writeChopped(c.frame(ws.OpBinary, true, msg), 0)
		if op, p, err := c.readFrame(); err != nil || op != ws.OpBinary || !bytes.Equal(p, msg) {
			t.Fatalf("client %d after StopAccepting: op=%v p=%q err=%v", i, op, p, err)
		}
	}
}

// A plain GET goes to the HTTPResponder; other requests keep their 400.
func TestHTTPResponder(t *testing.T) {
	s, addr := startServer(t, Config{}, pageServer{})
	get := func(req string) (*http.Response, string) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}
	resp, body := get("GET /page?x=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
	if resp.StatusCode != 200 || body != "page /page?x=1 on h" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("GET /page: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, _ := get("GET /other HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 400 {
		t.Fatalf("declined GET: %d, want 400", resp.StatusCode)
	}
	if resp, _ := get("POST /page HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"); resp.StatusCode != 400 {
		t.Fatalf("POST: %d, want 400", resp.StatusCode)
	}
	if got := s.Stats().HTTPResponses; got != 1 {
		t.Fatalf("HTTPResponses = %d, want 1", got)
	}
	// Upgrades still work on the same listener.
	c := dialRaw(t, addr)
	c.upgrade(0)
	c.writeChopped(c.frame(ws.OpText, true, []byte("hi")), 0)
	if _, p, err := c.readFrame(); err != nil || string(p) != "hi" {
		t.Fatalf("echo after HTTP: %q %v", p, err)
	}
}

type pageServer struct{ Echo }

func (pageServer) Respond(r *Request) (int, string, []byte, bool) {
	if !strings.HasPrefix(r.URI, "/page") {
		return 0, "", nil, false
	}
	return 200, "text/plain", []byte("page " + r.URI + " on " + r.Host), true
}

type openRecorder struct {
	*recorder
	ch chan *Conn
}

func (h *openRecorder) Open(c *Conn) {
	h.recorder.Open(c)
	h.ch <- c
}

type drainRecorder struct {
	openHook
	drained atomic.Int32
}

func (h *drainRecorder) Drained(*Conn) { h.drained.Add(1) }
