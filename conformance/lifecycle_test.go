package conformance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"github.com/pushd/pushd/internal/pushdtest"
)

// streamPeer is a node or python peer in server-close mode: it prints
// {"case":"ready"} once connected and its observation when pushd closes.
type streamPeer struct {
	name  string
	cmd   *exec.Cmd
	lines chan scriptResult
	done  chan error
}

func startStreamPeer(t *testing.T, name string, argv ...string) *streamPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), raceScale(2*time.Minute))
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = &testLogWriter{t: t, prefix: name + ": "}
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	sp := &streamPeer{name: name, cmd: cmd, lines: make(chan scriptResult, 4), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var r scriptResult
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				sp.lines <- r
			}
		}
		close(sp.lines)
		sp.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cancel(); <-sp.done })
	return sp
}

// line returns the next observation of the peer or fails t.
func (sp *streamPeer) line(t *testing.T, timeout time.Duration) scriptResult {
	t.Helper()
	select {
	case r, ok := <-sp.lines:
		if !ok {
			t.Fatalf("%s exited without reporting", sp.name)
		}
		return r
	case <-time.After(timeout):
		t.Fatalf("%s reported nothing within %v", sp.name, timeout)
	}
	return scriptResult{}
}

type testLogWriter struct {
	t      *testing.T
	prefix string
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s%s", w.prefix, p)
	return len(p), nil
}

// TestServerInitiatedClose connects every peer to one pushd, sends SIGTERM
// and requires each peer to receive a close frame with 1001 (going away),
// the raw client to see TCP closed after it, and pushd to exit 0.
func TestServerInitiatedClose(t *testing.T) {
	t.Parallel()
	// Opted-out peers (PUSHD_SKIP_PEERS) are left out; the Go clients and
	// the raw client always take part.
	var peers []*streamPeer
	var browser context.Context
	p := startEcho(t)
	if !peerOptedOut("node") {
		node, script := nodePeer(t)
		peers = append(peers,
			startStreamPeer(t, "ws", node, script, "ws", "server-close", p.URL("/ws")),
			startStreamPeer(t, "undici", node, script, "undici", "server-close", p.URL("/undici")))
	}
	if !peerOptedOut("python") {
		peers = append(peers, startStreamPeer(t, "python", pythonExe, "-u", pythonPeer(t), "server-close", p.URL("/python")))
	}
	if !peerOptedOut("chromium") {
		browser = startBrowser(t)
	}

	raw := dialRaw(t, p.WSAddr)
	gc, _, err := (&websocket.Dialer{HandshakeTimeout: 10 * time.Second}).Dial(p.URL("/gorilla"), nil)
	if err != nil {
		t.Fatalf("gorilla dial: %v", err)
	}
	defer gc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), raceScale(time.Minute))
	defer cancel()
	cc, _, err := coder.Dial(ctx, p.URL("/coder"), nil)
	if err != nil {
		t.Fatalf("coder dial: %v", err)
	}
	defer cc.CloseNow()
	for _, sp := range peers {
		if r := sp.line(t, raceScale(30*time.Second)); r.Case != "ready" {
			t.Fatalf("%s: %+v before ready", sp.name, r)
		}
	}
	conns := int64(3 + len(peers))
	if browser != nil {
		if got := evalJS(t, browser, raceScale(30*time.Second), "openForServerClose("+jsArgs(p.URL("/chromium"))+")"); got != "open" {
			t.Fatalf("chromium: %q", got)
		}
		conns++
	}
	// Wait until pushd counts every connection, then stop it.
	waitStats(t, p, func(s pushdtest.Stats) bool { return s.Conns >= conns }, fmt.Sprintf("%d connections", conns))
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	t.Run("raw", func(t *testing.T) { raw.t = t; raw.expectClose(1001) })
	t.Run("gorilla", func(t *testing.T) {
		_ = gc.SetReadDeadline(time.Now().Add(raceScale(10 * time.Second)))
		_, _, err := gc.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 1001 {
			t.Fatalf("gorilla: want close 1001, got %v", err)
		}
	})
	t.Run("coder", func(t *testing.T) {
		_, _, err := cc.Read(ctx)
		if got := coder.CloseStatus(err); got != 1001 {
			t.Fatalf("coder: want close 1001, got %d (%v)", got, err)
		}
	})
	for _, sp := range peers {
		t.Run(sp.name, func(t *testing.T) {
			judgeOne(t, sp.name, sp.line(t, raceScale(30*time.Second)))
		})
	}
	t.Run("chromium", func(t *testing.T) {
		if browser == nil {
			t.Skip("PUSHD_SKIP_PEERS skips chromium")
		}
		judgeOne(t, "chromium", parseLines(t, evalJS(t, browser, raceScale(30*time.Second), "window.serverClosed"))[0])
	})
	t.Run("exit-0", func(t *testing.T) {
		deadline := time.Now().Add(raceScale(10 * time.Second))
		for !p.Exited() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !p.Exited() {
			t.Fatalf("pushd still running %v after SIGTERM with every client gone", raceScale(10*time.Second))
		}
		if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("pushd exited with %d after SIGTERM, want 0\n%s", code, p.Log())
		}
	})
}

