package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	jsclient "github.com/pushd/pushd/clients/js"
	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/internal/pushdtest"
	"github.com/pushd/pushd/poller"
	"github.com/pushd/pushd/protocol"
)

// demoChromium is Debian's chromium (scripts/test.sh installs it).
const demoChromium = "/usr/bin/chromium"

func newTestDemo(t *testing.T, cfg Config) poller.Handler {
	t.Helper()
	mem, err := cluster.NewMemory(cluster.MemoryConfig{HistorySize: 10})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := fanout.New(fanout.Config{Broker: mem})
	if err != nil {
		t.Fatal(err)
	}
	h, err := protocol.New(protocol.Config{Hub: hub})
	if err != nil {
		t.Fatal(err)
	}
	d, err := wrapDemo(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDemoRespond: the demo's files and nothing else answer plain GETs;
// -demo=false leaves the bare protocol handler (no HTTPResponder).
func TestDemoRespond(t *testing.T) {
	d := newTestDemo(t, Config{Demo: true, AdminListen: "0.0.0.0:9090", AdminAPIKey: "s3cret</script>"})
	hr, ok := d.(poller.HTTPResponder)
	if !ok {
		t.Fatal("the demo handler is not a poller.HTTPResponder")
	}
	for _, tc := range []struct {
		uri, ctype string
		want       []byte
	}{
		{"/pushd.js", jsclient.ContentType, jsclient.Source()},
		{"/pushd.js?v=1", jsclient.ContentType, jsclient.Source()},
		{"/demo/qr", "text/html; charset=utf-8", nil},
		{"/demo/qr/", "text/html; charset=utf-8", nil},
		{"/demo/qr?x=1#y", "text/html; charset=utf-8", nil},
		{"/demo/qr/qr.js", jsclient.ContentType, nil},
		{"/demo/qr/demo.js", jsclient.ContentType, nil},
	} {
		status, ctype, body, ok := hr.Respond(&poller.Request{URI: tc.uri})
		if !ok || status != 200 || ctype != tc.ctype || len(body) == 0 {
			t.Errorf("%s: %d %q %d bytes ok=%v", tc.uri, status, ctype, len(body), ok)
		}
		if tc.want != nil && !bytes.Equal(body, tc.want) {
			t.Errorf("%s: body differs from the embedded client", tc.uri)
		}
	}
	for _, uri := range []string{"/", "/ws", "/demo", "/demo/qr/x.js", "/demo/qr/../qr.js", "/pushd.d.ts", "/PUSHD.JS"} {
		if _, _, _, ok := hr.Respond(&poller.Request{URI: uri}); ok {
			t.Errorf("%s: answered, want the poller's 400", uri)
		}
	}
	_, _, page, _ := hr.Respond(&poller.Request{URI: "/demo/qr"})
	if bytes.Contains(page, []byte(demoConfigMark)) || bytes.Contains(page, []byte("s3cret")) {
		t.Fatalf("page still has the mark or leaks the admin key:\n%s", page)
	}
	if !bytes.Contains(page, []byte(`{"admin":"127.0.0.1:9090","needsApiKey":true}`)) {
		t.Fatalf("page config missing:\n%s", page)
	}
	if _, ok := newTestDemo(t, Config{Demo: false}).(poller.HTTPResponder); ok {
		t.Fatal("-demo=false still answers plain GETs")
	}
}

func TestDemoAdminAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9090":    "127.0.0.1:9090",
		":9090":             "127.0.0.1:9090",
		"0.0.0.0:9090":      "127.0.0.1:9090",
		"[::]:9090":         "127.0.0.1:9090",
		"10.0.0.5:9090":     "10.0.0.5:9090",
		"[::1]:9090":        "[::1]:9090",
		"admin.local:9090":  "admin.local:9090",
		"no-port-here":      "no-port-here",
		"localhost:9090":    "localhost:9090",
		"192.168.1.10:1234": "192.168.1.10:1234",
	} {
		if got := demoAdminAddr(in); got != want {
			t.Errorf("demoAdminAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDemoFlag(t *testing.T) {
	env := func(string) (string, bool) { return "", false }
	c, err := parseConfig(nil, env, io.Discard)
	if err != nil || !c.Demo {
		t.Fatalf("default: Demo=%v err=%v, want on", c.Demo, err)
	}
	c, err = parseConfig([]string{"-demo=false"}, env, io.Discard)
	if err != nil || c.Demo {
		t.Fatalf("-demo=false: Demo=%v err=%v", c.Demo, err)
	}
	c, err = parseConfig(nil, func(k string) (string, bool) { return "false", k == "PUSHD_DEMO" }, io.Discard)
	if err != nil || c.Demo {
		t.Fatalf("PUSHD_DEMO=false: Demo=%v err=%v", c.Demo, err)
	}
}

// httpGet fetches path from the WebSocket listener as a plain GET.
func httpGet(t *testing.T, addr, path string) (int, string, []byte) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// TestDemoServed: the real binary serves the page and the client on the
// public port (the README's run command), and -demo=false turns it off.
func TestDemoServed(t *testing.T) {
	t.Parallel()
	bin := pushdtest.Build(t)
	p := pushdtest.Start(t, bin, pushdtest.Options{})
	status, ctype, body := httpGet(t, p.WSAddr, "/demo/qr")
	if status != 200 || ctype != "text/html; charset=utf-8" || !bytes.Contains(body, []byte(`src="/demo/qr/demo.js"`)) {
		t.Fatalf("GET /demo/qr: %d %q\n%s", status, ctype, body)
	}
	status, _, body = httpGet(t, p.WSAddr, "/pushd.js")
	if status != 200 || !bytes.Equal(body, jsclient.Source()) {
		t.Fatalf("GET /pushd.js: %d, %d bytes", status, len(body))
	}
	if status, _, _ := httpGet(t, p.WSAddr, "/etc/passwd"); status != 400 {
		t.Fatalf("GET /etc/passwd: %d, want 400", status)
	}
	off := pushdtest.Start(t, bin, pushdtest.Options{Args: []string{"-demo=false"}})
	if status, _, _ := httpGet(t, off.WSAddr, "/demo/qr"); status != 400 {
		t.Fatalf("-demo=false: GET /demo/qr %d, want 400", status)
	}
}

// TestDemoQREncoder checks demo/qr.js with an independent decoder: Node
// encodes texts of every length class (versions 1-10, ECC L and M, every
// mask, UTF-8) into PGM images; zbar's zbarimg must read each back.
func TestDemoQREncoder(t *testing.T) {
	t.Parallel()
	node := lookTool(t, "node", "Node >= 20")
	zbar := lookTool(t, "zbarimg", "Debian zbar-tools")
	dir := t.TempDir()
	type qrCase struct {
		Text    string `json:"text"`
		ECC     string `json:"ecc"`
		Mask    *int   `json:"mask,omitempty"`
		File    string `json:"file"`
		Version int    `json:"version"`
	}
	var cases []qrCase
	add := func(text, ecc string, mask *int) {
		cases = append(cases, qrCase{Text: text, ECC: ecc, Mask: mask, File: filepath.Join(dir, fmt.Sprintf("c%03d.pgm", len(cases)))})
	}
	for _, ecc := range []string{"L", "M"} {
		for _, n := range []int{1, 17, 32, 53, 62, 84, 106, 122, 152, 180, 213, 230, 271} {
			if ecc == "M" && n > 213 {
				continue
			}
			s := strings.Repeat("pushd-QR-0123456789/", 14)[:n]
			add(s, ecc, nil)
		}
		for m := range 8 {
			add("http://127.0.0.1:9090/publish?ch=login:AbC-_09xyzAbC-_09xyz12", ecc, &m)
		}
	}
	add("grüße, 世界 ✓", "M", nil)
	in, _ := json.Marshal(cases)
	script := `
import { encodeQR } from "./demo/qr.js";
import { readFileSync, writeFileSync } from "node:fs";
const cases = JSON.parse(readFileSync(0, "utf8"));
const out = [];
for (const c of cases) {
  const q = encodeQR(c.text, { ecc: c.ecc, mask: c.mask ?? undefined });
  const s = 3, b = 4, w = (q.size + 2 * b) * s;
  const px = Buffer.alloc(w * w, 255);
  for (let y = 0; y < q.size; y++) for (let x = 0; x < q.size; x++) if (q.modules[y][x])
    for (let dy = 0; dy < s; dy++) for (let dx = 0; dx < s; dx++) px[((y + b) * s + dy) * w + (x + b) * s + dx] = 0;
  writeFileSync(c.file, Buffer.concat([Buffer.from("P5 " + w + " " + w + " 255\n"), px]));
  out.push({ ...c, version: q.version, mask: q.mask });
}
console.log(JSON.stringify(out));
`
	cmd := exec.Command(node, "--input-type=module", "-e", script)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node encode: %v\n%s", err, stderr.String())
	}
	var encoded []qrCase
	if err := json.Unmarshal(out, &encoded); err != nil || len(encoded) != len(cases) {
		t.Fatalf("node output (%v): %s", err, out)
	}
	versions := map[int]bool{}
	for _, c := range encoded {
		versions[c.Version] = true
		got, err := exec.Command(zbar, "--raw", "-q", "-Sdisable", "-Sqrcode.enable", c.File).Output()
		if err != nil {
			t.Errorf("zbarimg could not decode %q (v%d-%s mask %d): %v", c.Text, c.Version, c.ECC, *c.Mask, err)
			continue
		}
		if g := strings.TrimSuffix(string(got), "\n"); g != c.Text {
			t.Errorf("v%d-%s mask %d: decoded %q, want %q", c.Version, c.ECC, *c.Mask, g, c.Text)
		}
	}
	for v := 1; v <= 10; v++ {
		if !versions[v] {
			t.Errorf("no case encoded as version %d", v)
		}
	}
	t.Logf("zbarimg decoded %d symbols (versions 1-10, ECC L and M, all 8 masks)", len(encoded))

	// Over capacity is an error, not a broken symbol.
	cmd = exec.Command(node, "--input-type=module", "-e",
		`import { encodeQR } from "./demo/qr.js"; try { encodeQR("x".repeat(214), { ecc: "M" }); process.exit(3); } catch (e) { console.log(e.message); }`)
	if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), "do not fit") {
		t.Fatalf("214 bytes at M: %v %s", err, b)
	}
}

