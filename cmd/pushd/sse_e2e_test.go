package main_test

// End-to-end tests of the SSE and HTTP-streaming transports (issue 20)
// against the built pushd binary: the real curl binary as the SSE client,
// Go's net/http as an independent reader, real TCP cuts, Last-Event-ID
// resume.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/pushdtest"
)

// sseEvent is one dispatched SSE event.
type sseEvent struct {
	Event, ID, Data string
}

// readSSE parses an event stream (WHATWG HTML §9.2.6, the parts pushd
// uses) and sends each event on out until r ends; comments are counted
// in hb.
func readSSE(r io.Reader, out chan<- sseEvent, hb chan<- struct{}) error {
	sc := bufio.NewScanner(r)
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if len(data) > 0 || ev.Event != "" {
				ev.Data = strings.Join(data, "\n")
				out <- ev
			}
			ev, data = sseEvent{}, nil
			continue
		}
		if strings.HasPrefix(line, ":") {
			if hb != nil {
				select {
				case hb <- struct{}{}:
				default:
				}
			}
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "event":
			ev.Event = value
		case "id":
			ev.ID = value
		case "data":
			data = append(data, value)
		}
	}
	return sc.Err()
}

// nextEvent waits for the next event other than heartbeats.
func nextEvent(t *testing.T, ch <-chan sseEvent, what string) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("%s: stream ended", what)
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no event in 20 s", what)
	}
	return sseEvent{}
}

// subok decodes a pushd subok event.
func subok(t *testing.T, ev sseEvent) (ch, epoch string, seq uint64, recovered bool) {
	t.Helper()
	var m struct {
		Op, Ch, Epoch string
		Seq           uint64
		Recovered     bool
	}
	if ev.Event != "pushd" || json.Unmarshal([]byte(ev.Data), &m) != nil || m.Op != "subok" {
		t.Fatalf("want a subok event, got %+v", ev)
	}
	return m.Ch, m.Epoch, m.Seq, m.Recovered
}

// TestSSECurl is acceptance line 1: `curl -N '/sse?ch=x'` (the real curl
// binary against the real pushd binary) receives a publication as an
// event with id: and data: lines.
func TestSSECurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is not installed: %v", err)
	}
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, "-sSN", "-D", "-", "http://"+p.WSAddr+"/sse?ch=x")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	br := bufio.NewReader(out)
	// The response head (curl -D -), then the body.
	var head []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("curl: head: %v (stderr %q)", err, stderr.String())
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		head = append(head, l)
	}
	if !strings.HasPrefix(head[0], "HTTP/1.1 200") || !containsFold(head, "Content-Type: text/event-stream; charset=utf-8") {
		t.Fatalf("head %q", head)
	}
	// The raw body lines, to check what curl printed, and the events.
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimRight(l, "\n")
		}
	}()
	nextLine := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s: curl's output ended (stderr %q)", what, stderr.String())
			}
			return l
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: nothing from curl in 20 s", what)
		}
		return ""
	}
	if l := nextLine("retry"); l != "retry: 1000" {
		t.Fatalf("first line %q, want the retry hint", l)
	}
	// subok: the subscription is live.
	for l := nextLine("subok"); !strings.Contains(l, `"op":"subok"`); l = nextLine("subok") {
	}
	start := time.Now()
	seq := mustPublish(t, p, "x", `{"hello":"curl"}`)
	var got []string
	for {
		l := nextLine("push")
		if strings.HasPrefix(l, ":") {
			continue // heartbeat
		}
		if l == "" {
			if len(got) > 0 {
				break // the event's end
			}
			continue // the subok event's end
		}
		got = append(got, l)
	}
	took := time.Since(start)
	t.Logf("curl got the publication %v after POST /publish: %q", took.Round(time.Millisecond), got)
	want := []string{"event: x", "id: ", "data: {\"hello\":\"curl\"}"}
	if len(got) != 3 || got[0] != want[0] || !strings.HasPrefix(got[1], want[1]) || !strings.HasSuffix(got[1], ":"+strconv.FormatUint(seq, 10)) || got[2] != want[2] {
		t.Fatalf("event lines %q, want %q with id <epoch>:%d", got, want, seq)
	}
	waitStat(t, p, "streams", func(v float64) bool { return v == 1 })
	if took > 2*time.Second {
		// Not a failure on a loaded machine; the measurement is logged.
		t.Logf("note: slower than the 2 s of the acceptance line on this run")
	}
}

