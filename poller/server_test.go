package poller

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

func TestEchoSizes(t *testing.T) {
	_, addr := startServer(t, Config{MaxFrameSize: 1 << 20, MaxMessageSize: 1 << 20}, Echo{})
	c := dialRaw(t, addr)
	c.upgrade(0)
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 20} {
		msg := bytes.Repeat([]byte{'x'}, n)
		c.writeChopped(c.frame(ws.OpBinary, true, msg), 0)
		op, got, err := c.readFrame()
		if err != nil || op != ws.OpBinary || !bytes.Equal(got, msg) {
			t.Fatalf("size %d: op=%v len=%d err=%v", n, op, len(got), err)
		}
	}
}

// Every byte arrives in its own TCP segment: the handshake, a fragmented
// text message with a ping between the fragments, and a close.
func TestByteByByte(t *testing.T) {
	_, addr := startServer(t, Config{}, Echo{})
	c := dialRaw(t, addr)
	c.conn.(*net.TCPConn).SetNoDelay(true)
	c.upgrade(1)
	var stream []byte
	stream = append(stream, c.frame(ws.OpText, false, []byte("héllo "))...)
	stream = append(stream, c.frame(ws.OpPing, true, []byte("p"))...)
	stream = append(stream, c.frame(ws.OpContinuation, true, []byte("wörld"))...)
	c.writeChopped(stream, 1)
	op, p, err := c.readFrame()
	if err != nil || op != ws.OpPong || string(p) != "p" {
		t.Fatalf("want pong %q, got op=%v %q err=%v", "p", op, p, err)
	}
	op, p, err = c.readFrame()
	if err != nil || op != ws.OpText || string(p) != "héllo wörld" {
		t.Fatalf("want echo, got op=%v %q err=%v", op, p, err)
	}
	c.writeChopped(c.frame(ws.OpClose, true, codec.AppendClosePayload(nil, 4000, "bye")), 1)
	if code := c.expectClose(); code != 4000 {
		t.Fatalf("close code %d, want 4000", code)
	}
}

func TestProtocolErrorsClose(t *testing.T) {
	_, addr := startServer(t, Config{MaxFrameSize: 1000, MaxMessageSize: 1500}, Echo{})
	mk := func(c *rawClient, op ws.OpCode, fin bool, p []byte) []byte { return c.frame(op, fin, p) }
	cases := []struct {
		name  string
		bytes func(c *rawClient) []byte
		want  ws.StatusCode
	}{
		{"unmasked", func(*rawClient) []byte { return codec.AppendFrame(nil, ws.OpText, true, []byte("x")) }, ws.StatusProtocolError},
		{"reserved opcode", func(c *rawClient) []byte { return mk(c, 3, true, nil) }, ws.StatusProtocolError},
		{"ping 126", func(c *rawClient) []byte { return mk(c, ws.OpPing, true, make([]byte, 126)) }, ws.StatusProtocolError},
		{"bad utf8", func(c *rawClient) []byte { return mk(c, ws.OpText, true, []byte{0xff}) }, ws.StatusInvalidFramePayloadData},
		{"frame too big", func(c *rawClient) []byte { return mk(c, ws.OpBinary, true, make([]byte, 1001)) }, ws.StatusMessageTooBig},
		{"message too big", func(c *rawClient) []byte {
			return append(mk(c, ws.OpBinary, false, make([]byte, 1000)), mk(c, ws.OpContinuation, true, make([]byte, 600))...)
		}, ws.StatusMessageTooBig},
		{"close 1 byte", func(c *rawClient) []byte { return mk(c, ws.OpClose, true, []byte{3}) }, ws.StatusProtocolError},
		{"close code 1005", func(c *rawClient) []byte { return mk(c, ws.OpClose, true, []byte{0x03, 0xed}) }, ws.StatusProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.upgrade(0)
			c.writeChopped(tc.bytes(c), 0)
			if code := c.expectClose(); code != tc.want {
				t.Fatalf("close code %d, want %d", code, tc.want)
			}
		})
	}
}

// countingEcho counts Message calls so a test can see OnRequest activity.
type countingEcho struct {
	recorder
}

