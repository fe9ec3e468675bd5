package conformance

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumExe is Debian's chromium (apt-get install chromium).
const chromiumExe = "/usr/bin/chromium"

//go:embed browser/page.html
var pageHTML []byte

// startBrowser serves browser/page.html from an http://127.0.0.1 origin
// (from about:blank Chromium refuses loopback WebSockets), starts headless
// chromium through chromedp and returns a context whose tab shows the page.
func startBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	skipPeer(t, "chromium")
	if _, err := os.Stat(chromiumExe); err != nil {
		missingPeer(t, "Debian chromium ("+chromiumExe+")", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(pageHTML)
	}))
	t.Cleanup(srv.Close)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumExe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	// The first Run starts the browser and must not carry a timeout (it
	// would bound the browser's life); a watchdog bounds it instead.
	start := time.Now()
	watchdog := time.AfterFunc(raceScale(60*time.Second), cancel)
	err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/page.html"))
	watchdog.Stop()
	if err != nil {
		t.Fatalf("chromium: navigate to the test page: %v", err)
	}
	t.Logf("chromium up and page loaded in %v", time.Since(start).Round(time.Millisecond))
	return ctx
}

// evalJS evaluates a promise-returning expression in the page.
func evalJS(t *testing.T, ctx context.Context, timeout time.Duration, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("chromium: evaluate %.80s: %v", expr, err)
	}
	return s
}

func jsArgs(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// parseLines decodes the JSON lines the page returns.
func parseLines(t *testing.T, s string) []scriptResult {
	t.Helper()
	var out []scriptResult
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var r scriptResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("page result %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// TestChromium judges pushd with headless Debian chromium: a page opens
// WebSockets to pushd, sends text and ArrayBuffer messages of every size,
// checks the echoes and closes with each code a script may use.
func TestChromium(t *testing.T) {
	t.Parallel()
	ctx := startBrowser(t)
	p := startEcho(t)
	var want []string
	for _, kind := range []string{"text", "binary"} {
		for _, n := range echoSizes {
			want = append(want, fmt.Sprintf("echo-%s-%d", kind, n))
		}
	}
	want = append(want, "close-after-echo-text", "close-after-echo-binary", "subprotocol-pushd.v1")
	for _, c := range browserCloseCodes {
		want = append(want, fmt.Sprintf("close-%d", c))
	}
	expr := fmt.Sprintf("runCases(%s, %s, %s)", jsArgs(p.URL("/chromium")), jsArgs(echoSizes), jsArgs(browserCloseCodes))
	start := time.Now()
	res := parseLines(t, evalJS(t, ctx, raceScale(2*time.Minute), expr))
	t.Logf("page ran %d cases in %v", len(res), time.Since(start).Round(time.Millisecond))
	judgeScript(t, "chromium", res, want)
}