// waitStats polls /stats until ok or 10 s.
func waitStats(t *testing.T, p *pushdtest.Proc, ok func(pushdtest.Stats) bool, what string) pushdtest.Stats {
	t.Helper()
	deadline := time.Now().Add(raceScale(10 * time.Second))
	for {
		s := p.Stats(t)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: /stats %+v", what, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Timeout settings for TestTimeouts (issue item 5).
const (
	handshakeTimeout = 500 * time.Millisecond
	pingInterval     = time.Second
	pongTimeout      = 2 * time.Second // a busy machine may stall the answering client for a second
)

// TestTimeouts checks the handshake timeout and the ping/pong timeout,
// and that both are counted in /stats.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	p := startEcho(t, "-handshake-timeout", handshakeTimeout.String(),
		"-ping-interval", pingInterval.String(), "-pong-timeout", pongTimeout.String())
	before := p.Stats(t)
	t.Run("group", func(t *testing.T) {
		t.Run("silent-tcp-closed-after-handshake-timeout", func(t *testing.T) {
			t.Parallel()
			handshakeTimeoutCase(t, p, nil)
		})
		t.Run("partial-request-closed-after-handshake-timeout", func(t *testing.T) {
			t.Parallel()
			handshakeTimeoutCase(t, p, []byte("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"))
		})
		t.Run("silent-client-pinged-then-closed", func(t *testing.T) {
			t.Parallel()
			pongTimeoutCase(t, p)
		})
		t.Run("raw-client-answering-pings-stays-open", func(t *testing.T) {
			t.Parallel()
			answeringRawCase(t, p)
		})
		t.Run("gorilla-client-answering-pings-stays-open", func(t *testing.T) {
			t.Parallel()
			answeringGorillaCase(t, p)
		})
	})
	if t.Failed() {
		return
	}
	after := waitStats(t, p, func(s pushdtest.Stats) bool {
		return s.HandshakeTimeouts >= before.HandshakeTimeouts+2 && s.PongTimeouts >= before.PongTimeouts+1
	}, "handshake_timeouts +2 and pong_timeouts +1")
	if d := after.HandshakeTimeouts - before.HandshakeTimeouts; d != 2 {
		t.Errorf("handshake_timeouts went up by %d, want 2", d)
	}
	if d := after.PongTimeouts - before.PongTimeouts; d != 1 {
		t.Errorf("pong_timeouts went up by %d, want 1 (only one client stopped answering pings)", d)
	}
	t.Logf("/stats: handshake_timeouts %d -> %d, pong_timeouts %d -> %d",
		before.HandshakeTimeouts, after.HandshakeTimeouts, before.PongTimeouts, after.PongTimeouts)
}

// handshakeTimeoutCase opens TCP, sends prefix (maybe nothing) and
// requires pushd to close the connection after about the handshake
// timeout (not before half of it, within 2 s).
func handshakeTimeoutCase(t *testing.T, p *pushdtest.Proc, prefix []byte) {
	c, err := net.Dial("tcp", p.WSAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if len(prefix) > 0 {
		if _, err := c.Write(prefix); err != nil {
			t.Fatal(err)
		}
	}
	bound := 2 * time.Second
	_ = c.SetReadDeadline(start.Add(raceScale(bound) + time.Second))
	// pushd may answer with an HTTP error before closing; read to EOF.
	resp, err := io.ReadAll(c)
	elapsed := time.Since(start)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("connection still open %v after connect (handshake timeout %v)", elapsed.Round(time.Millisecond), handshakeTimeout)
	case err != nil && !errors.Is(err, syscall.ECONNRESET):
		t.Fatalf("read: %v", err)
	}
	if elapsed < handshakeTimeout/2 {
		t.Errorf("closed after %v, before the handshake timeout %v", elapsed, handshakeTimeout)
	}
	if elapsed > raceScale(bound) {
		t.Errorf("closed after %v, want within %v", elapsed, bound)
	}
	t.Logf("closed after %v (response %q)", elapsed.Round(time.Millisecond), resp)
}

