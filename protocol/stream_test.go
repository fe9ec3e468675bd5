package protocol

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/fanout"
)

func TestParseStreamURL(t *testing.T) {
	for _, tc := range []struct {
		uri, lastID string
		status      int
		chans       string
		since       string // "<epoch>:<seq>" of the global position, "" none
		pos         string // "<ch>=<epoch>:<seq>" of one channel's position
	}{
		{uri: "/sse?ch=a&ch=b,c", chans: "a b c"},
		{uri: "/sse?ch=a&since=3&epoch=E", chans: "a", since: "E:3"},
		{uri: "/sse?ch=a&since=3&epoch=E", lastID: "F:9", chans: "a", since: "F:9"},
		{uri: "/sse?ch=a&last_event_id=F:9", chans: "a", since: "F:9"},
		{uri: "/sse?ch=a&last_event_id=F:9", lastID: ":2", chans: "a", since: ":2"},
		{uri: "/stream?pos=room:1:E:7&ch=b", chans: "b room:1", pos: "room:1=E:7"},
		{uri: "/sse?pos=a::0", chans: "a", pos: "a=:0"},
		{uri: "/sse?ch=a", lastID: "nocolon", status: 400},
		{uri: "/sse?ch=a", lastID: "bad epoch!:1", status: 400},
		{uri: "/sse?ch=a", lastID: "E:-1", status: 400},
		{uri: "/sse?pos=a:1", status: 400},
		{uri: "/sse?pos=:E:1", status: 400},
		{uri: "/sse?ch=a&format=raw", status: 400},
		{uri: "/sse?ch=a%zz", status: 400},
		{uri: "/sse?ch=a,b,c&pos=d:E:1", status: 429},
	} {
		u, status, err := parseStreamURL(tc.uri, tc.lastID, 3)
		if status != tc.status {
			t.Errorf("%s (Last-Event-ID %q): status %d (%v), want %d", tc.uri, tc.lastID, status, err, tc.status)
			continue
		}
		if status != 0 {
			if err == nil || err.Error() == "" {
				t.Errorf("%s: refusal without a reason", tc.uri)
			}
			continue
		}
		chans := append([]string(nil), u.channels...)
		if got := strings.Join(sortedCopy(chans), " "); got != tc.chans {
			t.Errorf("%s: channels %q, want %q", tc.uri, got, tc.chans)
		}
		since := ""
		if u.since != nil {
			since = u.epoch + ":" + uitoa(*u.since)
		}
		if since != tc.since {
			t.Errorf("%s: since %q, want %q", tc.uri, since, tc.since)
		}
		pos := ""
		for ch, p := range u.pos {
			pos = ch + "=" + p.epoch + ":" + uitoa(p.since)
		}
		if pos != tc.pos {
			t.Errorf("%s: pos %q, want %q", tc.uri, pos, tc.pos)
		}
	}
}

