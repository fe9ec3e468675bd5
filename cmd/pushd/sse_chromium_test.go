package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pushd/pushd/internal/pushdtest"
)

// noUpgradeProxy is an HTTP reverse proxy in front of pushd that refuses
// every request carrying Upgrade (403), as the corporate proxies and
// middleboxes of issue 20 do, and forwards everything else, streaming
// (no buffering). cut closes every client connection it holds.
type noUpgradeProxy struct {
	srv      *http.Server
	addr     string
	refused  atomic.Int64
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	lastEvID atomic.Value // the last Last-Event-ID header forwarded
}

func startNoUpgradeProxy(t *testing.T, target string) *noUpgradeProxy {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	p := &noUpgradeProxy{conns: map[net.Conn]struct{}{}}
	p.lastEvID.Store("")
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") != "" {
				p.refused.Add(1)
				http.Error(w, "upgrade blocked by proxy", http.StatusForbidden)
				return
			}
			if id := r.Header.Get("Last-Event-ID"); id != "" {
				p.lastEvID.Store(id)
			}
			rp.ServeHTTP(w, r)
		}),
		ConnState: func(c net.Conn, st http.ConnState) {
			p.mu.Lock()
			defer p.mu.Unlock()
			switch st {
			case http.StateNew:
				p.conns[c] = struct{}{}
			case http.StateClosed, http.StateHijacked:
				delete(p.conns, c)
			}
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	go func() { _ = p.srv.Serve(ln) }()
	t.Cleanup(func() { _ = p.srv.Close() })
	return p
}

// cut closes every client connection (a dropped path, mid-stream).
func (p *noUpgradeProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		_ = c.Close()
	}
	return n
}

