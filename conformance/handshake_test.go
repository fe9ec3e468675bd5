package conformance

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/pushdtest"
)

// TestHandshake checks the opening handshake (RFC 6455 §4.2): pushd.v1 is
// the only subprotocol selected, nothing unrequested is negotiated, and
// malformed upgrade requests are refused with a 4xx status and counted in
// handshake_failures.
func TestHandshake(t *testing.T) {
	t.Parallel()
	p := startEcho(t)
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	const accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" // RFC 6455 §1.3
	upgrade := func(extra string) string {
		return "GET /hs HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
	}
	ok := []struct {
		name, req, protocol string
	}{
		{"rfc-sample-key", upgrade(""), ""},
		{"subprotocol-pushd.v1-selected", upgrade("Sec-WebSocket-Protocol: chat, pushd.v1\r\n"), "pushd.v1"},
		{"unknown-subprotocol-not-selected", upgrade("Sec-WebSocket-Protocol: chat, superchat\r\n"), ""},
		{"unknown-extension-not-negotiated", upgrade("Sec-WebSocket-Extensions: x-unknown; foo=1\r\n"), ""},
		{"header-case-and-token-lists", strings.Replace(strings.Replace(upgrade(""), "Upgrade: websocket", "upgrade: WebSocket", 1),
			"Connection: Upgrade", "connection: keep-alive, Upgrade", 1), ""},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			resp, conn, br := rawHandshake(t, p, c.req)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %s, want 101", resp.Status)
			}
			if got := resp.Header.Get("Sec-WebSocket-Accept"); got != accept {
				t.Errorf("Sec-WebSocket-Accept %q, want %q", got, accept)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != c.protocol {
				t.Errorf("Sec-WebSocket-Protocol %q, want %q", got, c.protocol)
			}
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != "" {
				t.Errorf("unrequested or unknown extension negotiated: %q", got)
			}
			r := &rawConn{t: t, c: conn, br: br}
			r.sendFrames(text("after handshake"))
			r.expectMessage(opText, []byte("after handshake"))
			r.closeOK()
		})
	}
	before := p.Stats(t).HandshakeFailures
	bad := []struct{ name, req string }{
		{"missing-key", strings.Replace(upgrade(""), "Sec-WebSocket-Key: "+key+"\r\n", "", 1)},
		{"short-key", strings.Replace(upgrade(""), key, "c2hvcnQ=", 1)},
		{"missing-upgrade", strings.Replace(upgrade(""), "Upgrade: websocket\r\n", "", 1)},
		{"missing-connection-upgrade", strings.Replace(upgrade(""), "Connection: Upgrade", "Connection: keep-alive", 1)},
		{"post-method", strings.Replace(upgrade(""), "GET ", "POST ", 1)},
		{"http-1.0", strings.Replace(upgrade(""), "HTTP/1.1", "HTTP/1.0", 1)},
		{"version-8", strings.Replace(upgrade(""), "Version: 13", "Version: 8", 1)},
	}
	t.Run("refused", func(t *testing.T) {
		for _, c := range bad {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				resp, conn, _ := rawHandshake(t, p, c.req)
				if resp.StatusCode < 400 {
					t.Fatalf("status %s, want a 4xx/5xx refusal", resp.Status)
				}
				if c.name == "version-8" {
					// RFC 6455 §4.2.2 / §4.4: 426 with the supported version.
					if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Sec-WebSocket-Version") != "13" {
						t.Errorf("status %s, Sec-WebSocket-Version %q; want 426 and 13", resp.Status, resp.Header.Get("Sec-WebSocket-Version"))
					}
				}
				_ = conn.SetReadDeadline(time.Now().Add(raceScale(5 * time.Second)))
				_, _ = io.Copy(io.Discard, resp.Body)
				if _, err := conn.Read(make([]byte, 1)); err == nil {
					t.Errorf("connection still open and sending after the refusal")
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Errorf("connection still open %v after the refusal", raceScale(5*time.Second))
				}
			})
		}
	})
	after := waitStats(t, p, func(s pushdtest.Stats) bool { return s.HandshakeFailures >= before+uint64(len(bad)) },
		"handshake_failures for every refused request")
	t.Logf("handshake_failures %d -> %d", before, after.HandshakeFailures)
}

// rawHandshake sends req on a new TCP connection and reads the response;
// br holds what pushd sent after it.
func rawHandshake(t *testing.T, p *pushdtest.Proc, req string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.WSAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(raceScale(10 * time.Second)))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	_ = c.SetDeadline(time.Time{})
	return resp, c, br
}