// A frame that stops half-way must not make the server spin: netpoll calls
// OnRequest again while input is unread, so a poller that left the partial
// frame in netpoll's buffer would burn a core here.
func TestPartialFrameDoesNotSpin(t *testing.T) {
	_, addr := startServer(t, Config{}, Echo{})
	c := dialRaw(t, addr)
	c.upgrade(0)
	f := c.frame(ws.OpText, true, []byte("half a frame"))
	c.writeChopped(f[:8], 0)
	before := processCPU(t)
	time.Sleep(500 * time.Millisecond)
	used := processCPU(t) - before
	if used > 200*time.Millisecond {
		t.Fatalf("process used %v of CPU in 500ms while a frame was incomplete", used)
	}
	c.writeChopped(f[8:], 0)
	if op, p, err := c.readFrame(); err != nil || op != ws.OpText || string(p) != "half a frame" {
		t.Fatalf("echo after resume: op=%v %q err=%v", op, p, err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	s, addr := startServer(t, Config{HandshakeTimeout: 100 * time.Millisecond}, Echo{})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /ws HTTP/1.1\r\n")) // and nothing more
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded; want the server to close the connection")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("server did not close a connection stuck in the handshake")
	}
	eventually(t, "handshake timeout counted", func() bool { return s.Stats().HandshakeTimeouts == 1 })
}

func TestPingThenPongTimeout(t *testing.T) {
	rec := &recorder{}
	s, addr := startServer(t, Config{PingInterval: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond}, rec)
	c := dialRaw(t, addr)
	c.upgrade(0)
	op, _, err := c.readFrame()
	if err != nil || op != ws.OpPing {
		t.Fatalf("want a ping, got op=%v err=%v", op, err)
	}
	// Do not answer: the server must drop the connection.
	c.expectEOF()
	eventually(t, "pong timeout counted", func() bool { return s.Stats().PongTimeouts == 1 })
	eventually(t, "Handler.Close", func() bool { return len(rec.closes()) == 1 })
	if got := rec.closes()[0]; got != ws.StatusAbnormalClosure {
		t.Fatalf("Handler.Close code %d, want 1006", got)
	}
}

func TestPongKeepsConnectionOpen(t *testing.T) {
	s, addr := startServer(t, Config{PingInterval: 50 * time.Millisecond, PongTimeout: 50 * time.Millisecond}, Echo{})
	c := dialRaw(t, addr)
	c.upgrade(0)
	for i := 0; i < 6; i++ {
		op, p, err := c.readFrame()
		if err != nil || op != ws.OpPing {
			t.Fatalf("ping %d: op=%v err=%v", i, op, err)
		}
		c.writeChopped(c.frame(ws.OpPong, true, p), 0)
	}
	if n := s.Stats().PongTimeouts; n != 0 {
		t.Fatalf("%d pong timeouts for a client that answers", n)
	}
}

func TestMaxConnsRefuses503(t *testing.T) {
	s, addr := startServer(t, Config{MaxConns: 2}, Echo{})
	for i := 0; i < 2; i++ {
		dialRaw(t, addr).upgrade(0)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(handshakeRequest(addr))
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("want a 503 response: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("got %s (Retry-After %q), want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if n := s.Stats().Refused; n != 1 {
		t.Fatalf("refused = %d right after the 503 was read, want 1", n)
	}
}

type rejecter struct{ Echo }

func (rejecter) Upgrade(_ *Conn, r *Request) (string, error) {
	if strings.Contains(r.URI, "deny") {
		return "", &RejectError{Status: http.StatusUnauthorized, Reason: "no token"}
	}
	return "", nil
}

func TestUpgradeRejected(t *testing.T) {
	s, addr := startServer(t, Config{}, rejecter{})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := strings.Replace(string(handshakeRequest(addr)), "/ws", "/ws?deny=1", 1)
	conn.Write([]byte(req))
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("want 401, got %v %v", resp, err)
	}
	eventually(t, "rejection counted", func() bool { return s.Stats().Rejected == 1 })
}

func TestShutdownClosesWith1001(t *testing.T) {
	s, addr := startServer(t, Config{CloseTimeout: 200 * time.Millisecond}, Echo{})
	c := dialRaw(t, addr)
	c.upgrade(0)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	if code := c.expectClose(); code != ws.StatusGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	if err := <-done; err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
}

// Slow consumer: the client stops reading; Sends fill the socket, then the
// queue, then fail with ErrQueueFull. Once the client reads again every
// queued frame arrives, in order.
func TestStallThenDrainInOrder(t *testing.T) {
	opened := make(chan *Conn, 1)
	h := &openHook{ch: opened}
	s, addr := startServer(t, Config{MaxPendingBytes: 256 << 10}, h)
	c := dialRaw(t, addr)
	c.upgrade(0)
	sc := <-opened
	payload := bytes.Repeat([]byte{'z'}, 1000)
	sent := 0
	for i := 0; ; i++ {
		p := append([]byte{byte(i), byte(i >> 8)}, payload...)
		err := sc.Send(codec.CompileFrame(ws.OpBinary, p))
		if errors.Is(err, ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent++
		if sent > 100000 {
			t.Fatal("queue never filled")
		}
	}
	if s.Stats().Stalls == 0 {
		t.Fatal("socket never stalled")
	}
	for i := 0; i < sent; i++ {
		op, p, err := c.readFrame()
		if err != nil || op != ws.OpBinary || p[0] != byte(i) || p[1] != byte(i>>8) {
			t.Fatalf("frame %d of %d: op=%v err=%v", i, sent, op, err)
		}
	}
}

type openHook struct {
	Echo
	ch chan *Conn
}

func (h *openHook) Open(c *Conn) { h.ch <- c }

// Idle connections must not cost goroutines.
func TestIdleConnectionsAddNoGoroutines(t *testing.T) {
	s, addr := startServer(t, Config{}, Echo{})
	open := func(n int) {
		for i := 0; i < n; i++ {
			dialRaw(t, addr).upgrade(0)
		}
		eventually(t, "connections registered", func() bool { return s.Stats().Upgraded >= uint64(n) })
	}
	open(20)
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()
	open(500)
	time.Sleep(100 * time.Millisecond)
	if got := runtime.NumGoroutine(); got > base+8 {
		t.Fatalf("goroutines grew from %d to %d with 500 more idle connections", base, got)
	}
}

type protoPicker struct{ Echo }

func TestSubprotocolNegotiation(t *testing.T) {
	_, addr := startServer(t, Config{}, protoPicker{})
	for _, tc := range []struct {
		offer, want string
	}{
		{"pushd.v1", "pushd.v1"},
		{"chat, pushd.v1", "pushd.v1"},
		{"chat", ""},
		{"", ""},
	} {
		t.Run(tc.offer, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req := string(handshakeRequest(addr))
			if tc.offer != "" {
				req = strings.Replace(req, "\r\n\r\n", "\r\nSec-WebSocket-Protocol: "+tc.offer+"\r\n\r\n", 1)
			}
			conn.Write([]byte(req))
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %s, want 101", resp.Status)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tc.want {
				t.Fatalf("selected %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDrainingBacklogKeepsConnectionOpen: a client that reads a large
// backlog slowly sends nothing meanwhile, and the server's pings wait
// behind the backlog, so it cannot answer them in time; it is alive all
// the same (it keeps taking bytes) and must not be ended by the pong
// timeout. The ping interval is 400 ms and the pong timeout 2 s: a
// connection silent for 2.4 s is dead unless it drains, and reading the
// 6 MiB echo 32 KiB per 25 ms takes 5 s or more, partly from the
// user-space backlog (stallTick), partly from the kernel's send queue
// (bytes_acked). (A 400 ms pong timeout failed 1–3 runs in 30 under -race
// on a busy host; 1 s still failed in the parallel test command.)
func TestDrainingBacklogKeepsConnectionOpen(t *testing.T) {
	const size = 6 << 20
	s, addr := startServer(t, Config{
		PingInterval: 400 * time.Millisecond, PongTimeout: 2 * time.Second,
		MaxFrameSize: size, MaxMessageSize: size, MaxPendingBytes: 2 * size,
		WriteTimeout: 10 * time.Second,
	}, Echo{})
	c := dialRaw(t, addr)
	if tc, ok := c.conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(32 << 10)
	}
	c.upgrade(0)
	payload := bytes.Repeat([]byte{0xa5}, size)
	werr := make(chan error, 1)
	go func() {
		_, err := c.conn.Write(c.frame(ws.OpBinary, true, payload))
		werr <- err
	}()
	// Read the echo (and any pings queued behind it) slowly, as raw bytes.
	start := time.Now()
	buf := make([]byte, 32<<10)
	got := 0
	for got < size {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.br.Read(buf)
		if err != nil {
			t.Fatalf("after %d of %d bytes (%v): %v; pong timeouts %d", got, size, time.Since(start), err, s.Stats().PongTimeouts)
		}
		got += n
		time.Sleep(25 * time.Millisecond)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	t.Logf("read the %d-byte echo in %v", size, time.Since(start))
	if n := s.Stats().PongTimeouts; n != 0 {
		t.Fatalf("%d pong timeouts for a client that was reading its backlog", n)
	}
}