// TestSSEChromium drives headless Debian chromium through a proxy that
// refuses Upgrade:
//   - the browser's own EventSource on /sse receives publications, is cut
//     mid-stream (the proxy closes its connection), reconnects by itself
//     with Last-Event-ID and gets every publication missed meanwhile:
//     0 lost, 0 duplicated (acceptance line 2, in a browser);
//   - the JS client (transports ["websocket", "sse"]) fails to upgrade,
//     falls back to SSE, says so ("open" with transport "sse"), and
//     receives; a subscribe on the open SSE connection reconnects with
//     both channels and loses nothing (acceptance line 3).
func TestSSEChromium(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(demoChromium); err != nil {
		t.Fatalf("Debian chromium (%s) is not installed: run scripts/test.sh: %v", demoChromium, err)
	}
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-demo"}})
	px := startNoUpgradeProxy(t, p.WSAddr)
	publish := func(ch, body string) {
		t.Helper()
		resp, err := http.Post(p.AdminURL("/publish?ch="+ch), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish %s: %d", ch, resp.StatusCode)
		}
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
	// The page's origin is the proxy: every request of the page goes
	// through it.
	err := chromedp.Do(ctx, chromedp.Navigate("http://"+px.addr+"/pushd.js"))
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
			t.Fatalf("chromium: %.80s: %v\npushd log:\n%s", expr, err, p.Tail(40))
		}
		return s
	}
	waitJS := func(cond string, timeout time.Duration) {
		t.Helper()
		eval(timeout+5*time.Second, fmt.Sprintf(`new Promise((ok, fail) => { const end = Date.now() + %d;
			(function poll() { if (%s) return ok("yes");
			  if (Date.now() > end) return fail(new Error("timed out: " + JSON.stringify(window.ev ?? null)));
			  setTimeout(poll, 20); })(); })`, timeout.Milliseconds(), cond))
	}

	t.Run("EventSourceResume", func(t *testing.T) {
		eval(10*time.Second, `(() => {
			window.ev = { got: [], ctl: [], opens: 0, errors: 0 };
			const es = new EventSource("/sse?ch=feed");
			window.es = es;
			es.onopen = () => window.ev.opens++;
			es.onerror = () => window.ev.errors++;
			es.addEventListener("feed", (e) => window.ev.got.push(e.lastEventId + "|" + e.data));
			es.addEventListener("pushd", (e) => window.ev.ctl.push(JSON.parse(e.data)));
			return "started";
		})()`)
		waitJS(`window.ev.ctl.length === 1`, 20*time.Second)
		const before, during, after = 10, 15, 5
		for i := 1; i <= before; i++ {
			publish("feed", fmt.Sprintf(`{"n":%d}`, i))
		}
		waitJS(fmt.Sprintf(`window.ev.got.length === %d`, before), 20*time.Second)
		if n := px.cut(); n == 0 {
			t.Fatal("no connection to cut")
		}
		cutAt := time.Now()
		// EventSource waits retry: (1000 ms) before reconnecting: these
		// are published while it is away.
		for i := before + 1; i <= before+during; i++ {
			publish("feed", fmt.Sprintf(`{"n":%d}`, i))
		}
		waitJS(`window.ev.opens >= 2`, 30*time.Second)
		t.Logf("EventSource reconnected %v after the cut with Last-Event-ID %q", time.Since(cutAt).Round(time.Millisecond), px.lastEvID.Load())
		for i := before + during + 1; i <= before+during+after; i++ {
			publish("feed", fmt.Sprintf(`{"n":%d}`, i))
		}
		waitJS(fmt.Sprintf(`window.ev.got.length >= %d`, before+during+after), 30*time.Second)
		time.Sleep(200 * time.Millisecond) // a duplicate would arrive right behind
		var st struct {
			Got    []string
			Ctl    []map[string]any
			Opens  int
			Errors int
		}
		if err := json.Unmarshal([]byte(eval(5*time.Second, `Promise.resolve(JSON.stringify(window.ev))`)), &st); err != nil {
			t.Fatal(err)
		}
		eval(5*time.Second, `Promise.resolve((window.es.close(), "closed"))`)
		seen := map[string]int{}
		lost, dup := 0, 0
		for _, g := range st.Got {
			id, data, _ := strings.Cut(g, "|")
			_, seq, _ := strings.Cut(id, ":")
			if data != fmt.Sprintf(`{"n":%s}`, seq) {
				t.Fatalf("event id %s data %s", id, data)
			}
			seen[seq]++
		}
		for i := 1; i <= before+during+after; i++ {
			switch n := seen[fmt.Sprint(i)]; {
			case n == 0:
				lost++
			case n > 1:
				dup += n - 1
			}
		}
		t.Logf("chromium EventSource: %d events over %d opens, lost %d, duplicated %d; control events %v", len(st.Got), st.Opens, lost, dup, st.Ctl)
		if lost != 0 || dup != 0 || len(st.Got) != before+during+after {
			t.Fatalf("lost %d, duplicated %d: %v", lost, dup, st.Got)
		}
		if px.lastEvID.Load() == "" {
			t.Fatal("the browser reconnected without Last-Event-ID")
		}
		if len(st.Ctl) != 2 || st.Ctl[1]["recovered"] != true {
			t.Fatalf("want a second subok with recovered:true, got %v", st.Ctl)
		}
	})

	t.Run("ClientFallsBack", func(t *testing.T) {
		// "late" is subscribed while the SSE stream is being opened (its
		// URL does not have it yet): the client must reopen with it.
		eval(30*time.Second, fmt.Sprintf(`(async () => {
			const { connect } = await import("/pushd.js");
			window.ev = { opens: [], got: [], subscribed: [], closes: [] };
			const c = connect("ws://%s/ws", { baseDelay: 200 });
			window.client = c;
			let late = false;
			c.on("connecting", () => {
				if (c.transport === "sse" && !late) { late = true; setTimeout(() => c.subscribe("late"), 0); }
			});
			c.on("open", (e) => window.ev.opens.push(e.transport));
			c.on("close", (e) => window.ev.closes.push(e.code));
			c.on("subscribed", (e) => window.ev.subscribed.push(e.ch + ":" + e.recovered));
			c.on("message", (m) => window.ev.got.push(m.ch + "|" + m.seq + "|" + JSON.stringify(m.data)));
			c.subscribe("news");
			return "started";
		})()`, px.addr))
		ready := `window.client.state === "open" && window.ev.subscribed.includes("late:true") && window.ev.subscribed.includes("news:true") && window.client._sock.channels.length === %d`
		waitJS(fmt.Sprintf(ready, 2), 30*time.Second)
		for i := 1; i <= 3; i++ {
			publish("news", fmt.Sprintf(`{"n":%d}`, i))
		}
		publish("late", `"l1"`)
		waitJS(`window.ev.got.length === 4`, 20*time.Second)
		// A subscribe on the open SSE connection reconnects with all three
		// channels; news and late resume from their positions.
		eval(5*time.Second, `Promise.resolve((window.client.subscribe("alerts"), "ok"))`)
		waitJS(fmt.Sprintf(ready, 3)+` && window.ev.subscribed.includes("alerts:true")`, 20*time.Second)
		publish("news", `{"n":4}`)
		publish("alerts", `"fire"`)
		publish("late", `"l2"`)
		waitJS(`window.ev.got.length === 7`, 20*time.Second)
		time.Sleep(200 * time.Millisecond)
		state := eval(5*time.Second, `Promise.resolve(JSON.stringify({ev: window.ev, transport: window.client.transport, stats: window.client.stats}))`)
		t.Logf("page: %s; upgrades refused by the proxy: %d", state, px.refused.Load())
		var st struct {
			Ev struct {
				Opens      []string
				Got        []string
				Subscribed []string
			}
			Transport string
			Stats     struct{ Duplicates, Gaps, Messages int }
		}
		if err := json.Unmarshal([]byte(state), &st); err != nil {
			t.Fatal(err)
		}
		if px.refused.Load() == 0 {
			t.Fatal("the client never tried a WebSocket")
		}
		if st.Transport != "sse" || len(st.Ev.Opens) == 0 || st.Ev.Opens[0] != "sse" {
			t.Fatalf("transport %q, opens %v: want sse", st.Transport, st.Ev.Opens)
		}
		want := map[string]bool{`news|1|{"n":1}`: true, `news|2|{"n":2}`: true, `news|3|{"n":3}`: true, `late|1|"l1"`: true,
			`news|4|{"n":4}`: true, `alerts|1|"fire"`: true, `late|2|"l2"`: true}
		if len(st.Ev.Got) != len(want) || st.Stats.Duplicates != 0 || st.Stats.Gaps != 0 || st.Stats.Messages != len(want) {
			t.Fatalf("got %v, stats %+v; want each of %v once", st.Ev.Got, st.Stats, want)
		}
		for _, g := range st.Ev.Got {
			if !want[g] {
				t.Fatalf("unexpected message %s (got %v)", g, st.Ev.Got)
			}
		}
		if strings.Join(st.Ev.Got[:3], " ") != `news|1|{"n":1} news|2|{"n":2} news|3|{"n":3}` {
			t.Fatalf("news out of order: %v", st.Ev.Got)
		}
	})
}
