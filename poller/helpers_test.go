package poller

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

// startServer runs a Server with cfg and h on 127.0.0.1:0 until the test
// ends.
func startServer(t *testing.T, cfg Config, h Handler) (*Server, string) {
	t.Helper()
	if cfg.Tick == 0 {
		cfg.Tick = 10 * time.Millisecond
	}
	if cfg.Backend == "" {
		// The test command runs this package once per backend.
		cfg.Backend = os.Getenv("PUSHD_POLLER")
	}
	s, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return s, addr.String()
}

// rawClient is a hand-rolled WebSocket client: it writes exactly the bytes
// a test asks for.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	p    codec.Parser
	cfg  codec.Config

	tmp, pending []byte // read buffer and its unparsed rest
}

const handshakeFmt = "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"

func handshakeRequest(host string) []byte {
	var key [16]byte
	_, _ = rand.Read(key[:])
	return []byte(fmt.Sprintf(handshakeFmt, host, base64.StdEncoding.EncodeToString(key[:])))
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, br: bufio.NewReader(conn), cfg: codec.Config{Role: codec.RoleClient}}
	c.p.Init(&c.cfg)
	return c
}

// upgrade performs the handshake, writing the request in pieces of chop
// bytes (0: all at once).
func (c *rawClient) upgrade(chop int) {
	c.t.Helper()
	c.writeChopped(handshakeRequest(c.conn.RemoteAddr().String()), chop)
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("read 101: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.t.Fatalf("status %s, want 101", resp.Status)
	}
}

func (c *rawClient) writeChopped(b []byte, chop int) {
	c.t.Helper()
	if chop <= 0 {
		chop = len(b)
	}
	for len(b) > 0 {
		n := min(chop, len(b))
		if _, err := c.conn.Write(b[:n]); err != nil {
			c.t.Fatalf("write: %v", err)
		}
		b = b[n:]
	}
}

func (c *rawClient) frame(op ws.OpCode, fin bool, payload []byte) []byte {
	return codec.AppendMaskedFrame(nil, op, fin, payload, [4]byte{1, 2, 3, 4})
}

// readFrame reads one whole frame (the echo server answers with whole
// frames); bytes of the next frame stay in c.pending.
func (c *rawClient) readFrame() (ws.OpCode, []byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf []byte
	for {
		if len(c.pending) == 0 {
			if c.tmp == nil {
				c.tmp = make([]byte, 64<<10)
			}
			n, err := c.br.Read(c.tmp)
			if err != nil {
				return 0, nil, err
			}
			c.pending = c.tmp[:n]
		}
		ch, n, ok, err := c.p.Next(c.pending)
		c.pending = c.pending[n:]
		if err != nil {
			return 0, nil, err
		}
		if !ok {
			continue
		}
		buf = append(buf, ch.Payload...)
		if ch.FrameEnd {
			return ch.MsgOp, buf, nil
		}
	}
}

// expectClose reads until a close frame and returns its code, then expects
// the server to close TCP.
func (c *rawClient) expectClose() ws.StatusCode {
	c.t.Helper()
	for {
		op, p, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("waiting for close frame: %v", err)
		}
		if op != ws.OpClose {
			continue
		}
		code, _, err := codec.ParseClose(p)
		if err != nil {
			c.t.Fatalf("bad close payload %x: %v", p, err)
		}
		c.expectEOF()
		return code
	}
}

func (c *rawClient) expectEOF() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.pending = nil
	_, err := io.Copy(io.Discard, c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("server did not close TCP: %v", err)
	}
}

// recorder is a Handler that echoes and records lifecycle events.
type recorder struct {
	Echo
	mu     sync.Mutex
	closed []ws.StatusCode
	opens  int
}

func (r *recorder) Open(*Conn) {
	r.mu.Lock()
	r.opens++
	r.mu.Unlock()
}

func (r *recorder) Close(_ *Conn, code ws.StatusCode) {
	r.mu.Lock()
	r.closed = append(r.closed, code)
	r.mu.Unlock()
}

func (r *recorder) closes() []ws.StatusCode {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ws.StatusCode(nil), r.closed...)
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
