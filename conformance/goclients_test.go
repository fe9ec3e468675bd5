package conformance

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
)

// recConn records the first limit bytes a client writes, so the test can
// count the frames a library really sent.
type recConn struct {
	net.Conn
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if room := c.limit - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// sentFrames parses the recorded client bytes after the HTTP request and
// returns the first header byte (FIN, RSV, opcode) of each frame the client
// wrote.
func (c *recConn) sentFrames(t *testing.T) []byte {
	t.Helper()
	c.mu.Lock()
	b := append([]byte(nil), c.buf.Bytes()...)
	c.mu.Unlock()
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatalf("recorded client bytes hold no HTTP request")
	}
	b = b[i+4:]
	var ops []byte
	for len(b) >= 2 {
		n, hl := uint64(b[1]&0x7F), 2
		switch n {
		case 126:
			if len(b) < 4 {
				return ops
			}
			n, hl = uint64(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			if len(b) < 10 {
				return ops
			}
			n, hl = binary.BigEndian.Uint64(b[2:]), 10
		}
		if b[1]&0x80 != 0 {
			hl += 4
		}
		ops = append(ops, b[0])
		if uint64(len(b)) < uint64(hl)+n {
			return ops
		}
		b = b[uint64(hl)+n:]
	}
	return ops
}

// dataFrames counts the data and continuation frames in heads.
func dataFrames(heads []byte) (n int) {
	for _, h := range heads {
		if h&0x0F < 8 {
			n++
		}
	}
	return n
}

// fragmentedSends reports, over every message in heads that went out in
// more than one frame, the most frames one message used and the most pings
// sent between the fragments of one message.
func fragmentedSends(heads []byte) (maxFrames, maxPings int) {
	frames, pings, inMsg := 0, 0, false
	for _, h := range heads {
		op, fin := h&0x0F, h&0x80 != 0
		switch {
		case op == opPing && inMsg:
			pings++
		case op == opText || op == opBinary:
			frames, pings, inMsg = 1, 0, !fin
		case op == opCont && inMsg:
			frames++
			if fin {
				inMsg = false
				maxFrames, maxPings = max(maxFrames, frames), max(maxPings, pings)
			}
		}
	}
	return maxFrames, maxPings
}

func recDialer(limit int, rec **recConn) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		*rec = &recConn{Conn: c, limit: limit}
		return *rec, nil
	}
}

