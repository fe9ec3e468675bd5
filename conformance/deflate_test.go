package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/pushdtest"
)

// permessage-deflate pushes to independent peers (issue 19): npm ws with
// perMessageDeflate on and off, python3-websockets (deflate by default) and
// headless Chromium, each against the real binary with its default flags
// (-deflate-channels '*'), through a proxy that counts the bytes pushd
// sends.

// gameState returns a compressible JSON game state of at least n bytes.
func gameState(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"tick":1234,"players":[`)
	for i := 0; b.Len() < n-2; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"name":"player-%d","x":%d,"y":%d,"hp":100,"team":"red","alive":true}`, i, i, 100+i*7%50, 200+i*3%40)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// countProxy forwards TCP connections to target and counts the bytes
// flowing from target to the client (what pushd put on the wire).
type countProxy struct {
	ln     net.Listener
	target string
	down   atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	open   []net.Conn
}

func startCountProxy(t *testing.T, target string) *countProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.open {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *countProxy) addr() string { return p.ln.Addr().String() }

func (p *countProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.open = append(p.open, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(s, c)
			_ = s.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(c, countReader{s, &p.down})
			_ = c.(*net.TCPConn).CloseWrite()
		}()
	}
}

// countReader counts the bytes read, before they are written on: the
// count never lags behind what the client could have seen.
type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// pushEvent is one line of conformance/node/pushpeer.js or
// python/pushpeer.py.
type pushEvent struct {
	Ev     string `json:"ev"`
	Ext    string `json:"ext"`
	Kind   string `json:"kind"`
	Len    int    `json:"len"`
	SHA256 string `json:"sha256"`
	Body   string `json:"body"`
	Error  string `json:"error"`
}

// pushPeer is a running peer script; its events arrive on events.
type pushPeer struct {
	name   string
	events chan pushEvent
	done   chan error
}

func startPushPeer(t *testing.T, name string, argv ...string) *pushPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), raceScale(2*time.Minute))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = &testLogWriter{t: t, prefix: name + ": "}
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	pp := &pushPeer{name: name, events: make(chan pushEvent, 16), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e pushEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				pp.events <- e
			}
		}
		close(pp.events)
		pp.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		for range pp.events {
		}
		<-pp.done
	})
	return pp
}

// next returns the peer's next event, failing t on an error event, an exit
// or a timeout.
func (pp *pushPeer) next(t *testing.T, want string) pushEvent {
	t.Helper()
	select {
	case e, ok := <-pp.events:
		if !ok {
			t.Fatalf("%s exited while %s was expected", pp.name, want)
		}
		if e.Ev != want {
			t.Fatalf("%s: got %+v, want a %q event", pp.name, e, want)
		}
		return e
	case <-time.After(raceScale(30 * time.Second)):
		t.Fatalf("%s: no %q event within 30 s", pp.name, want)
	}
	return pushEvent{}
}

// publishHTTP publishes body to ch through the admin port's POST /publish.
func publishHTTP(t *testing.T, p *pushdtest.Proc, ch string, body []byte) {
	t.Helper()
	resp, err := http.Post(p.AdminURL("/publish?ch="+ch), "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish %s: %s: %s", ch, resp.Status, b)
	}
}

// waitSubscriptions waits until pushd counts exactly n subscriptions.
func waitSubscriptions(t *testing.T, p *pushdtest.Proc, n int64) {
	t.Helper()
	waitStats(t, p, func(s pushdtest.Stats) bool { return s.Subscriptions == n }, fmt.Sprintf("%d subscriptions", n))
}

// checkDeflateAnswer checks the 101's Sec-WebSocket-Extensions.
func checkDeflateAnswer(t *testing.T, peer, ext string) {
	t.Helper()
	for _, want := range []string{"permessage-deflate", "server_no_context_takeover", "client_no_context_takeover"} {
		if !strings.Contains(ext, want) {
			t.Fatalf("%s: 101 answered Sec-WebSocket-Extensions %q, want %s", peer, ext, want)
		}
	}
}