func sortedCopy(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func uitoa(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// FuzzParseStreamURL: parseStreamURL never panics; an accepted URL has
// valid channels (every pos channel among them), valid epochs, and at
// most maxSubs channels; a refusal carries a 4xx status and a reason.
func FuzzParseStreamURL(f *testing.F) {
	for _, s := range [][2]string{{"/sse?ch=a", ""}, {"/sse?ch=a", "E:1"}, {"/stream?pos=a:b:E:3", ""},
		{"/sse?last_event_id=:0&ch=x", ""}, {"/sse?pos=a::", ""}, {"/sse?ch=a&format=json", "x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, uri, lastID string) {
		u, status, err := parseStreamURL(uri, lastID, 4)
		if status != 0 {
			if status < 400 || status > 499 || err == nil || err.Error() == "" {
				t.Fatalf("parseStreamURL(%q, %q) = %d, %v", uri, lastID, status, err)
			}
			return
		}
		if err != nil || len(u.channels) > 4 {
			t.Fatalf("parseStreamURL(%q, %q) = %+v, %v", uri, lastID, u, err)
		}
		for _, ch := range u.channels {
			if ValidChannel(ch) != nil {
				t.Fatalf("accepted channel %q", ch)
			}
		}
		if u.epoch != "" && (u.since == nil || !fanout.ValidEpoch(u.epoch)) {
			t.Fatalf("accepted epoch %q", u.epoch)
		}
		for ch, p := range u.pos {
			if !containsString(u.channels, ch) || p.epoch != "" && !fanout.ValidEpoch(p.epoch) {
				t.Fatalf("pos %q %+v not among %v or bad epoch", ch, p, u.channels)
			}
		}
	})
}

// streamGet sends a request to the stack's public port.
func streamGet(t *testing.T, base, method, path string, hdr http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+strings.TrimPrefix(base, "ws://")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// TestStreamChecks: the stream endpoints apply the WebSocket's checks —
// Origin and token (query or Authorization), channel permissions — and
// answer refusals, CORS preflights and wrong methods with whole
// responses; an NDJSON stream opened with Authorization: Bearer gets its
// subok lines and pushes; a token's exp ends the stream with a close
// event carrying 4003.
func TestStreamChecks(t *testing.T) {
	origins, err := auth.NewOriginPolicy([]string{"https://app.example"}, true)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{Keys: auth.KeyConfig{HS256Secret: testSecret}, Origins: origins})
	if err != nil {
		t.Fatal(err)
	}
	base, _, mem := startAuthStack(t, Config{Auth: a, Public: []string{"pub:*"}})
	tok := hsToken(t, "alice", time.Hour, "room:*")

	for _, tc := range []struct {
		method, path string
		hdr          http.Header
		status       int
		body         string
	}{
		{"GET", "/sse?ch=secret", nil, 403, "not allowed"},
		{"GET", "/sse?ch=room:1&token=" + tok, http.Header{"Origin": {"https://evil.example"}}, 403, "origin"},
		{"GET", "/sse?ch=room:1&token=nope", nil, 401, ""},
		{"GET", "/stream?ch=room:1", http.Header{"Authorization": {"Bearer nope"}}, 401, ""},
		{"GET", "/sse?ch=pushd", nil, 400, "pushd's own"},
		{"GET", "/sse?ch=a&format=raw", nil, 400, "format"},
		{"POST", "/sse?ch=pub:1", nil, 405, "use GET"},
		{"GET", "/elsewhere", nil, 400, ""},
	} {
		resp := streamGet(t, base, tc.method, tc.path, tc.hdr)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
			t.Errorf("%s %s: %d %q, want %d containing %q", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.body)
		}
	}

	// A CORS preflight for a fetch-based stream from an allowed origin.
	resp := streamGet(t, base, "OPTIONS", "/stream?ch=room:1", http.Header{"Origin": {"https://app.example"}, "Access-Control-Request-Headers": {"authorization"}})
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := streamGet(t, base, "OPTIONS", "/stream", http.Header{"Origin": {"https://evil.example"}}); resp.StatusCode != 403 {
		t.Fatalf("preflight from a refused origin: %d", resp.StatusCode)
	}

	// NDJSON with the token in Authorization; the personal channel and the
	// URL channel each get a subok line, then pushes arrive as lines.
	resp = streamGet(t, base, "GET", "/stream?ch=room:1&ch=pub:x", http.Header{"Authorization": {"Bearer " + tok}, "Origin": {"https://app.example"}})
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson; charset=utf-8" || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("stream: %d %v", resp.StatusCode, resp.Header)
	}
	lines := make(chan map[string]any, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == "" {
				continue // heartbeat
			}
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("line %q: %v", sc.Text(), err)
				return
			}
			lines <- m
		}
	}()
	next := func() map[string]any {
		t.Helper()
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			return m
		case <-time.After(20 * time.Second):
			t.Fatal("no line in 20 s")
		}
		return nil
	}
	subs := map[string]bool{}
	for range 3 {
		m := next()
		if m["op"] != "subok" {
			t.Fatalf("want subok lines first, got %v", m)
		}
		subs[m["ch"].(string)] = true
	}
	if !subs["user:alice"] || !subs["room:1"] || !subs["pub:x"] {
		t.Fatalf("subok for %v", subs)
	}
	if _, err := mem.Publish(context.Background(), "room:1", []byte(`{"k":1}`)); err != nil {
		t.Fatal(err)
	}
	if m := next(); m["ch"] != "room:1" || m["seq"] != float64(1) || m["data"].(map[string]any)["k"] != float64(1) {
		t.Fatalf("push %v", m)
	}

	// A token that expires ends the stream with a close event (4003).
	short := hsToken(t, "bob", 2*time.Second)
	resp2 := streamGet(t, base, "GET", "/sse?token="+short, nil)
	defer resp2.Body.Close()
	start := time.Now()
	all, err := io.ReadAll(resp2.Body) // returns when the server ends the stream
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	t.Logf("stream ended %v after open: %q", time.Since(start).Round(time.Millisecond), all)
	if !strings.HasSuffix(string(all), "event: pushd\ndata: {\"op\":\"close\",\"code\":4003,\"reason\":\"token expired\"}\n\n") {
		t.Fatalf("stream tail %q", all)
	}
}

// TestStreamReplyFraming: replies and the drain's hint reach a stream in
// its framing: an "event: pushd" SSE event (the hint with retry: first), a
// line on NDJSON, the WebSocket text frame unchanged, nothing on raw.
func TestStreamReplyFraming(t *testing.T) {
	h := &Handler{}
	for _, tc := range []struct {
		f    fanout.Format
		want string
	}{
		{fanout.FormatSSE, "retry: 250\nevent: pushd\ndata: {\"op\":\"reconnect\",\"after_ms\":250}\n\n"},
		{fanout.FormatNDJSON, "{\"op\":\"reconnect\",\"after_ms\":250}\n"},
		{fanout.FormatJSON, "\x81\x21{\"op\":\"reconnect\",\"after_ms\":250}"},
		{fanout.FormatRaw, ""},
	} {
		s := newSession(h, nil, urlRequest{format: tc.f}, auth.Grant{})
		if got := string(s.reconnectHint(250)); got != tc.want {
			t.Errorf("%v: hint %q, want %q", tc.f, got, tc.want)
		}
	}
	s := newSession(h, nil, urlRequest{format: fanout.FormatSSE}, auth.Grant{})
	if got := string(s.frame(unsubokFrame("a"))); got != "event: pushd\ndata: {\"op\":\"unsubok\",\"ch\":\"a\"}\n\n" {
		t.Errorf("sse reply %q", got)
	}
}
