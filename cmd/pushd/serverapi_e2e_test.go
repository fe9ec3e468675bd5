package main_test

// The server API across two real nodes and a real Redis (issue 16).

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

const apiKey = "server-api-test-key"

func apiCall(t *testing.T, p *pushdtest.Proc, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", p.AdminURL(path), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// waitLog waits until p logged a line containing s.
func waitLog(t *testing.T, p *pushdtest.Proc, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.Log(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", s, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readJSONUntil reads frames from c until one has op.
func readJSONUntil(t *testing.T, c *websocket.Conn, op string) map[string]any {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %q: %v", op, err)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		if m["op"] == op || (op == "push" && m["op"] == nil) {
			return m
		}
	}
}

// TestServerAPITwoNodes: a user with 3 connections spread over 2 nodes is
// disconnected everywhere by one call on one node (code, reason and the
// reconnect hint arrive); another user is untouched and is subscribed
// and unsubscribed server-side from the other node.
func TestServerAPITwoNodes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	secret := strings.Repeat("server-api-secret-", 2)
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	nodes := startNodes(t, 2, "-redis", "redis://"+srv.Addr+"/0", "-jwt-hs256-secret-file", file, "-admin-api-key", apiKey)
	a, b := nodes[0], nodes[1]
	for _, p := range nodes {
		waitLog(t, p, "control channel subscribed")
	}
	tok := func(sub string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	dialTok := func(p *pushdtest.Proc, sub string) *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+p.WSAddr+"/ws?token="+tok(sub), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if m := wsJSON(t, c, `{"op":"ping"}`); m["op"] != "pong" {
			t.Fatalf("%v", m)
		}
		return c
	}
	banned := []*websocket.Conn{dialTok(a, "mallory"), dialTok(a, "mallory"), dialTok(b, "mallory")}
	other := dialTok(b, "alice")

	// Bad input: a stable JSON error code, nothing sent.
	if code, m := apiCall(t, a, "/api/disconnect", `{"user":"mallory","code":1006}`); code != 400 || m["code"] != "bad_request" {
		t.Fatalf("bad close code: %d %v", code, m)
	}
	if code, m := apiCall(t, a, "/api/disconnect", `{"user":"mallory","bogus":1}`); code != 400 || m["code"] != "bad_request" {
		t.Fatalf("unknown field: %d %v", code, m)
	}
	if code, m := apiCall(t, a, "/api/subscribe", `{"user":"alice","ch":"a,b"}`); code != 400 || m["code"] != "bad_channel" {
		t.Fatalf("bad channel: %d %v", code, m)
	}

	start := time.Now()
	if code, m := apiCall(t, a, "/api/disconnect", `{"user":"mallory","code":4009,"reason":"banned","reconnect_after_ms":60000}`); code != 200 || m["sent"] != true {
		t.Fatalf("disconnect: %d %v", code, m)
	}
	type result struct {
		hint bool
		code int
		text string
		at   time.Duration
	}
	results := make(chan result, len(banned))
	for _, c := range banned {
		go func() {
			var r result
			_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					r.at = time.Since(start)
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						r.code, r.text = ce.Code, ce.Text
					}
					results <- r
					return
				}
				if strings.Contains(string(b), `"op":"reconnect","after_ms":60000`) {
					r.hint = true
				}
			}
		}()
	}
	var slowest time.Duration
	for range banned {
		r := <-results
		if r.code != 4009 || r.text != "banned" || !r.hint {
			t.Errorf("banned connection: close %d %q hint %v, want 4009 banned with the reconnect hint", r.code, r.text, r.hint)
		}
		slowest = max(slowest, r.at)
	}
	t.Logf("3 connections of one user on 2 nodes closed within %v of the call", slowest)
	if slowest > 5*time.Second {
		t.Errorf("closed after %v", slowest)
	}

	// alice is untouched; node A subscribes her (on node B) server-side.
	if code, _ := apiCall(t, a, "/api/subscribe", `{"user":"alice","ch":"room:9"}`); code != 200 {
		t.Fatalf("subscribe: %d", code)
	}
	if m := readJSONUntil(t, other, "subok"); m["ch"] != "room:9" {
		t.Fatalf("%v", m)
	}
	if code, m := apiCall(t, a, "/api/publish", `{"channels":["room:9","room:10"],"data":{"n":1}}`); code != 200 || len(m["results"].([]any)) != 2 {
		t.Fatalf("publish to many: %d %v", code, m)
	}
	if m := readJSONUntil(t, other, "push"); m["ch"] != "room:9" {
		t.Fatalf("%v", m)
	}
	if code, _ := apiCall(t, b, "/api/unsubscribe", `{"user":"alice","ch":"room:9","reason":"moved"}`); code != 200 {
		t.Fatalf("unsubscribe: %d", code)
	}
	if m := readJSONUntil(t, other, "unsubscribed"); m["ch"] != "room:9" || m["reason"] != "moved" {
		t.Fatalf("%v", m)
	}
	if m := wsJSON(t, other, `{"op":"ping"}`); m["op"] != "pong" {
		t.Fatalf("alice after all that: %v", m)
	}
	for _, path := range []string{"/api/node", "/stats"} {
		req, _ := http.NewRequest("GET", b.AdminURL(path), nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if doc["users"] != float64(1) {
			t.Errorf("%s users on node B = %v, want 1 (alice)", path, doc["users"])
		}
	}
	resp, err := http.Get(b.AdminURL("/api/node"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("GET /api/node without the key: %d", resp.StatusCode)
	}
}

func wsJSON(t *testing.T, c *websocket.Conn, op string) map[string]any {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(op)); err != nil {
		t.Fatal(err)
	}
	return readJSONUntil(t, c, "pong")
}
