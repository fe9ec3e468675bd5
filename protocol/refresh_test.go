package protocol

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/auth"
)

// readUntil reads frames until one has op (pushes are skipped) and
// returns it; generous deadline.
func readUntil(t *testing.T, c *websocket.Conn, op string) map[string]any {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for op %q: %v", op, err)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		if m["op"] == op {
			return m
		}
		if m["op"] != nil && m["op"] != "pong" && m["op"] != "subok" {
			t.Logf("skipped %s", b)
		}
	}
}

func send(t *testing.T, c *websocket.Conn, v string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(v)); err != nil {
		t.Fatal(err)
	}
}

// TestRefreshInBand: a connection whose first token expires 2 s after the
// dial answers the expiring hint with a refresh and is still up, and
// still receives, well past the first exp.
func TestRefreshInBand(t *testing.T) {
	base, h, mem := startAuthStack(t, Config{Auth: newAuth(t), Public: []string{}})
	first := time.Now().Add(2 * time.Second)
	c := wsDial(t, base+"/ws?token="+hsToken(t, "carol", 2*time.Second))
	m := readUntil(t, c, "expiring")
	t.Logf("expiring hint: in_ms=%v", m["in_ms"])
	if ms, _ := m["in_ms"].(float64); ms <= 0 || ms > 2000 {
		t.Fatalf("in_ms = %v, want (0, 2000]", m["in_ms"])
	}
	send(t, c, `{"op":"refresh","token":"`+hsToken(t, "carol", time.Hour)+`"}`)
	ok := readUntil(t, c, "refreshok")
	if exp, _ := ok["exp"].(float64); int64(exp) < time.Now().Add(50*time.Minute).Unix() {
		t.Fatalf("refreshok exp %v, want about an hour from now", ok["exp"])
	}
	time.Sleep(time.Until(first) + time.Second)
	if _, err := mem.Publish(context.Background(), "user:carol", []byte(`"after"`)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil || !strings.Contains(string(b), `"after"`) {
		t.Fatalf("after the first exp: %s %v, want the push", b, err)
	}
	if st := h.Stats(); st.Refreshes != 1 || st.RefreshRefused != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRefreshRefused: another sub, a bad signature, garbage, an empty
// token each get an err reply and change nothing: the connection still
// closes with 4003 at the first token's exp.
func TestRefreshRefused(t *testing.T) {
	base, h, _ := startAuthStack(t, Config{Auth: newAuth(t), Public: []string{}})
	c := wsDial(t, base+"/ws?token="+hsToken(t, "dave", 3*time.Second))
	readOp(t, c)
	forged, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "dave", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(strings.Repeat("x", 32)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		req  string
		code float64
	}{
		{`{"op":"refresh","token":"` + hsToken(t, "mallory", time.Hour) + `"}`, 403},
		{`{"op":"refresh","token":"` + forged + `"}`, 401},
		{`{"op":"refresh","token":"not.a.jwt"}`, 401},
		{`{"op":"refresh","token":"` + hsToken(t, "dave", -time.Minute) + `"}`, 401},
		{`{"op":"refresh","token":""}`, 400},
		{`{"op":"refresh"}`, 400},
	} {
		send(t, c, tc.req)
		m := readUntil(t, c, "err")
		if m["code"] != tc.code {
			t.Errorf("%.60s: %v, want code %v", tc.req, m, tc.code)
		}
	}
	if st := h.Stats(); st.Refreshes != 0 || st.RefreshRefused != 4 {
		t.Errorf("stats %+v, want 0 accepted and 4 refused (2 were malformed requests)", st)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errorsAs(err, &ce) || ce.Code != 4003 {
				t.Fatalf("want close 4003 at the first exp, got %v", err)
			}
			return
		}
		if !strings.Contains(string(b), `"op":"expiring"`) {
			t.Fatalf("unexpected %s", b)
		}
	}
}

// TestRefreshNarrowsChannels: a refreshed token without room:* ends the
// room:1 subscription with a reason; the personal channel stays.
func TestRefreshNarrowsChannels(t *testing.T) {
	base, _, mem := startAuthStack(t, Config{Auth: newAuth(t), Public: []string{}})
	c := wsDial(t, base+"/ws?token="+hsToken(t, "erin", time.Hour, "room:*"))
	if m := wsOp(t, c, `{"op":"sub","ch":"room:1"}`); m["op"] != "subok" {
		t.Fatalf("%v", m)
	}
	send(t, c, `{"op":"refresh","token":"`+hsToken(t, "erin", 2*time.Hour)+`"}`)
	readUntil(t, c, "refreshok")
	m := readUntil(t, c, "unsubscribed")
	if m["ch"] != "room:1" || !strings.Contains(m["reason"].(string), "not allowed") {
		t.Fatalf("%v", m)
	}
	ctx := context.Background()
	_, _ = mem.Publish(ctx, "room:1", []byte(`"gone"`))
	_, _ = mem.Publish(ctx, "user:erin", []byte(`"mine"`))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil || !strings.Contains(string(b), `"mine"`) {
		t.Fatalf("%s %v, want only the personal push", b, err)
	}
	if m := wsOp(t, c, `{"op":"sub","ch":"room:2"}`); m["op"] != "err" || m["code"] != float64(403) {
		t.Fatalf("room:2 after narrowing: %v", m)
	}
}

// TestRefreshStormRateLimited: refresh ops count against the message
// rate limit like any op.
func TestRefreshStormRateLimited(t *testing.T) {
	base, h, _ := startAuthStack(t, Config{Auth: newAuth(t), Public: []string{}, MaxMessageRate: 5, MaxMessageBurst: 5})
	c := wsDial(t, base+"/ws?token="+hsToken(t, "frank", time.Hour))
	tok := hsToken(t, "frank", 2*time.Hour)
	for range 50 {
		if c.WriteMessage(websocket.TextMessage, []byte(`{"op":"refresh","token":"`+tok+`"}`)) != nil {
			break
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errorsAs(err, &ce) || ce.Code != 1008 {
				t.Fatalf("want 1008, got %v", err)
			}
			break
		}
	}
	if st := h.Stats(); st.RateLimitCloses != 1 || st.Refreshes > 6 {
		t.Errorf("stats %+v", st)
	}
}

// TestRefreshKeepsSubject: a refresh replaces the grant's expiry and
// patterns but never writes its Subject, the user index's key, which
// other goroutines read (the server API, Close): run with -race.
func TestRefreshKeepsSubject(t *testing.T) {
	e := newEnv(t, Config{Auth: newAuth(t), Public: []string{}})
	s := newSession(e.h, &recorder{}, urlRequest{}, auth.Grant{Subject: "frank", Expires: time.Now().Add(time.Minute)})
	subject := unsafe.StringData(s.subject)
	e.h.users.add(s)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.h.users.remove(s)
			e.h.users.add(s)
		}
	}()
	for i := range 20 {
		s.refresh(hsToken(t, "frank", time.Duration(i+2)*time.Hour, "room:*"))
	}
	close(stop)
	<-done
	if st := e.h.Stats(); st.Refreshes != 20 || st.RefreshRefused != 0 {
		t.Fatalf("stats %+v, want 20 refreshes", st)
	}
	if unsafe.StringData(s.subject) != subject || s.subject != "frank" {
		t.Errorf("Subject rewritten: %q", s.subject)
	}
	if exp := time.Unix(0, s.expires.Load()); time.Until(exp) < 20*time.Hour || !s.allowed("room:1") {
		t.Errorf("grant not refreshed: exp %v, channels %v", exp, s.channels)
	}
	e.h.users.remove(s)
	if n := e.h.Users(); n != 0 {
		t.Errorf("Users() = %d after remove, want 0", n)
	}
}