// TestGorillaClient judges pushd with github.com/gorilla/websocket.
func TestGorillaClient(t *testing.T) {
	t.Parallel()
	p := startEcho(t)
	dial := func(t *testing.T, d *websocket.Dialer) *websocket.Conn {
		t.Helper()
		if d == nil {
			d = &websocket.Dialer{}
		}
		d.HandshakeTimeout = 10 * time.Second
		c, resp, err := d.Dial(p.URL("/gorilla"), nil)
		if err != nil {
			t.Fatalf("gorilla dial: %v", err)
		}
		if resp.Header.Get("Sec-WebSocket-Protocol") != "" || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
			t.Fatalf("unrequested negotiation: %v", resp.Header)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for _, kind := range []int{websocket.TextMessage, websocket.BinaryMessage} {
		t.Run(fmt.Sprintf("echo-%s", kindName(kind)), func(t *testing.T) {
			t.Parallel()
			c := dial(t, nil)
			for _, n := range echoSizes {
				want := payloadFor(kind == websocket.TextMessage, n)
				_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if err := c.WriteMessage(kind, want); err != nil {
					t.Fatalf("write %d B: %v", n, err)
				}
				_ = c.SetReadDeadline(time.Now().Add(raceScale(30 * time.Second)))
				mt, got, err := c.ReadMessage()
				if err != nil {
					t.Fatalf("read echo of %d B: %v", n, err)
				}
				if mt != kind || !bytes.Equal(got, want) {
					t.Fatalf("%d B: echo type %d, %d B, equal %v", n, mt, len(got), bytes.Equal(got, want))
				}
			}
			gorillaCloseOK(t, c, 1000)
		})
	}
	t.Run("fragmented-with-interleaved-pings", func(t *testing.T) {
		t.Parallel()
		var rec *recConn
		c := dial(t, &websocket.Dialer{WriteBufferSize: 512, NetDialContext: recDialer(1<<20, &rec)})
		pongs := make(chan string, 4)
		c.SetPongHandler(func(s string) error { pongs <- s; return nil })
		type msg struct {
			mt  int
			b   []byte
			err error
		}
		msgs := make(chan msg, 4)
		go func() {
			for {
				mt, b, err := c.ReadMessage()
				msgs <- msg{mt, b, err}
				if err != nil {
					return
				}
			}
		}()
		want := textPayload(64 << 10)
		w, err := c.NextWriter(websocket.TextMessage)
		if err != nil {
			t.Fatal(err)
		}
		// NextWriter flushes a frame whenever its 512-byte buffer fills;
		// the pings go out between those fragments.
		for i, part := range [][]byte{want[:20000], want[20000:40000], want[40000:]} {
			if _, err := w.Write(part); err != nil {
				t.Fatal(err)
			}
			if i < 2 {
				if err := c.WriteControl(websocket.PingMessage, fmt.Appendf(nil, "ping-%d", i), time.Now().Add(5*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-msgs:
			if m.err != nil || m.mt != websocket.TextMessage || !bytes.Equal(m.b, want) {
				t.Fatalf("fragmented echo: type %d, %d B, err %v", m.mt, len(m.b), m.err)
			}
		case <-time.After(raceScale(10 * time.Second)):
			t.Fatal("no echo of the fragmented message")
		}
		for i := range 2 {
			select {
			case s := <-pongs:
				if s != fmt.Sprintf("ping-%d", i) {
					t.Errorf("pong %d payload %q", i, s)
				}
			default:
				t.Errorf("pong %d missing (the echo already arrived)", i)
			}
		}
		ops := rec.sentFrames(t)
		if n := dataFrames(ops); n < 100 {
			t.Fatalf("gorilla sent the message in %d data frames, want a fragmented send", n)
		}
		t.Logf("message sent in %d data frames with pings between them", dataFrames(ops))
		c.SetCloseHandler(func(int, string) error { return nil })
		if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "")); err != nil {
			t.Fatal(err)
		}
		m := <-msgs
		var ce *websocket.CloseError
		if !errors.As(m.err, &ce) || ce.Code != 1000 {
			t.Fatalf("close echo: %v", m.err)
		}
	})
	t.Run("subprotocol-pushd.v1", func(t *testing.T) {
		t.Parallel()
		d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: []string{"chat", "pushd.v1"}}
		c, resp, err := d.Dial(p.URL("/gorilla"), nil)
		if err != nil {
			status := ""
			if resp != nil {
				status = resp.Status
			}
			t.Fatalf("gorilla dial offering subprotocols chat, pushd.v1: %v (status %q)", err, status)
		}
		defer c.Close()
		if c.Subprotocol() != "pushd.v1" {
			t.Fatalf("subprotocol %q, want pushd.v1", c.Subprotocol())
		}
		gorillaCloseOK(t, c, 1000)
	})
	for _, code := range validCloseCodes {
		t.Run(fmt.Sprintf("close-%d", code), func(t *testing.T) {
			t.Parallel()
			gorillaCloseOK(t, dial(t, nil), code)
		})
	}
}

// gorillaCloseOK closes c with code and a reason and requires pushd to echo
// the code and then close TCP.
func gorillaCloseOK(t *testing.T, c *websocket.Conn, code int) {
	t.Helper()
	c.SetCloseHandler(func(int, string) error { return nil })
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "reason é"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("write close: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(raceScale(10 * time.Second)))
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("want close frame %d, got %v", code, err)
	}
	if ce.Code != code {
		t.Fatalf("sent close %d, pushd answered %d", code, ce.Code)
	}
	requireEOF(t, c.NetConn())
}

// requireEOF requires the server to close the TCP connection c.
func requireEOF(t *testing.T, c net.Conn) {
	t.Helper()
	bound := raceScale(5 * time.Second)
	_ = c.SetReadDeadline(time.Now().Add(bound))
	n, err := c.Read(make([]byte, 64))
	switch {
	case n > 0:
		t.Errorf("%d bytes after the close frame", n)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("pushd did not close TCP within %v after the close handshake", bound)
	default:
		t.Errorf("after close: %v", err)
	}
}

func kindName(gorillaKind int) string {
	if gorillaKind == websocket.TextMessage {
		return "text"
	}
	return "binary"
}

func payloadFor(text bool, n int) []byte {
	if text {
		return textPayload(n)
	}
	return binPayload(n)
}

// TestCoderClient judges pushd with github.com/coder/websocket.
func TestCoderClient(t *testing.T) {
	t.Parallel()
	p := startEcho(t)
	dial := func(t *testing.T, hc *http.Client) (*coder.Conn, context.Context) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), raceScale(60*time.Second))
		t.Cleanup(cancel)
		c, resp, err := coder.Dial(ctx, p.URL("/coder"), &coder.DialOptions{HTTPClient: hc, CompressionMode: coder.CompressionDisabled})
		if err != nil {
			t.Fatalf("coder dial: %v", err)
		}
		if resp.Header.Get("Sec-WebSocket-Protocol") != "" || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
			t.Fatalf("unrequested negotiation: %v", resp.Header)
		}
		c.SetReadLimit(maxSize + 1)
		t.Cleanup(func() { _ = c.CloseNow() })
		return c, ctx
	}
	for _, kind := range []coder.MessageType{coder.MessageText, coder.MessageBinary} {
		t.Run(fmt.Sprintf("echo-%s", kind), func(t *testing.T) {
			t.Parallel()
			c, ctx := dial(t, nil)
			for _, n := range echoSizes {
				want := payloadFor(kind == coder.MessageText, n)
				if err := c.Write(ctx, kind, want); err != nil {
					t.Fatalf("write %d B: %v", n, err)
				}
				mt, got, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("read echo of %d B: %v", n, err)
				}
				if mt != kind || !bytes.Equal(got, want) {
					t.Fatalf("%d B: echo type %v, %d B, equal %v", n, mt, len(got), bytes.Equal(got, want))
				}
			}
			if err := c.Close(coder.StatusNormalClosure, "done"); err != nil {
				t.Fatalf("close 1000: %v", err)
			}
		})
	}
	t.Run("fragmented-with-interleaved-pings", func(t *testing.T) {
		t.Parallel()
		var rec *recConn
		hc := &http.Client{Transport: &http.Transport{DialContext: recDialer(1<<20, &rec)}}
		c, ctx := dial(t, hc)
		type msg struct {
			mt  coder.MessageType
			b   []byte
			err error
		}
		msgs := make(chan msg, 1)
		go func() {
			mt, b, err := c.Read(ctx)
			msgs <- msg{mt, b, err}
		}()
		want := binPayload(256 << 10)
		w, err := c.Writer(ctx, coder.MessageBinary)
		if err != nil {
			t.Fatal(err)
		}
		// coder writes one frame per Write; Ping waits for its pong,
		// which the reader goroutine handles while the message is open.
		for i := 0; i < len(want); i += 16 << 10 {
			if _, err := w.Write(want[i : i+16<<10]); err != nil {
				t.Fatal(err)
			}
			if i%(64<<10) == 0 {
				pctx, cancel := context.WithTimeout(ctx, raceScale(5*time.Second))
				err := c.Ping(pctx)
				cancel()
				if err != nil {
					t.Fatalf("ping between fragments at %d: %v", i, err)
				}
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		m := <-msgs
		if m.err != nil || m.mt != coder.MessageBinary || !bytes.Equal(m.b, want) {
			t.Fatalf("fragmented echo: type %v, %d B, err %v", m.mt, len(m.b), m.err)
		}
		if n := dataFrames(rec.sentFrames(t)); n < 16 {
			t.Fatalf("coder sent the message in %d data frames, want a fragmented send", n)
		}
		if err := c.Close(coder.StatusNormalClosure, ""); err != nil {
			t.Fatalf("close: %v", err)
		}
	})
	for _, code := range validCloseCodes {
		t.Run(fmt.Sprintf("close-%d", code), func(t *testing.T) {
			t.Parallel()
			c, _ := dial(t, nil)
			// Close returns nil only when the peer's close frame carries
			// the same code.
			if err := c.Close(coder.StatusCode(code), "reason é"); err != nil {
				t.Fatalf("close %d: %v (peer code %d)", code, err, coder.CloseStatus(err))
			}
		})
	}
}
