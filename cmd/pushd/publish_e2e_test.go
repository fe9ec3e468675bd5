package main_test

// End-to-end test of acceptance 1: the built pushd binary with no flags
// (only loopback :0 listeners), independent clients (gorilla/websocket in
// this process, npm ws in a node process), subscriptions via the URL and
// via {"op":"sub"}, publications via POST /publish on the admin listener.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/internal/pushdtest"
)

type push struct {
	Op        string          `json:"op"`
	Ch        string          `json:"ch"`
	Seq       uint64          `json:"seq"`
	Data      json.RawMessage `json:"data"`
	Recovered *bool           `json:"recovered"`
	Code      int             `json:"code"`
}

// httpPublish POSTs body to /publish?ch=ch and returns the status and the
// decoded reply.
func httpPublish(t *testing.T, p *pushdtest.Proc, ch string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(p.AdminURL("/publish?ch="+ch), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST /publish: %v", err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("POST /publish reply %q: %v", b, err)
	}
	return resp.StatusCode, m
}

func mustPublish(t *testing.T, p *pushdtest.Proc, ch, body string) uint64 {
	t.Helper()
	status, m := httpPublish(t, p, ch, []byte(body))
	if status != http.StatusOK || m["ch"] != ch {
		t.Fatalf("POST /publish?ch=%s: %d %v", ch, status, m)
	}
	return uint64(m["seq"].(float64))
}

func dial(t *testing.T, p *pushdtest.Proc, path string) *websocket.Conn {
	t.Helper()
	return dialWith(t, p, path, nil)
}

// dialWith dials offering subprotocols protos: pushd.v1 must be selected
// when offered, and nothing echoed when none is (RFC 6455 §4.2.2).
func dialWith(t *testing.T, p *pushdtest.Proc, path string, protos []string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: protos}
	c, resp, err := d.Dial(p.URL(path), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	want := ""
	if len(protos) > 0 {
		want = "pushd.v1"
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != want {
		t.Errorf("subprotocol %q, want %q (offered %q)", got, want, protos)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *websocket.Conn) (int, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return mt, b
}

func readJSON(t *testing.T, c *websocket.Conn) push {
	t.Helper()
	mt, b := read(t, c)
	var m push
	if mt != websocket.TextMessage || json.Unmarshal(b, &m) != nil {
		t.Fatalf("want a JSON text message, got type %d %q", mt, b)
	}
	return m
}

// ready sends a ping and waits for the pong: URL subscriptions are linked
// before the connection's first message is read, so after the pong they
// are live.
func ready(t *testing.T, c *websocket.Conn) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if m := readJSON(t, c); m.Op != "pong" {
		t.Fatalf("want pong, got %+v", m)
	}
}

func expectPush(t *testing.T, c *websocket.Conn, ch string, seq uint64, data string) {
	t.Helper()
	m := readJSON(t, c)
	if m.Op != "" || m.Ch != ch || m.Seq != seq || string(m.Data) != data {
		t.Fatalf("push = %+v (data %s), want ch %s seq %d data %s", m, m.Data, ch, seq, data)
	}
}

func TestPublishEndToEnd(t *testing.T) {
	bin := pushdtest.Build(t)
	// No flags but the loopback :0 listeners pushdtest adds: the README's
	// `go run ./cmd/pushd`.
	p := pushdtest.Start(t, bin, pushdtest.Options{})

	t.Run("gorilla/url", func(t *testing.T) {
		// The README's browser client: URL subscription, pushes only.
		c := dial(t, p, "/ws?ch=news")
		ready(t, c)
		seq := mustPublish(t, p, "news", `{"hi":1}`)
		expectPush(t, c, "news", seq, `{"hi":1}`)
		seq = mustPublish(t, p, "news", `plain text`)
		expectPush(t, c, "news", seq, `"plain text"`)
	})
	t.Run("gorilla/sub-op", func(t *testing.T) {
		c := dialWith(t, p, "/ws", []string{"other", "pushd.v1"})
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"sub","ch":"room:1"}`)); err != nil {
			t.Fatal(err)
		}
		if m := readJSON(t, c); m.Op != "subok" || m.Ch != "room:1" {
			t.Fatalf("subok = %+v", m)
		}
		seq := mustPublish(t, p, "room:1", `[1,2,3]`)
		expectPush(t, c, "room:1", seq, `[1,2,3]`)
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`))
		if m := readJSON(t, c); m.Op != "pong" {
			t.Fatalf("ping reply %+v", m)
		}
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"op":"unsub","ch":"room:1"}`))
		if m := readJSON(t, c); m.Op != "unsubok" || m.Ch != "room:1" {
			t.Fatalf("unsub reply %+v", m)
		}
		mustPublish(t, p, "room:1", `"after"`)
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"op":"nope"}`))
		if m := readJSON(t, c); m.Op != "err" || m.Code != 400 {
			t.Fatalf("after unsub: want only the err reply to a bad op, got %+v", m)
		}
	})
	t.Run("gorilla/publish-before-subscribe", func(t *testing.T) {
		seq := mustPublish(t, p, "login:7f3a", `{"token":"abc"}`)
		// The README's QR-login page: the first message is the push.
		c := dial(t, p, "/ws?ch=login:7f3a&since=0")
		expectPush(t, c, "login:7f3a", seq, `{"token":"abc"}`)
	})
	t.Run("gorilla/raw", func(t *testing.T) {
		c := dial(t, p, "/ws?ch=rawch&format=raw")
		ready(t, c)
		mustPublish(t, p, "rawch", "hello")
		mustPublish(t, p, "rawch", "\xff\x00")
		if mt, b := read(t, c); mt != websocket.TextMessage || string(b) != "hello" {
			t.Fatalf("raw push %d %q", mt, b)
		}
		if mt, b := read(t, c); mt != websocket.BinaryMessage || string(b) != "\xff\x00" {
			t.Fatalf("raw binary push %d %q", mt, b)
		}
	})
	t.Run("http-errors", func(t *testing.T) {
		if status, _ := httpPublish(t, p, "bad%20name", []byte("x")); status != http.StatusBadRequest {
			t.Errorf("bad channel: %d, want 400", status)
		}
		if status, _ := httpPublish(t, p, "big", make([]byte, 1<<20+1)); status != http.StatusRequestEntityTooLarge {
			t.Errorf("1 MiB + 1 body: %d, want 413", status)
		}
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		if _, resp, err := d.Dial(p.URL("/other"), nil); err == nil || resp == nil || resp.StatusCode != 404 {
			t.Errorf("dial /other: %v %v, want 404", err, resp)
		}
	})
	t.Run("npm-ws", func(t *testing.T) {
		node, dir := nodeWS(t)
		cmd := exec.Command(node, filepath.Join("testdata", "e2e_client.js"), p.URL("/ws?ch=js:a"), "js:b", "2")
		cmd.Env = append(os.Environ(), "NODE_PATH="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		sc := bufio.NewScanner(out)
		var lines []string
		ready := false
		for sc.Scan() {
			line := sc.Text()
			lines = append(lines, line)
			if line == "READY" && !ready {
				ready = true
				mustPublish(t, p, "js:a", `{"n":1}`)
				mustPublish(t, p, "js:b", `{"n":2}`)
			}
		}
		got := strings.Join(lines, "\n")
		// Epochs are random per channel (memory broker: made at the
		// channel's first use).
		for _, want := range []string{
			`PROTOCOL pushd\.v1`,
			`MSG \{"op":"subok","ch":"js:b","epoch":"[0-9a-f]{10}","seq":0,"recovered":true\}`,
			`MSG \{"ch":"js:a","epoch":"[0-9a-f]{10}","seq":1,"data":\{"n":1\}\}`,
			`MSG \{"ch":"js:b","epoch":"[0-9a-f]{10}","seq":1,"data":\{"n":2\}\}`,
			`CLOSE 1000`,
		} {
			if !regexp.MustCompile(want).MatchString(got) {
				t.Errorf("node ws output lacks %s:\n%s", want, got)
			}
		}
	})
	t.Run("stats", func(t *testing.T) {
		st := stats(t, p)
		for _, k := range []string{"subscriptions", "channels", "published", "delivered", "slow_disconnects", "dropped", "conflated", "gap_notices"} {
			if _, ok := st[k]; !ok {
				t.Errorf("/stats lacks %q", k)
			}
		}
		if st["published"].(float64) < 9 || st["delivered"].(float64) < 8 {
			t.Errorf("/stats published %v delivered %v", st["published"], st["delivered"])
		}
	})
}

