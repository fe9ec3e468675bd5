package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/pushd/pushd/presence"
)

func TestPresenceAPI(t *testing.T) {
	store := presence.NewMemoryStore()
	users := make([]string, 0, 250)
	for i := range 250 {
		users = append(users, fmt.Sprintf("u%03d", i))
	}
	if _, _, err := store.Update(context.Background(), "room:1", presence.Update{Conns: 260, Add: users}); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listen: "127.0.0.1:0", APIKey: testKey, Routes: PresenceAPI{Presence: store, Enabled: func(ch string) bool { return strings.HasPrefix(ch, "room:") }}.Routes()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	key := "Bearer " + testKey
	if code, _ := do(s, "GET", "/api/presence?ch=room:1", ""); code != 401 {
		t.Fatalf("without the key: %d", code)
	}
	if code, body := do(s, "GET", "/api/presence/stats?ch=room:1", key); code != 200 || !strings.Contains(body, `"conns":260`) || !strings.Contains(body, `"users":250`) {
		t.Fatalf("stats: %d %s", code, body)
	}
	seen := map[string]bool{}
	for cursor, pages := uint64(0), 0; ; pages++ {
		code, body := do(s, "GET", fmt.Sprintf("/api/presence?ch=room:1&limit=100&cursor=%d", cursor), key)
		var p struct {
			Users  []string `json:"users"`
			Cursor uint64   `json:"cursor"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &p) != nil || len(p.Users) > 100 || pages > 3 {
			t.Fatalf("page %d: %d %s", pages, code, body)
		}
		for _, u := range p.Users {
			seen[u] = true
		}
		if cursor = p.Cursor; cursor == 0 {
			break
		}
	}
	if len(seen) != 250 {
		t.Fatalf("paged %d users, want 250", len(seen))
	}
	for _, c := range []struct {
		path string
		code int
		want string
	}{
		{"/api/presence?ch=lobby", 404, "not_found"},
		{"/api/presence?ch=", 400, "bad_channel"},
		{"/api/presence?ch=a,b", 400, "bad_channel"},
		{"/api/presence?ch=room:1&limit=0", 400, "bad_request"},
		{"/api/presence?ch=room:1&limit=1001", 400, "bad_request"},
		{"/api/presence?ch=room:1&cursor=-1", 400, "bad_request"},
		{"/api/presence/stats?ch=lobby", 404, "not_found"},
	} {
		if code, body := do(s, "GET", c.path, key); code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want %d %s", c.path, code, body, c.code, c.want)
		}
	}
}