func containsFold(lines []string, want string) bool {
	for _, l := range lines {
		if strings.EqualFold(l, want) {
			return true
		}
	}
	return false
}

// cutProxy is a TCP proxy whose connections a test can cut (both sides
// closed at once, mid-stream, as a dropped network path does).
type cutProxy struct {
	ln    net.Listener
	conns chan net.Conn
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, conns: make(chan net.Conn, 1024)}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.conns <- c
			p.conns <- u
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

// cut closes every connection made so far, both sides.
func (p *cutProxy) cut() {
	for {
		select {
		case c := <-p.conns:
			c.Close()
		default:
			return
		}
	}
}

// openSSE opens GET url with hdr and returns the event channel; the stream
// ends (channel closed) when the connection does.
func openSSE(t *testing.T, url string, hdr http.Header) (<-chan sseEvent, *http.Response) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	evs := make(chan sseEvent, 1024)
	go func() {
		defer close(evs)
		defer resp.Body.Close()
		_ = readSSE(resp.Body, evs, nil)
	}()
	return evs, resp
}

// TestSSELastEventIDResume is acceptance line 2: a stream cut mid-way
// (TCP closed under it by a proxy) and reopened with Last-Event-ID = the
// last id it got receives exactly the publications missed meanwhile, with
// subok recovered:true: 0 lost, 0 duplicated.
func TestSSELastEventIDResume(t *testing.T) {
	t.Parallel()
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{})
	px := startCutProxy(t, p.WSAddr)
	url := "http://" + px.addr() + "/sse?ch=feed"

	evs, resp := openSSE(t, url, http.Header{})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, _, _, rec := subok(t, nextEvent(t, evs, "subok")); !rec {
		t.Fatal("first subscribe not recovered")
	}
	const before, during, after = 20, 30, 10
	seen := map[uint64]int{}
	lastID := ""
	take := func(evs <-chan sseEvent, n int, what string) {
		t.Helper()
		for i := 0; i < n; i++ {
			ev := nextEvent(t, evs, what)
			if ev.Event != "feed" {
				t.Fatalf("%s: unexpected event %+v", what, ev)
			}
			_, s, _ := strings.Cut(ev.ID, ":")
			seq, err := strconv.ParseUint(s, 10, 64)
			if err != nil || ev.Data != fmt.Sprintf(`{"n":%d}`, seq) {
				t.Fatalf("%s: event %+v", what, ev)
			}
			seen[seq]++
			lastID = ev.ID
		}
	}
	for i := 1; i <= before; i++ {
		mustPublish(t, p, "feed", fmt.Sprintf(`{"n":%d}`, i))
	}
	take(evs, before, "before the cut")
	px.cut()
	for range evs { // the stream ends with the cut
	}
	// Published while the client is away.
	for i := before + 1; i <= before+during; i++ {
		mustPublish(t, p, "feed", fmt.Sprintf(`{"n":%d}`, i))
	}
	evs, resp = openSSE(t, url, http.Header{"Last-Event-ID": {lastID}})
	if resp.StatusCode != 200 {
		t.Fatalf("resume status %d", resp.StatusCode)
	}
	_, _, top, rec := subok(t, nextEvent(t, evs, "resume subok"))
	if !rec || top != before+during {
		t.Fatalf("resume subok recovered %v seq %d, want true %d", rec, top, before+during)
	}
	take(evs, during, "recovered")
	for i := before + during + 1; i <= before+during+after; i++ {
		mustPublish(t, p, "feed", fmt.Sprintf(`{"n":%d}`, i))
	}
	take(evs, after, "live after the resume")
	lost, dup := 0, 0
	for i := uint64(1); i <= before+during+after; i++ {
		switch n := seen[i]; {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
	}
	t.Logf("resume through Last-Event-ID %s: %d publications, lost %d, duplicated %d", lastID, before+during+after, lost, dup)
	if lost != 0 || dup != 0 || len(seen) != before+during+after {
		t.Fatalf("lost %d, duplicated %d", lost, dup)
	}
	select {
	case ev := <-evs:
		t.Fatalf("unexpected extra event %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestSSEDrain: a drain (SIGTERM) reaches an SSE stream and an NDJSON
// stream like a WebSocket: the reconnect hint in their framing (SSE:
// "retry: N" then the reconnect event), then a close event with 1001, then
// the end of the response.
func TestSSEDrain(t *testing.T) {
	t.Parallel()
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-drain-delay", "0s", "-drain-duration", "0s", "-reconnect-jitter", "300ms"}})
	get := func(path string) *http.Response {
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + p.WSAddr + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, resp, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	sse, nd := get("/sse?ch=news"), get("/stream?ch=news")
	limWaitConns(t, p, 2, 10*time.Second)
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	read := func(r io.Reader) string {
		done := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(r); done <- b }()
		select {
		case b := <-done:
			return string(b)
		case <-time.After(20 * time.Second):
			t.Fatal("stream did not end within 20 s of SIGTERM")
		}
		return ""
	}
	s, n := read(sse.Body), read(nd.Body)
	sse.Body.Close() // our FIN: the server need not wait its close timeout
	nd.Body.Close()
	t.Logf("sse: %q\nndjson: %q", s, n)
	i := strings.Index(s, "retry: ")
	if i < 0 || !strings.Contains(s[i:], "\nevent: pushd\ndata: {\"op\":\"reconnect\",\"after_ms\":") ||
		!strings.HasSuffix(s, "event: pushd\ndata: {\"op\":\"close\",\"code\":1001,\"reason\":\"server shutting down\"}\n\n") {
		t.Errorf("sse tail %q", s)
	}
	if !strings.Contains(n, "{\"op\":\"reconnect\",\"after_ms\":") || !strings.HasSuffix(n, "{\"op\":\"close\",\"code\":1001,\"reason\":\"server shutting down\"}\n") {
		t.Errorf("ndjson tail %q", n)
	}
	waitExit(t, p, 15*time.Second)
}

// TestSSEOverTLS: /sse on the wss listener (-tls-listen) is an https
// event stream on the same loops: curl with the test CA receives a
// publication as an event.
func TestSSEOverTLS(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is not installed: %v", err)
	}
	pki := newTestPKI(t)
	p, addr := startTLS(t, pki)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, "-sSN", "--cacert", pki.caFile, "https://"+addr+"/sse?ch=tls")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	evs := make(chan sseEvent, 16)
	go func() { defer close(evs); _ = readSSE(out, evs, nil) }()
	if ch, _, _, _ := subok(t, nextEvent(t, evs, "subok")); ch != "tls" {
		t.Fatalf("subok for %q", ch)
	}
	seq := mustPublish(t, p, "tls", `"over https"`)
	ev := nextEvent(t, evs, "push")
	if ev.Event != "tls" || !strings.HasSuffix(ev.ID, ":"+strconv.FormatUint(seq, 10)) || ev.Data != `"over https"` {
		t.Fatalf("event %+v", ev)
	}
}

// TestSSESlowConsumer: the slow-consumer policies hold for SSE streams
// as for WebSockets (-max-pending 256 KiB, 300 × 32 KiB published while
// the stream is not read): with drop, what the stream carries afterwards
// (events and gap notices) names every seq once, in order; with
// disconnect, the stream ends with the close event 4001 after what was
// queued before it.
func TestSSESlowConsumer(t *testing.T) {
	t.Parallel()
	// The streams are read only after the last publish. A stream closed as
	// a slow consumer keeps its queue (and the close event) for
	// -close-timeout, then is hung up: at the 2 s default, publishing the
	// rest on a slow host outlasted it and the close event was lost
	// (seen once in a CI run). 60 s leaves the test's timing out of it.
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{
		"-max-pending", "262144", "-policy", "feed:*=drop", "-close-timeout", "60s",
	}})
	open := func(ch string) (net.Conn, chan sseEvent) {
		c, err := net.Dial("tcp", p.WSAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "GET /sse?ch="+ch+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		// Nothing reads the socket until the publishing is done: the
		// events wait in kernel buffers and pushd's queue.
		start := make(chan sseEvent, 1<<12)
		return c, start
	}
	read := func(c net.Conn, out chan sseEvent) {
		go func() {
			defer close(out)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("response: %v %v", resp, err)
				return
			}
			_ = readSSE(resp.Body, out, nil)
		}()
	}
	dropC, dropEvs := open("feed:1")
	discC, discEvs := open("news")
	limWaitConns(t, p, 2, 10*time.Second)
	waitStat(t, p, "subscriptions", func(v float64) bool { return v == 2 })
	for i := 1; i <= slowMsgs; i++ {
		mustPublish(t, p, "feed:1", bigPayload(i))
		mustPublish(t, p, "news", bigPayload(i))
	}
	waitStat(t, p, "slow_disconnects", func(v float64) bool { return v == 1 })
	read(dropC, dropEvs)
	read(discC, discEvs)

	// drop: pushes and gap notices cover 1..slowMsgs once, in order.
	next, gaps := uint64(1), 0
	for next <= slowMsgs {
		ev := nextEvent(t, dropEvs, "drop stream")
		switch ev.Event {
		case "pushd":
			var m struct {
				Op       string
				From, To uint64
			}
			if json.Unmarshal([]byte(ev.Data), &m) != nil {
				t.Fatalf("control event %+v", ev)
			}
			if m.Op == "subok" {
				continue
			}
			if m.Op != "gap" || m.From != next || m.To < m.From {
				t.Fatalf("event %+v at seq %d", ev, next)
			}
			gaps++
			next = m.To + 1
		case "feed:1":
			_, s, _ := strings.Cut(ev.ID, ":")
			if s != strconv.FormatUint(next, 10) {
				t.Fatalf("push id %s, want seq %d", ev.ID, next)
			}
			next++
		default:
			t.Fatalf("event %+v", ev)
		}
	}
	if gaps == 0 {
		t.Fatal("no gap notice: the stream was never held back")
	}
	// disconnect: in-order pushes, then the close event 4001, then the end.
	var last sseEvent
	pushes := 0
	for ev := range discEvs {
		if ev.Event == "news" {
			pushes++
		}
		last = ev
	}
	short := last.Data[:min(len(last.Data), 80)]
	t.Logf("drop: %d gap notices; disconnect: %d pushes before the last event %s %q", gaps, pushes, last.Event, short)
	if last.Event != "pushd" || last.Data != `{"op":"close","code":4001,"reason":"slow consumer"}` || pushes == 0 || pushes >= slowMsgs {
		t.Fatalf("disconnect stream: %d pushes, then %s id %s %q..., not the close event 4001", pushes, last.Event, last.ID, short)
	}
}

