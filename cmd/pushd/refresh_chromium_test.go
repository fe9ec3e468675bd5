package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/pushd/pushd/internal/pushdtest"
)

// TestRefreshChromium: the JS client (served by pushd on its public port)
// in headless Debian chromium, with an async token function, stays
// connected past its first token's exp by refreshing in band (issue 16),
// and still receives afterwards.
func TestRefreshChromium(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(demoChromium); err != nil {
		t.Fatalf("Debian chromium (%s) is not installed: run scripts/test.sh: %v", demoChromium, err)
	}
	secret := strings.Repeat("chromium-refresh-", 3)
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-demo", "-jwt-hs256-secret-file", file, "-auth-required"}})
	sign := func(ttl time.Duration) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": "alice", "exp": time.Now().Add(ttl).Unix(), "channels": []string{"room:*"},
		}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(demoChromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	watchdog := time.AfterFunc(90*time.Second, cancel)
	err := chromedp.Do(ctx, chromedp.Navigate("http://"+p.WSAddr+"/pushd.js"))
	watchdog.Stop()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	eval := func(timeout time.Duration, expr string) string {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		s, err := chromedp.Run(c, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("chromium: %.80s: %v\npushd log:\n%s", expr, err, p.Log())
		}
		return s
	}
	// waitJS polls cond in the page until it is true.
	waitJS := func(cond string, timeout time.Duration) {
		t.Helper()
		eval(timeout+5*time.Second, fmt.Sprintf(`new Promise((ok, fail) => { const end = Date.now() + %d;
			(function poll() { if (%s) return ok("yes");
			  if (Date.now() > end) return fail(new Error("timed out: " + JSON.stringify(window.ev)));
			  setTimeout(poll, 20); })(); })`, timeout.Milliseconds(), cond))
	}
	// Signed now: the browser's start-up may take longer than a 3 s token.
	first, second := sign(3*time.Second), sign(time.Hour)
	firstExp := time.Now().Add(3 * time.Second)
	eval(30*time.Second, fmt.Sprintf(`(async () => {
		const { connect } = await import("/pushd.js");
		const toks = [%q, %q];
		window.ev = { calls: 0, subscribed: 0, refreshed: 0, closes: 0, tokenErrors: 0, got: [] };
		const c = connect("ws://%s/ws", { pingInterval: 0,
			token: () => new Promise((ok) => setTimeout(() => ok(toks[Math.min(window.ev.calls++, 1)]), 10)) });
		window.client = c;
		const t0 = Date.now(); window.ev.log = [];
		for (const k of ["connecting", "open", "reconnecting", "expiring", "refreshed", "close", "tokenError", "error", "subscribed"]) c.on(k, (e) => window.ev.log.push((Date.now() - t0) + " " + k + " " + JSON.stringify(e)));
		c.on("subscribed", () => window.ev.subscribed++);
		c.on("refreshed", () => window.ev.refreshed++);
		c.on("close", (e) => { window.ev.closes++; window.ev.closeCode = e.code; window.ev.closeReason = e.reason; });
		c.on("expiring", (e) => { window.ev.expiring = e.inMs; });
		c.on("error", (e) => { window.ev.lastError = String(e.reason ?? e.error); });
		c.on("tokenError", () => window.ev.tokenErrors++);
		c.on("message", (m) => window.ev.got.push(m.data));
		c.subscribe("room:1");
		return "started";
	})()`, first, second, p.WSAddr))
	waitJS(`window.ev.subscribed === 1`, 20*time.Second)
	waitJS(`window.ev.refreshed === 1`, 20*time.Second)
	time.Sleep(time.Until(firstExp) + 1500*time.Millisecond)
	req, _ := http.NewRequest("POST", p.AdminURL("/publish?ch=room:1"), strings.NewReader(`"after-exp"`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitJS(`window.ev.got.includes("after-exp")`, 20*time.Second)
	state := eval(5*time.Second, `Promise.resolve(JSON.stringify({ev: window.ev, stats: window.client.stats}))`)
	t.Logf("page: %s", state)
	if !strings.Contains(state, `"closes":0`) || !strings.Contains(state, `"connects":1`) || !strings.Contains(state, `"calls":2`) || !strings.Contains(state, `"tokenErrors":0`) {
		t.Fatalf("want one connection, no close, two token() calls, no token errors: %s", state)
	}
}