// pongTimeoutCase upgrades a raw client that never answers: it must be
// pinged after the ping interval, then closed about a pong timeout later.
func pongTimeoutCase(t *testing.T, p *pushdtest.Proc) {
	r := dialRaw(t, p.WSAddr)
	start := time.Now()
	f, err := r.readFrame(raceScale(pingInterval + 2*time.Second))
	if err != nil {
		t.Fatalf("no ping within %v of silence: %v", pingInterval+2*time.Second, err)
	}
	if f.op != opPing {
		t.Fatalf("want a ping, got %v", f)
	}
	pinged := time.Since(start)
	// Not answered: pushd closes TCP (a close frame before it is allowed).
	f, err = r.readFrame(raceScale(pongTimeout + 2*time.Second))
	if err == nil && f.op == opClose {
		t.Logf("close frame before TCP close: %v", f)
		f, err = r.readFrame(raceScale(3 * time.Second))
	}
	closed := time.Since(start)
	switch {
	case err == nil:
		t.Fatalf("after an unanswered ping: got %v, want TCP closed", f)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	default:
		t.Fatalf("want TCP closed within %v of the unanswered ping: %v", pongTimeout+2*time.Second, err)
	}
	if closed-pinged < pongTimeout/2 {
		t.Errorf("closed %v after the ping, before the pong timeout %v", closed-pinged, pongTimeout)
	}
	t.Logf("pinged after %v, closed %v later", pinged.Round(time.Millisecond), (closed - pinged).Round(time.Millisecond))
}

// stayOpenFor is well past ping interval + pong timeout.
const stayOpenFor = 5 * time.Second

// answeringRawCase answers every ping with its payload for stayOpenFor and
// then requires the connection to still echo.
func answeringRawCase(t *testing.T, p *pushdtest.Proc) {
	r := dialRaw(t, p.WSAddr)
	pings := 0
	end := time.Now().Add(stayOpenFor)
	for time.Now().Before(end) {
		f, err := r.readFrame(time.Until(end))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("after %d answered pings: %v", pings, err)
		}
		if f.op != opPing {
			t.Fatalf("unexpected %v", f)
		}
		pings++
		r.sendFrames(pong(f.payload))
	}
	if pings < 2 {
		t.Errorf("%d pings in %v with -ping-interval %v, want >= 2", pings, stayOpenFor, pingInterval)
	}
	r.sendFrames(text("still here"))
	for {
		f := r.next("echo after answering pings")
		if f.op == opPing {
			r.sendFrames(pong(f.payload))
			continue
		}
		if f.op != opText || string(f.payload) != "still here" {
			t.Fatalf("want echo, got %v", f)
		}
		break
	}
	t.Logf("answered %d pings, still open after %v", pings, stayOpenFor)
}

// answeringGorillaCase relies on gorilla's pong replies while it reads.
func answeringGorillaCase(t *testing.T, p *pushdtest.Proc) {
	c, _, err := (&websocket.Dialer{HandshakeTimeout: 10 * time.Second}).Dial(p.URL("/gorilla"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pings := make(chan struct{}, 64)
	c.SetPingHandler(func(s string) error {
		pings <- struct{}{}
		return c.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
	})
	type msg struct {
		b   []byte
		err error
	}
	msgs := make(chan msg, 1)
	go func() {
		_, b, err := c.ReadMessage()
		msgs <- msg{b, err}
	}()
	select {
	case m := <-msgs:
		t.Fatalf("connection ended while answering pings: %v", m.err)
	case <-time.After(stayOpenFor):
	}
	if len(pings) < 2 {
		t.Errorf("%d pings in %v, want >= 2", len(pings), stayOpenFor)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		if m.err != nil || string(m.b) != "still here" {
			t.Fatalf("echo after answering pings: %q %v", m.b, m.err)
		}
	case <-time.After(raceScale(5 * time.Second)):
		t.Fatal("no echo after answering pings")
	}
}
