package admin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/presence"
)

const testKey = "k3y-that-must-never-echo-0123456789"

type nopPublisher struct{ calls int }

type recControl struct{ sent []cluster.ControlMsg }

func (c *recControl) Send(_ context.Context, m cluster.ControlMsg) error {
	c.sent = append(c.sent, m)
	return nil
}

func (p *nopPublisher) Publish(context.Context, string, []byte) (uint64, error) {
	p.calls++
	return 7, nil
}

func newTestServer(t *testing.T, cfg Config) (*Server, *nopPublisher) {
	t.Helper()
	pub := &nopPublisher{}
	cfg.Listen = "127.0.0.1:0"
	cfg.Routes = append(cfg.Routes,
		Route{Pattern: "GET /metrics", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "m 1\n") })},
		Route{Pattern: "GET /stats", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "{}\n") })},
		PublishRoute(pub, 1<<10),
	)
	cfg.Routes = append(cfg.Routes, ServerAPI{Control: &recControl{}, Publisher: pub, MaxBytes: 1 << 10, Node: func() any { return map[string]int{"users": 0} }}.Routes()...)
	cfg.Routes = append(cfg.Routes, PresenceAPI{Presence: presence.NewMemoryStore(), Enabled: func(string) bool { return true }}.Routes()...)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s, pub
}

// do serves one request in process through the whole middleware + table.
func do(s *Server, method, path, authz string) (int, string) {
	req := httptest.NewRequest(method, path, strings.NewReader("{}"))
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// routePath turns a pattern into a concrete request (method, path).
func routePath(pattern string) (string, string) {
	method, path, _ := strings.Cut(pattern, " ")
	if strings.HasSuffix(path, "/") {
		path += "heap"
	}
	if strings.HasSuffix(path, "/profile") || strings.HasSuffix(path, "/trace") {
		path += "?seconds=1"
	}
	if path == "/publish" {
		path += "?ch=news"
	}
	return method, path
}

// TestEveryProtectedRouteNeedsTheKey enumerates the route table and proves
// every route but /livez and /readyz answers 401 without the key, with a
// wrong key, and with a wrong method; that the key works; and that no
// body contains the key.
func TestEveryProtectedRouteNeedsTheKey(t *testing.T) {
	s, pub := newTestServer(t, Config{APIKey: testKey, Pprof: true})
	var public []string
	for _, r := range s.Routes() {
		method, path := routePath(r.Pattern)
		if r.Public {
			public = append(public, r.Pattern)
			if code, body := do(s, method, path, ""); code != 200 {
				t.Errorf("%s without key: %d %q, want 200", r.Pattern, code, body)
			}
			continue
		}
		for _, authz := range []string{"", "Bearer wrong", "Bearer " + testKey + "x", testKey, "Basic " + testKey, "bearer " + testKey} {
			code, body := do(s, method, path, authz)
			if code != http.StatusUnauthorized {
				t.Errorf("%s %s with Authorization %q: %d, want 401", method, path, authz, code)
			}
			if strings.Contains(body, testKey) {
				t.Errorf("%s: body contains the key", r.Pattern)
			}
		}
		other := http.MethodDelete
		if code, _ := do(s, other, path, ""); code != http.StatusUnauthorized {
			t.Errorf("%s %s without key: %d, want 401", other, path, code)
		}
		if strings.HasSuffix(r.Pattern, "/profile") || strings.HasSuffix(r.Pattern, "/trace") {
			continue // a second-long profile per route is enough proof above
		}
		code, body := do(s, method, path, "Bearer "+testKey)
		if code == http.StatusUnauthorized || code >= 500 {
			t.Errorf("%s with the key: %d %q", r.Pattern, code, body)
		}
		if strings.Contains(body, testKey) {
			t.Errorf("%s with the key: body contains the key", r.Pattern)
		}
	}
	if strings.Join(public, ",") != "GET /livez,GET /readyz" {
		t.Errorf("public routes %v, want only /livez and /readyz", public)
	}
	if pub.calls != 1 {
		t.Errorf("publish ran %d times, want 1 (only with the key)", pub.calls)
	}
	for _, path := range []string{"/nope", "/debug/pprof/cmdline", "//livez/../stats", "/livez/", "/LIVEZ"} {
		if code, _ := do(s, http.MethodGet, path, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without key: %d, want 401", path, code)
		}
	}
	if code, body := do(s, http.MethodGet, "/debug/pprof/cmdline", "Bearer "+testKey); code != http.StatusNotFound || strings.Contains(body, testKey) {
		t.Errorf("cmdline with the key: %d %q, want 404", code, body)
	}
}

func TestPprofOffByDefault(t *testing.T) {
	s, _ := newTestServer(t, Config{APIKey: testKey})
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
		if code, _ := do(s, http.MethodGet, path, "Bearer "+testKey); code != http.StatusNotFound {
			t.Errorf("GET %s with the key and pprof off: %d, want 404", path, code)
		}
	}
	if code, _ := do(s, http.MethodPost, "/debug/freeosmemory", "Bearer "+testKey); code != http.StatusNotFound {
		t.Errorf("freeosmemory with pprof off: %d, want 404", code)
	}
}

func TestOpenMetrics(t *testing.T) {
	s, _ := newTestServer(t, Config{APIKey: testKey, OpenMetrics: true})
	if code, _ := do(s, http.MethodGet, "/metrics", ""); code != 200 {
		t.Errorf("/metrics with OpenMetrics: %d, want 200", code)
	}
	if code, _ := do(s, http.MethodGet, "/stats", ""); code != http.StatusUnauthorized {
		t.Errorf("/stats with OpenMetrics: %d, want 401", code)
	}
	s2, _ := newTestServer(t, Config{APIKey: testKey})
	if code, _ := do(s2, http.MethodGet, "/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without OpenMetrics: %d, want 401", code)
	}
}

func TestNoKeyServesEverything(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	if code, _ := do(s, http.MethodGet, "/stats", ""); code != 200 {
		t.Errorf("/stats without a configured key: %d, want 200", code)
	}
}

func TestConfigErrors(t *testing.T) {
	h := http.NotFoundHandler()
	for name, cfg := range map[string]Config{
		"no listen":    {},
		"public route": {Listen: "127.0.0.1:0", Routes: []Route{{Pattern: "GET /x", Handler: h, Public: true}}},
		"no method":    {Listen: "127.0.0.1:0", Routes: []Route{{Pattern: "/x", Handler: h}}},
		"duplicate":    {Listen: "127.0.0.1:0", Routes: []Route{{Pattern: "GET /livez", Handler: h}}},
		"no handler":   {Listen: "127.0.0.1:0", Routes: []Route{{Pattern: "GET /x"}}},
	} {
		if s, err := New(cfg); err == nil {
			_ = s.Shutdown(context.Background())
			t.Errorf("%s: no error", name)
		}
	}
}

func TestReadyz(t *testing.T) {
	reason := "draining"
	s, _ := newTestServer(t, Config{APIKey: testKey, Ready: func() string { return reason }})
	if code, body := do(s, http.MethodGet, "/readyz", ""); code != 503 || !strings.Contains(body, "draining") {
		t.Errorf("/readyz: %d %q, want 503 draining", code, body)
	}
	reason = ""
	if code, _ := do(s, http.MethodGet, "/readyz", ""); code != 200 {
		t.Errorf("/readyz ready: %d", code)
	}
}