// checkJSONPush checks that body is a pushd.v1 push of ch carrying payload.
func checkJSONPush(t *testing.T, peer string, body []byte, ch string, payload []byte) {
	t.Helper()
	var push struct {
		Ch   string          `json:"ch"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &push); err != nil {
		t.Fatalf("%s: push %.100q is not JSON: %v", peer, body, err)
	}
	if push.Ch != ch || !bytes.Equal(push.Data, payload) {
		t.Fatalf("%s: push of %q with %d data bytes, want %q with the %d published", peer, push.Ch, len(push.Data), ch, len(payload))
	}
}

// TestDeflateNodeWs: npm ws with perMessageDeflate gets permessage-deflate
// in the 101 and a compressible 4 KB push intact, with fewer bytes on the
// wire than the same push to npm ws without deflate.
func TestDeflateNodeWs(t *testing.T) {
	node, _ := nodePeer(t)
	script := filepath.Join(moduleDir(t, "node"), "pushpeer.js")
	p := pushdtest.Start(t, pushdBin(t), pushdtest.Options{})
	payload := gameState(4096)
	wire := map[string]int64{}
	for _, mode := range []string{"deflate", "plain"} {
		waitSubscriptions(t, p, 0)
		proxy := startCountProxy(t, p.WSAddr)
		ch := "game:" + mode
		peer := startPushPeer(t, "ws-"+mode, node, script, "ws://"+proxy.addr()+"/ws?format=raw&ch="+ch, mode, "1")
		open := peer.next(t, "open")
		if mode == "deflate" {
			checkDeflateAnswer(t, "npm ws", open.Ext)
		} else if open.Ext != "" {
			t.Fatalf("npm ws without deflate: 101 answered %q", open.Ext)
		}
		waitSubscriptions(t, p, 1)
		publishHTTP(t, p, ch, payload)
		msg := peer.next(t, "msg")
		if msg.Kind != "text" || msg.SHA256 != digest(payload) {
			t.Fatalf("npm ws %s: got %s of %d bytes (sha256 %s), want the %d-byte text push", mode, msg.Kind, msg.Len, msg.SHA256, len(payload))
		}
		// The 101 and the push: nothing else was sent yet.
		wire[mode] = proxy.down.Load()
		peer.next(t, "done")
	}
	t.Logf("a %d-byte push (101 included) took %d bytes on the wire with permessage-deflate, %d without (%.2fx smaller)",
		len(payload), wire["deflate"], wire["plain"], float64(wire["plain"])/float64(wire["deflate"]))
	if wire["deflate"] == 0 || wire["deflate"] >= wire["plain"] {
		t.Fatalf("bytes on the wire: deflate %d, plain %d; want fewer with deflate", wire["deflate"], wire["plain"])
	}
	if wire["deflate"] >= int64(len(payload)) {
		t.Fatalf("deflate connection carried %d bytes for a %d-byte push: not compressed", wire["deflate"], len(payload))
	}
}

// TestDeflatePython: python3-websockets offers permessage-deflate by
// default and gets JSON pushes compressed, intact.
func TestDeflatePython(t *testing.T) {
	pythonPeer(t)
	script := moduleDir(t, "python/pushpeer.py")
	p := pushdtest.Start(t, pushdBin(t), pushdtest.Options{})
	proxy := startCountProxy(t, p.WSAddr)
	payload := gameState(4096)
	peer := startPushPeer(t, "python", pythonExe, script, "ws://"+proxy.addr()+"/ws?ch=game:py", "1")
	checkDeflateAnswer(t, "python3-websockets", peer.next(t, "open").Ext)
	waitSubscriptions(t, p, 1)
	publishHTTP(t, p, "game:py", payload)
	msg := peer.next(t, "msg")
	body, err := base64.StdEncoding.DecodeString(msg.Body)
	if err != nil {
		t.Fatal(err)
	}
	checkJSONPush(t, "python3-websockets", body, "game:py", payload)
	peer.next(t, "done")
	if n := proxy.down.Load(); n >= int64(len(payload)) {
		t.Fatalf("python: %d bytes on the wire so far for a %d-byte push: not compressed", n, len(payload))
	} else {
		t.Logf("python3-websockets: %d-byte push, %d bytes on the wire (101 included)", len(payload), n)
	}
}

// TestDeflateChromium: headless Chromium negotiates permessage-deflate and
// receives a compressed JSON push intact.
func TestDeflateChromium(t *testing.T) {
	p := pushdtest.Start(t, pushdBin(t), pushdtest.Options{})
	ctx := startBrowser(t)
	proxy := startCountProxy(t, p.WSAddr)
	payload := gameState(4096)
	url := "ws://" + proxy.addr() + "/ws?ch=game:chromium"
	ext := evalJS(t, ctx, raceScale(20*time.Second), `new Promise((resolve, reject) => {
		const ws = new WebSocket(`+jsArgs(url)+`);
		window.deflateMsgs = [];
		ws.onmessage = (e) => window.deflateMsgs.push(e.data);
		ws.onopen = () => resolve(ws.extensions);
		ws.onerror = () => reject(new Error("websocket error"));
	})`)
	checkDeflateAnswer(t, "chromium", ext)
	waitSubscriptions(t, p, 1)
	publishHTTP(t, p, "game:chromium", payload)
	got := evalJS(t, ctx, raceScale(20*time.Second), `new Promise((resolve) => {
		const poll = () => window.deflateMsgs.length > 0 ? resolve(window.deflateMsgs[0]) : setTimeout(poll, 10);
		poll();
	})`)
	checkJSONPush(t, "chromium", []byte(got), "game:chromium", payload)
	if n := proxy.down.Load(); n >= int64(len(payload)) {
		t.Fatalf("chromium: %d bytes on the wire for a %d-byte push: not compressed", n, len(payload))
	} else {
		t.Logf("chromium: %d-byte push, %d bytes on the wire (101 included)", len(payload), n)
	}
}