// nodeWS returns the node binary and the node_modules dir holding npm ws
// (conformance/node's), failing when either is missing.
func nodeWS(t *testing.T) (node, modules string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the npm ws client: %v", err)
	}
	modules, err = filepath.Abs(filepath.Join("..", "..", "conformance", "node", "node_modules"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(modules, "ws", "package.json")); err != nil {
		t.Fatalf("npm ws missing (cd conformance/node && npm ci): %v", err)
	}
	return node, modules
}

func stats(t *testing.T, p *pushdtest.Proc) map[string]any {
	t.Helper()
	resp, err := http.Get(p.AdminURL("/stats"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func waitStat(t *testing.T, p *pushdtest.Proc, key string, ok func(float64) bool) {
	t.Helper()
	waitStatWithin(t, p, key, 5*time.Second, ok)
}

// waitStatWithin polls /stats until ok(key) holds or d passes.
func waitStatWithin(t *testing.T, p *pushdtest.Proc, key string, d time.Duration, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		v, _ := stats(t, p)[key].(float64)
		if ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/stats %s = %v", key, v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPublicPatterns: -public limits who may subscribe, at the upgrade (403)
// and per sub request (err 403); POST /publish is the backend's and may
// publish anywhere.
func TestPublicPatterns(t *testing.T) {
	bin := pushdtest.Build(t)
	p := pushdtest.Start(t, bin, pushdtest.Options{Args: []string{"-public", "news,login:*"}})
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	if _, resp, err := d.Dial(p.URL("/ws?ch=news,secret"), nil); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("URL subscription to a private channel: %v %v, want 403", err, resp)
	}
	c := dial(t, p, "/ws?ch=login:1")
	_ = c.WriteMessage(websocket.TextMessage, []byte(`{"op":"sub","ch":"secret"}`))
	if m := readJSON(t, c); m.Op != "err" || m.Code != 403 || m.Ch != "secret" {
		t.Fatalf("sub to a private channel: %+v, want err 403", m)
	}
	mustPublish(t, p, "secret", `1`)
	seq := mustPublish(t, p, "login:1", `2`)
	expectPush(t, c, "login:1", seq, `2`)
}
