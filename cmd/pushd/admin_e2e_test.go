package main

// The admin listener on a non-loopback address with a key (issue 16): the
// real binary, every route, no key in any body.

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/pushdtest"
)

// adminProbes are requests for every route pushd serves on the admin
// listener (with -admin-pprof) plus paths that route nowhere. The admin
// package's TestEveryProtectedRouteNeedsTheKey enumerates the table
// itself; this proves the wiring in the real binary.
var adminProbes = []struct{ method, path string }{
	{"GET", "/stats"}, {"GET", "/metrics"}, {"POST", "/publish?ch=news"},
	{"GET", "/debug/pprof/"}, {"GET", "/debug/pprof/cmdline"}, {"GET", "/debug/pprof/heap"},
	{"GET", "/debug/pprof/goroutine?debug=2"}, {"GET", "/debug/pprof/symbol"},
	{"GET", "/debug/pprof/profile?seconds=1"}, {"GET", "/debug/pprof/trace?seconds=1"},
	{"POST", "/debug/freeosmemory"}, {"POST", "/api/publish"}, {"POST", "/api/disconnect"},
	{"POST", "/api/subscribe"}, {"POST", "/api/unsubscribe"}, {"GET", "/api/node"}, {"GET", "/nope"}, {"DELETE", "/livez"}, {"POST", "/stats"},
}

func adminGet(t *testing.T, method, url, authz string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminLockedDown: -admin-listen 0.0.0.0 with the key as a flag (the
// worst case: it is in argv) and pprof on. Without the key every route but
// /livez and /readyz answers 401 (or 405), and no body, with or without
// the key, contains the key.
func TestAdminLockedDown(t *testing.T) {
	const key = "issue16-admin-key-0123456789abcdef"
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{
		"-admin-listen", "0.0.0.0:0", "-admin-api-key", key, "-admin-pprof"}})
	_, port, err := net.SplitHostPort(p.AdminAddr)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://127.0.0.1:" + port
	for _, path := range []string{"/livez", "/readyz"} {
		if code, _ := adminGet(t, "GET", base+path, ""); code != 200 {
			t.Errorf("GET %s without key: %d, want 200", path, code)
		}
	}
	for _, pr := range adminProbes {
		code, body := adminGet(t, pr.method, base+pr.path, "")
		if code != 401 && code != 403 && code != 405 {
			t.Errorf("%s %s without key: %d, want 401/403/405", pr.method, pr.path, code)
		}
		if strings.Contains(body, key) {
			t.Errorf("%s %s without key: body contains the key", pr.method, pr.path)
		}
		code, body = adminGet(t, pr.method, base+pr.path, "Bearer "+key)
		t.Logf("%s %s with key: %d (%d bytes)", pr.method, pr.path, code, len(body))
		if strings.Contains(body, key) {
			t.Errorf("%s %s with the key: body contains the key", pr.method, pr.path)
		}
		if code == 401 {
			t.Errorf("%s %s with the key: 401", pr.method, pr.path)
		}
	}
	if code, _ := adminGet(t, "GET", base+"/debug/pprof/cmdline", "Bearer "+key); code != 404 {
		t.Errorf("cmdline with the key: %d, want 404", code)
	}
}

// TestAdminKeyFile: the key from -admin-api-key-file (trailing newline
// ignored), pprof off by default, and /metrics open only with
// -admin-metrics-open.
func TestAdminKeyFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, []byte("from-a-file-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-admin-api-key-file", file, "-admin-metrics-open"}})
	for _, c := range []struct {
		method, path, authz string
		want                int
	}{
		{"GET", "/stats", "", 401},
		{"GET", "/stats", "Bearer from-a-file-key", 200},
		{"GET", "/metrics", "", 200},
		{"GET", "/debug/pprof/heap", "Bearer from-a-file-key", 404},
		{"POST", "/debug/freeosmemory", "Bearer from-a-file-key", 404},
	} {
		if code, _ := adminGet(t, c.method, p.AdminURL(c.path), c.authz); code != c.want {
			t.Errorf("%s %s (%q): %d, want %d", c.method, c.path, c.authz, code, c.want)
		}
	}
}
