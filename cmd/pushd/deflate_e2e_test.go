package main_test

// permessage-deflate and binary payloads end to end (issue 19): the real
// binary, gorilla/websocket as an independent compressing client, payloads
// published over HTTP.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/internal/pushdtest"
)

// procStatusKB reads a "Name:   N kB" line of /proc/<pid>/status.
func procStatusKB(t *testing.T, pid int, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parse %s %q: %v", name, line, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, name)
	return 0
}

// dialDeflate connects gorilla with compression on (it offers
// permessage-deflate with both no_context_takeover parameters) and checks
// that pushd accepted it.
func dialDeflate(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{EnableCompression: true, HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		c.Close()
		t.Fatalf("101 answered Sec-WebSocket-Extensions %q, want permessage-deflate", ext)
	}
	c.EnableWriteCompression(true)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestZipBomb: a 10 MB message of zeros, about 10 KB compressed, is closed
// with 1009 while it is inflated, and pushd's peak RSS (VmHWM) grows by
// less than -max-message over three of them. A compressed op below the
// limit is inflated and answered.
func TestZipBomb(t *testing.T) {
	const maxMessage = 1 << 20
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-max-message", strconv.Itoa(maxMessage)}})
	url := p.URL("/ws")

	// Warm up the paths a bomb takes (upgrade, inflate, close), so the
	// measurement sees the bomb, not first-use allocations.
	warm := dialDeflate(t, url)
	if err := warm.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`+strings.Repeat(" ", 4096))); err != nil {
		t.Fatal(err)
	}
	_ = warm.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, m, err := warm.ReadMessage(); err != nil || !bytes.Contains(m, []byte(`"pong"`)) {
		t.Fatalf("compressed ping: %q, %v", m, err)
	}
	bomb := make([]byte, 10<<20)
	sendBomb := func() {
		t.Helper()
		c := dialDeflate(t, url)
		start := time.Now()
		if err := c.WriteMessage(websocket.BinaryMessage, bomb); err != nil {
			t.Fatalf("write bomb: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			_, _, err := c.ReadMessage()
			if err == nil {
				continue
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
				t.Fatalf("bomb: connection ended with %v, want close 1009", err)
			}
			t.Logf("bomb closed with %d %q after %v", ce.Code, ce.Text, time.Since(start).Round(time.Millisecond))
			return
		}
	}
	sendBomb()
	pid := p.Pid()
	hwm0, rss0 := procStatusKB(t, pid, "VmHWM"), procStatusKB(t, pid, "VmRSS")
	for range 3 {
		sendBomb()
	}
	hwm1, rss1 := procStatusKB(t, pid, "VmHWM"), procStatusKB(t, pid, "VmRSS")
	t.Logf("pushd VmHWM %d -> %d kB (+%d), VmRSS %d -> %d kB, over three 10 MB bombs with -max-message %d kB",
		hwm0, hwm1, hwm1-hwm0, rss0, rss1, maxMessage>>10)
	if grew := (hwm1 - hwm0) << 10; grew > maxMessage {
		t.Fatalf("peak RSS grew by %d bytes, more than -max-message (%d)", grew, maxMessage)
	}
	// Still serving.
	if err := warm.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if _, m, err := warm.ReadMessage(); err != nil || !bytes.Contains(m, []byte(`"pong"`)) {
		t.Fatalf("ping after the bombs: %q, %v", m, err)
	}
}

// TestBinaryPayloadsBothFormats: the bytes 0x00-0xff, and 16 KB of them
// (compressed for deflate connections), published over HTTP arrive
// byte-exact in both wire formats: as a binary frame with format=raw, as
// base64 with "b64":true in JSON; with and without permessage-deflate.
func TestBinaryPayloadsBothFormats(t *testing.T) {
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{})
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	payloads := [][]byte{all, bytes.Repeat(all, 64)}
	type client struct {
		name string
		c    *websocket.Conn
		raw  bool
	}
	var clients []client
	for _, format := range []string{"json", "raw"} {
		for _, deflate := range []bool{false, true} {
			url := p.URL("/ws?ch=bin:1&format=" + format)
			var c *websocket.Conn
			if deflate {
				c = dialDeflate(t, url)
			} else {
				var err error
				if c, _, err = websocket.DefaultDialer.Dial(url, nil); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
			}
			clients = append(clients, client{fmt.Sprintf("%s deflate=%v", format, deflate), c, format == "raw"})
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats(t).Subscriptions != int64(len(clients)) {
		if time.Now().After(deadline) {
			t.Fatalf("subscriptions: %d, want %d", p.Stats(t).Subscriptions, len(clients))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pl := range payloads {
		resp, err := http.Post(p.AdminURL("/publish?ch=bin:1"), "application/octet-stream", bytes.NewReader(pl))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish: %s", resp.Status)
		}
	}
	for _, cl := range clients {
		_ = cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i, pl := range payloads {
			kind, m, err := cl.c.ReadMessage()
			if err != nil {
				t.Fatalf("%s: push %d: %v", cl.name, i, err)
			}
			got := m
			if cl.raw {
				if kind != websocket.BinaryMessage {
					t.Fatalf("%s: push %d came as message type %d, want binary", cl.name, i, kind)
				}
			} else {
				var push struct {
					Data string `json:"data"`
					B64  bool   `json:"b64"`
				}
				if err := json.Unmarshal(m, &push); err != nil || !push.B64 {
					t.Fatalf("%s: push %d %.120q: want base64 data with \"b64\":true (%v)", cl.name, i, m, err)
				}
				if got, err = base64.StdEncoding.DecodeString(push.Data); err != nil {
					t.Fatalf("%s: push %d: %v", cl.name, i, err)
				}
			}
			if !bytes.Equal(got, pl) {
				t.Fatalf("%s: push %d: %d bytes differ from the %d published", cl.name, i, len(got), len(pl))
			}
		}
	}
}
