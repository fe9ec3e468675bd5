package main_test

// Presence across two real nodes and a real Redis (issue 21): users with
// different subs on each node both show in GET /api/presence; a closed
// connection is gone within 5 s and a kill -9'd node's members within 2
// heartbeats; join and leave events reach the other subscriber.

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// presenceUsers is GET /api/presence?ch= (every page) on p.
func presenceUsers(t *testing.T, p *pushdtest.Proc, ch string) []string {
	t.Helper()
	var users []string
	cursor := "0"
	for range 100 {
		req, _ := http.NewRequest("GET", p.AdminURL("/api/presence?limit=1000&ch="+ch+"&cursor="+cursor), nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Users  []string `json:"users"`
			Cursor uint64   `json:"cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("GET /api/presence: %d %v", resp.StatusCode, err)
		}
		users = append(users, page.Users...)
		if page.Cursor == 0 {
			break
		}
		cursor = strconv.FormatUint(page.Cursor, 10)
	}
	slices.Sort(users)
	return slices.Compact(users)
}

// waitPresence polls /api/presence on p until it equals want; it returns
// how long that took.
func waitPresence(t *testing.T, p *pushdtest.Proc, ch string, want []string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := presenceUsers(t, p, ch)
		if slices.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("/api/presence?ch=%s on %s: %v after %v, want %v", ch, p.AdminAddr, got, d, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readEvent reads frames from c until {"op":op,"user":user}.
func readEvent(t *testing.T, c *websocket.Conn, op, user string, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s of %s: %v", op, user, err)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		if m["op"] == op && m["user"] == user && m["ch"] == "room:1" {
			return
		}
	}
}

func TestPresenceTwoNodes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	secret := strings.Repeat("presence-secret-", 2)
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	const beat = time.Second
	nodes := startNodes(t, 2, "-redis", "redis://"+srv.Addr+"/0", "-jwt-hs256-secret-file", file, "-admin-api-key", apiKey,
		"-presence", "room:*", "-presence-events", "room:*", "-presence-heartbeat", beat.String(), "-presence-grace", "300ms")
	a, b := nodes[0], nodes[1]
	for _, p := range nodes {
		waitLog(t, p, "control channel subscribed")
	}
	dial := func(p *pushdtest.Proc, sub string) *websocket.Conn {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "channels": []string{"room:*"}, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := websocket.DefaultDialer.Dial("ws://"+p.WSAddr+"/ws?token="+tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"sub","ch":"room:1"}`)); err != nil {
			t.Fatal(err)
		}
		readJSONUntil(t, c, "subok")
		return c
	}

	// Acceptance 1: alice on node a, bob on node b, both listed (on either
	// node), and alice sees bob join.
	alice := dial(a, "alice")
	bob := dial(b, "bob")
	readEvent(t, alice, "join", "bob", 15*time.Second)
	waitPresence(t, a, "room:1", []string{"alice", "bob"}, 15*time.Second)
	waitPresence(t, b, "room:1", []string{"alice", "bob"}, 15*time.Second)
	// The client op answers the same, cluster-wide; stats count both.
	if err := alice.WriteMessage(websocket.TextMessage, []byte(`{"op":"presence","ch":"room:1"}`)); err != nil {
		t.Fatal(err)
	}
	if m := readJSONUntil(t, alice, "presence"); len(m["users"].([]any)) != 2 {
		t.Fatalf("presence op: %v", m)
	}
	if err := alice.WriteMessage(websocket.TextMessage, []byte(`{"op":"presence_stats","ch":"room:1"}`)); err != nil {
		t.Fatal(err)
	}
	if m := readJSONUntil(t, alice, "presence_stats"); m["users"] != 2.0 || m["conns"] != 2.0 {
		t.Fatalf("presence_stats op: %v", m)
	}

	// Acceptance 2a: bob closes; he is gone within 5 s; alice sees him leave.
	closed := time.Now()
	_ = bob.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	bob.Close()
	readEvent(t, alice, "leave", "bob", 15*time.Second)
	left := time.Since(closed)
	waitPresence(t, a, "room:1", []string{"alice"}, 15*time.Second)
	gone := time.Since(closed)
	if gone > 5*time.Second {
		t.Fatalf("bob still listed %v after closing, want within 5 s", gone)
	}

	// Acceptance 2b: carol on node b; kill -9 node b; she is gone within
	// two heartbeats, and alice (node a) sees her leave.
	carol := dial(b, "carol")
	readEvent(t, alice, "join", "carol", 15*time.Second)
	waitPresence(t, a, "room:1", []string{"alice", "carol"}, 15*time.Second)
	_ = carol
	if err := syscall.Kill(b.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// The exact bound, on Redis's clock: carol's expiry is at most two
	// heartbeats after the kill (her node refreshed it at most then).
	now := strings.Fields(srv.MustDo(t, "TIME"))
	sec, _ := strconv.ParseInt(now[0], 10, 64)
	usec, _ := strconv.ParseInt(now[1], 10, 64)
	score, err := strconv.ParseInt(srv.MustDo(t, "ZSCORE", "pushd:{room:1}:p", "carol"), 10, 64)
	if err != nil {
		t.Fatalf("carol's presence entry: %v", err)
	}
	if exp := time.Duration(score-(sec*1000+usec/1000)) * time.Millisecond; exp > 2*beat {
		t.Fatalf("carol's entry expires %v after the kill, want within 2 heartbeats (%v)", exp, 2*beat)
	}
	vanished := waitPresence(t, a, "room:1", []string{"alice"}, 15*time.Second)
	if vanished > 2*beat+time.Second { // + slack for the polls on a busy machine
		t.Fatalf("carol still listed %v after kill -9 of her node, want within 2 heartbeats (%v)", vanished, 2*beat)
	}
	readEvent(t, alice, "leave", "carol", 15*time.Second)
	t.Logf("bob's leave event reached alice %v after he closed (grace 300ms), gone from /api/presence after %v; kill -9 of carol's node: gone from /api/presence after %v, leave event after %v (heartbeat %v)",
		left.Round(time.Millisecond), gone.Round(time.Millisecond), vanished.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), beat)
}
