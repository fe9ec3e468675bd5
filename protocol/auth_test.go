package protocol

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/poller"
)

var testSecret = []byte(strings.Repeat("0123456789abcdef", 2))

// startAuthStack runs poller + protocol (cfg, Hub filled in) + hub +
// memory broker on 127.0.0.1:0.
func startAuthStack(t *testing.T, cfg Config) (string, *Handler, *cluster.Memory) {
	t.Helper()
	mem, err := cluster.NewMemory(cluster.MemoryConfig{HistorySize: 100})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := fanout.New(fanout.Config{Broker: mem})
	if err != nil {
		t.Fatal(err)
	}
	mem.Attach(hub)
	cfg.Hub = hub
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := poller.New(poller.Config{Backend: os.Getenv("PUSHD_POLLER"), Tick: 10 * time.Millisecond}, h)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return "ws://" + addr.String(), h, mem
}

func hsToken(t *testing.T, sub string, exp time.Duration, channels ...string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "exp": time.Now().Add(exp).Unix(), "channels": channels,
	}).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newAuth(t *testing.T) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(auth.Config{Keys: auth.KeyConfig{HS256Secret: testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func readOp(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	m := wsOp(t, c, `{"op":"ping"}`)
	return m
}

// TestAuthGrant: the personal channel is live at once, the token's
// patterns and the public ones may be subscribed, anything else gets err
// 403 and leaves the other subscriptions working.
func TestAuthGrant(t *testing.T) {
	base, h, mem := startAuthStack(t, Config{Auth: newAuth(t), Public: []string{"news"}})
	c, resp, err := (&websocket.Dialer{Subprotocols: []string{"pushd.v1", "bearer." + hsToken(t, "alice", time.Hour, "room:*")}}).Dial(base+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "pushd.v1" {
		t.Fatalf("selected subprotocol %q, want pushd.v1", got)
	}
	if m := readOp(t, c); m["op"] != "pong" {
		t.Fatalf("%v", m)
	}
	for _, ch := range []string{"room:1", "news"} {
		if m := wsOp(t, c, `{"op":"sub","ch":"`+ch+`"}`); m["op"] != "subok" {
			t.Fatalf("sub %s: %v", ch, m)
		}
	}
	for _, ch := range []string{"secret", "user:bob", "roomx"} {
		if m := wsOp(t, c, `{"op":"sub","ch":"`+ch+`"}`); m["op"] != "err" || m["code"] != float64(403) || m["ch"] != ch {
			t.Fatalf("sub %s: %v, want err 403", ch, m)
		}
	}
	ctx := context.Background()
	for _, ch := range []string{"secret", "user:alice", "room:1", "news"} {
		if _, err := mem.Publish(ctx, ch, []byte(`"`+ch+`"`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"user:alice", "room:1", "news"} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil || !strings.Contains(string(b), `"ch":"`+want+`"`) {
			t.Fatalf("want a push of %s, got %s %v", want, b, err)
		}
	}
	if st := h.Stats(); st.Forbidden != 3 {
		t.Errorf("Forbidden = %d, want 3", st.Forbidden)
	}
	// bearer.<token> without pushd.v1: 400, never the bearer entry echoed.
	_, resp, err = (&websocket.Dialer{Subprotocols: []string{"bearer." + hsToken(t, "alice", time.Hour)}}).Dial(base+"/ws", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bearer without pushd.v1: %v %v, want 400", err, resp)
	}
}

func TestAuthTokenExpiresMidConnection(t *testing.T) {
	base, _, _ := startAuthStack(t, Config{Auth: newAuth(t), Public: []string{}})
	// jwt exp has one-second resolution: expire 2 s from now.
	c := wsDial(t, base+"/ws?token="+hsToken(t, "bob", 2*time.Second))
	start := time.Now()
	if m := readOp(t, c); m["op"] != "pong" {
		t.Fatalf("%v", m)
	}
	// The expiring hint comes first; a client that does not refresh is
	// closed at exp all the same.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil || !strings.Contains(string(b), `"op":"expiring"`) {
		t.Fatalf("want the expiring hint, got %s %v", b, err)
	}
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	if !errorsAs(err, &ce) || ce.Code != 4003 {
		t.Fatalf("want close 4003, got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

func TestMessageRateCloses1008(t *testing.T) {
	base, h, _ := startAuthStack(t, Config{MaxMessageRate: 5, MaxMessageBurst: 5})
	c := wsDial(t, base+"/ws")
	for range 20 {
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
			break
		}
	}
	pongs := 0
	for {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errorsAs(err, &ce) || ce.Code != 1008 {
				t.Fatalf("want close 1008, got %v", err)
			}
			break
		}
		if strings.Contains(string(b), "pong") {
			pongs++
		}
	}
	if pongs < 5 || pongs > 6 {
		t.Errorf("%d pongs before the close, want the burst of 5", pongs)
	}
	if h.Stats().RateLimitCloses != 1 {
		t.Errorf("RateLimitCloses = %d", h.Stats().RateLimitCloses)
	}
}

func errorsAs(err error, target any) bool { return err != nil && errors.As(err, target) }

// While the broker path is not ready, upgrades get 503 + Retry-After
// and nothing is subscribed; once ready, the same request succeeds.
func TestNotReadyRefuses503(t *testing.T) {
	var ready atomic.Bool
	base, h, _ := startAuthStack(t, Config{Ready: ready.Load})
	_, resp, err := websocket.DefaultDialer.Dial(base+"/ws?ch=a", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("not ready: err=%v resp=%v", err, resp)
	}
	if got := h.Stats().NotReady; got != 1 {
		t.Fatalf("NotReady = %d, want 1", got)
	}
	if n := h.hub.Stats().Subscriptions; n != 0 {
		t.Fatalf("%d subscriptions after a refused upgrade", n)
	}
	ready.Store(true)
	c := wsDial(t, base+"/ws?ch=a")
	c.Close()
}