// TestSSEConnCap: an SSE stream counts against -max-conns like a
// WebSocket: with one open, the next request is refused with 503 and
// Retry-After; after it ends, a new stream opens.
func TestSSEConnCap(t *testing.T) {
	t.Parallel()
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-max-conns", "1"}})
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}
	first, err := client.Get("http://" + p.WSAddr + "/sse?ch=a")
	if err != nil || first.StatusCode != 200 {
		t.Fatalf("first stream: %v %v", first, err)
	}
	limWaitConns(t, p, 1, 10*time.Second)
	// The refusal is written at accept time, before the request is read, so
	// net/http's Transport may call it an unsolicited response (a race in
	// the client, not a wrong answer); read it off a raw connection instead.
	raw, err := net.DialTimeout("tcp", p.WSAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	// The write may fail with EPIPE/ECONNRESET once the refusal has closed
	// the socket; the refusal itself is still readable.
	fmt.Fprintf(raw, "GET /sse?ch=a HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", p.WSAddr)
	second, err := http.ReadResponse(bufio.NewReader(raw), nil)
	if err != nil {
		t.Fatalf("reading the refusal: %v", err)
	}
	second.Body.Close()
	if second.StatusCode != 503 || second.Header.Get("Retry-After") == "" {
		t.Fatalf("second stream: %d %v, want 503 with Retry-After", second.StatusCode, second.Header)
	}
	first.Body.Close()
	limWaitConns(t, p, 0, 10*time.Second)
	third, err := client.Get("http://" + p.WSAddr + "/sse?ch=a")
	if err != nil || third.StatusCode != 200 {
		t.Fatalf("stream after the first ended: %v %v", third, err)
	}
	third.Body.Close()
}
