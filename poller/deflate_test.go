package poller

import (
	"bytes"
	"compress/flate"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// The compressor in these tests is the standard library's compress/flate,
// not the klauspost one the server uses: an independent encoder.

// deflateMessage compresses p as one permessage-deflate message (RFC 7692
// §7.2.1): no context takeover, the trailing 00 00 ff ff removed.
func deflateMessage(t *testing.T, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	out := b.Bytes()
	if !bytes.HasSuffix(out, []byte{0, 0, 0xff, 0xff}) {
		t.Fatalf("flush did not end with 00 00 ff ff")
	}
	return out[:len(out)-4]
}

// compressedFrames splits the compressed message z into frames of at most
// size bytes (0: one frame), RSV1 on the first only (RFC 7692 §6.1), masked.
func compressedFrames(op ws.OpCode, z []byte, size int) []byte {
	if size <= 0 {
		size = max(len(z), 1)
	}
	var out bytes.Buffer
	first := true
	for {
		n := min(size, len(z))
		h := ws.Header{Fin: n == len(z), OpCode: ws.OpContinuation, Masked: true, Mask: [4]byte{9, 8, 7, 6}, Length: int64(n)}
		if first {
			h.OpCode, h.Rsv = op, ws.Rsv(true, false, false)
		}
		_ = ws.WriteHeader(&out, h)
		p := append([]byte(nil), z[:n]...)
		ws.Cipher(p, h.Mask, 0)
		out.Write(p)
		z, first = z[n:], false
		if len(z) == 0 {
			return out.Bytes()
		}
	}
}

// upgradeOffer performs the handshake offering ext (permessage-deflate
// parameters) and returns the Sec-WebSocket-Extensions answer.
func (c *rawClient) upgradeOffer(ext string) string {
	c.t.Helper()
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := fmt.Sprintf("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(key[:]), ext)
	c.writeChopped([]byte(req), 0)
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("read 101: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.t.Fatalf("status %s, want 101", resp.Status)
	}
	return resp.Header.Get("Sec-WebSocket-Extensions")
}

func TestDeflateNegotiation(t *testing.T) {
	_, addr := startServer(t, Config{Deflate: true}, Echo{})
	for _, tc := range []struct {
		offer  string
		accept bool
	}{
		{"permessage-deflate", true},
		{"permessage-deflate; client_max_window_bits", true},
		{"permessage-deflate; client_max_window_bits=9; client_no_context_takeover", true},
		{"permessage-deflate; server_max_window_bits=10, permessage-deflate", true},
		{"permessage-deflate; server_max_window_bits=10", false},
		{"permessage-deflate; bogus=1", false},
		{"x-webkit-deflate-frame", false},
	} {
		t.Run(tc.offer, func(t *testing.T) {
			c := dialRaw(t, addr)
			got := c.upgradeOffer(tc.offer)
			if !tc.accept {
				if got != "" {
					t.Fatalf("answered %q, want no extension", got)
				}
				return
			}
			for _, want := range []string{"permessage-deflate", "server_no_context_takeover", "client_no_context_takeover"} {
				if !strings.Contains(got, want) {
					t.Fatalf("answered %q, want %s", got, want)
				}
			}
		})
	}
	// Not configured: the offer is declined and RSV1 is a protocol error.
	_, plain := startServer(t, Config{}, Echo{})
	c := dialRaw(t, plain)
	if got := c.upgradeOffer("permessage-deflate"); got != "" {
		t.Fatalf("Deflate off answered %q", got)
	}
	c.writeChopped(compressedFrames(ws.OpText, deflateMessage(t, []byte("hello")), 0), 0)
	if code := c.expectClose(); code != ws.StatusProtocolError {
		t.Fatalf("RSV1 without deflate closed with %d, want 1002", code)
	}
}

func TestDeflateInboundInflated(t *testing.T) {
	_, addr := startServer(t, Config{Deflate: true}, Echo{})
	c := dialRaw(t, addr)
	c.upgradeOffer("permessage-deflate; client_max_window_bits")
	msg := bytes.Repeat([]byte(`{"op":"sub","ch":"game:1","héllo":"wörld"}`), 200)
	z := deflateMessage(t, msg)
	t.Logf("%d bytes compress to %d", len(msg), len(z))
	for _, size := range []int{0, 7, 1000} {
		c.writeChopped(compressedFrames(ws.OpText, z, size), 3)
		op, p, err := c.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if op != ws.OpText || !bytes.Equal(p, msg) {
			t.Fatalf("frames of %d: echo op %v, %d bytes, want the %d inflated bytes", size, op, len(p), len(msg))
		}
	}
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	c.writeChopped(compressedFrames(ws.OpBinary, deflateMessage(t, bin), 0), 0)
	if op, p, err := c.readFrame(); err != nil || op != ws.OpBinary || !bytes.Equal(p, bin) {
		t.Fatalf("binary echo: %v %x %v", op, p, err)
	}
	// An uncompressed message on a deflate connection (RSV1 clear) is fine.
	c.writeChopped(c.frame(ws.OpText, true, []byte("plain")), 0)
	if _, p, err := c.readFrame(); err != nil || string(p) != "plain" {
		t.Fatalf("plain echo: %q %v", p, err)
	}
}

func TestDeflateInboundErrors(t *testing.T) {
	const limit = 64 << 10
	s, addr := startServer(t, Config{Deflate: true, MaxMessageSize: limit}, Echo{})
	for _, tc := range []struct {
		name string
		msg  []byte
		op   ws.OpCode
		want ws.StatusCode
	}{
		// 10 MB of zeros compress to about 10 KB: past the limit once
		// inflated, however small on the wire.
		{"bomb", deflateMessage(t, make([]byte, 10<<20)), ws.OpBinary, ws.StatusMessageTooBig},
		{"just over", deflateMessage(t, make([]byte, limit+1)), ws.OpBinary, ws.StatusMessageTooBig},
		{"garbage", []byte{0xff, 0xfe, 0xfd, 0xfc, 0xfb}, ws.OpBinary, ws.StatusInvalidFramePayloadData},
		{"bad utf-8", deflateMessage(t, []byte{'a', 0xff, 'b'}), ws.OpText, ws.StatusInvalidFramePayloadData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.upgradeOffer("permessage-deflate")
			c.writeChopped(compressedFrames(tc.op, tc.msg, 4096), 0)
			if code := c.expectClose(); code != tc.want {
				t.Fatalf("closed with %d, want %d", code, tc.want)
			}
		})
	}
	// Exactly at the limit passes.
	c := dialRaw(t, addr)
	c.upgradeOffer("permessage-deflate")
	c.writeChopped(compressedFrames(ws.OpBinary, deflateMessage(t, make([]byte, limit)), 0), 0)
	if _, p, err := c.readFrame(); err != nil || len(p) != limit {
		t.Fatalf("message of exactly MaxMessageSize: %d bytes, %v", len(p), err)
	}
	st := s.Stats()
	if st.InflateTooBig != 2 || st.Inflated != 5 || st.DeflateConns != 5 {
		t.Fatalf("stats: InflateTooBig %d (want 2), Inflated %d (want 5), DeflateConns %d (want 5)", st.InflateTooBig, st.Inflated, st.DeflateConns)
	}
}