func lookTool(t *testing.T, name, what string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s (%s) is not installed: run scripts/test.sh: %v", name, what, err)
	}
	return p
}

// startDemoPushd starts the binary with the admin API on a port fixed in
// advance, so the page's QR code and curl command name the real address.
// A port taken between the probe and pushd's bind is retried.
func startDemoPushd(t *testing.T, bin string) *pushdtest.Proc {
	t.Helper()
	var lastErr error
	for range 5 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		admin := ln.Addr().String()
		ln.Close()
		p, err := pushdtest.Launch(context.Background(), []string{bin, "-log-format", "json", "-admin-listen", admin}, 20*time.Second)
		if err == nil {
			t.Cleanup(func() { p.Stop(t) })
			return p
		}
		lastErr = err
	}
	t.Fatalf("start pushd: %v", lastErr)
	return nil
}

// artifactDir is $PUSHD_TEST_ARTIFACTS, else <repo>/.artifacts.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PUSHD_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", ".artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifact dir: %v", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestDemoChromium is the QR-login walkthrough in headless Debian
// chromium against the real binary: the page loads from pushd's public
// port, subscribes through the JS client, shows a QR code that zbar
// decodes to the publish URL naming the page's nonce; a POST to that URL
// flips the page to "Signed in as alice". Screenshots before and after
// are saved as test artifacts.
func TestDemoChromium(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(demoChromium); err != nil {
		t.Fatalf("Debian chromium (%s) is not installed: run scripts/test.sh: %v", demoChromium, err)
	}
	zbar := lookTool(t, "zbarimg", "Debian zbar-tools")
	p := startDemoPushd(t, pushdtest.Build(t))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(demoChromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(900, 760),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("force-device-scale-factor", "1"),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	// The first action starts the browser; a watchdog bounds it (a
	// context timeout would bound the browser's whole life).
	pageURL := "http://" + p.WSAddr + "/demo/qr"
	watchdog := time.AfterFunc(90*time.Second, cancel)
	err := chromedp.Do(ctx, chromedp.Navigate(pageURL))
	watchdog.Stop()
	if err != nil {
		t.Fatalf("chromium: open %s: %v", pageURL, err)
	}
	eval := func(timeout time.Duration, expr string) string {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		s, err := chromedp.Run(c, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("chromium: %.90s: %v\npage: %s", expr, err, pageState(ctx))
		}
		return s
	}
	// waitState polls until body[data-state] is want.
	waitState := func(want string, timeout time.Duration) {
		t.Helper()
		eval(timeout+5*time.Second, fmt.Sprintf(`new Promise((ok, fail) => { const end = Date.now() + %d;
			(function poll() { if (document.body.dataset.state === %q) return ok("yes");
			  if (Date.now() > end) return fail(new Error("state " + document.body.dataset.state + ": " + document.getElementById("status").textContent));
			  setTimeout(poll, 20); })(); })`, timeout.Milliseconds(), want))
	}
	waitState("waiting", 30*time.Second)
	var info struct {
		Nonce, Channel, QRText, Status, Curl string
	}
	if err := json.Unmarshal([]byte(eval(10*time.Second, `Promise.resolve(JSON.stringify({nonce: document.body.dataset.nonce,
		channel: document.body.dataset.channel, qrText: document.body.dataset.qrText,
		status: document.getElementById("status").textContent, curl: document.getElementById("curl").textContent}))`)), &info); err != nil {
		t.Fatal(err)
	}
	t.Logf("page: nonce %s, channel %s, status %q, command: %s", info.Nonce, info.Channel, info.Status, info.Curl)
	wantURL := "http://" + p.AdminAddr + "/publish?ch=login:" + info.Nonce
	if len(info.Nonce) < 20 || info.Channel != "login:"+info.Nonce || info.QRText != wantURL {
		t.Fatalf("page shows nonce %q channel %q QR %q, want the QR to encode %q", info.Nonce, info.Channel, info.QRText, wantURL)
	}
	if !strings.Contains(info.Curl, "'"+wantURL+"'") {
		t.Fatalf("curl command %q does not name %s", info.Curl, wantURL)
	}

	dir := artifactDir(t)
	before := screenshot(t, ctx, filepath.Join(dir, "demo-qr-waiting.png"))
	// Scan the screen: the QR code must decode to the publish URL.
	scanned, err := exec.Command(zbar, "--raw", "-q", "-Sdisable", "-Sqrcode.enable", before).Output()
	if err != nil {
		t.Fatalf("zbarimg found no QR code in %s: %v", before, err)
	}
	scannedURL := strings.TrimSpace(string(scanned))
	if scannedURL != wantURL {
		t.Fatalf("the QR code on screen decodes to %q, want %q", scannedURL, wantURL)
	}
	t.Logf("QR code on screen decodes to %s", scannedURL)

	// Play the phone: POST to the scanned URL.
	resp, err := http.Post(scannedURL, "application/json", strings.NewReader(`{"user":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(reply), `"seq":1`) {
		t.Fatalf("publish: %d %s", resp.StatusCode, reply)
	}
	waitState("signed-in", 20*time.Second)
	status := eval(5*time.Second, `Promise.resolve(document.getElementById("status").textContent)`)
	if !strings.Contains(status, "Signed in as alice") {
		t.Fatalf("status %q, want Signed in as alice", status)
	}
	after := screenshot(t, ctx, filepath.Join(dir, "demo-qr-signed-in.png"))
	t.Logf("page flipped to %q; screenshots: %s, %s", status, before, after)
}

// screenshot saves the viewport as PNG at path and returns path.
func screenshot(t *testing.T, ctx context.Context, path string) string {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot (%s bytes): %s", strconv.Itoa(len(png)), path)
	return path
}

// pageState is the page's status line and body state, for failures.
func pageState(ctx context.Context) string {
	c, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(c, chromedp.Evaluate[string](`document.body.dataset.state + ": " + document.getElementById("status").textContent + " / " + document.getElementById("conn").textContent`))
	if err != nil {
		return "(unavailable: " + err.Error() + ")"
	}
	return s
}
