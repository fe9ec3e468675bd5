package main_test

// Acceptance of issue 6, items 1 and 2: the real pushd binary with JWT
// keys, aud/iss, public channels and an Origin allowlist. Every row of
// TestSecurityBadInputs is one bad upgrade request and the HTTP answer it
// must get before any upgrade; the other tests cover what happens after
// the upgrade (403 subscribe, 4003 at token expiry).

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/internal/pushdtest"
)

const (
	secHS256 = "pushd-test-secret-0123456789abcdef"
	secAud   = "pushd"
	secIss   = "https://id.example.com"
)

// secEnv is a running pushd with tokens and an Origin policy.
type secEnv struct {
	p      *pushdtest.Proc
	rsa    *rsa.PrivateKey
	rsaPEM []byte
}

// startSecure starts pushd with an HS256 secret (given as a file), an RSA
// public key, -jwt-aud/-jwt-iss, -public news and an Origin allowlist;
// extra flags are appended.
func startSecure(t *testing.T, extra ...string) *secEnv {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	dir := t.TempDir()
	keyFile, secretFile := filepath.Join(dir, "jwt.pem"), filepath.Join(dir, "hs256")
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretFile, []byte(secHS256+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{
		"-jwt-hs256-secret-file", secretFile, "-jwt-public-key", keyFile,
		"-jwt-aud", secAud, "-jwt-iss", secIss, "-public", "news",
		"-allowed-origins", "https://app.example.com,https://*.example.org", "-allow-no-origin",
	}, extra...)
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: args})
	return &secEnv{p: p, rsa: k, rsaPEM: pemBytes}
}

// claims are valid claims for sub, expiring in exp, allowing channels.
func claims(sub string, exp time.Duration, channels ...string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(exp).Unix(), "aud": secAud, "iss": secIss, "channels": channels}
}

func signTok(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	c[k] = v
	return c
}

// rawRequest writes req (a whole HTTP request) to addr and returns the
// response's status and headers.
func rawRequest(t *testing.T, addr, req string) (int, http.Header) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no HTTP response: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// upgradeReq builds an upgrade request for target with extra header lines.
func upgradeReq(target string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: pushd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", target)
	has := func(name string) bool {
		for _, h := range headers {
			if strings.HasPrefix(strings.ToLower(h), strings.ToLower(name)+":") {
				return true
			}
		}
		return false
	}
	if !has("Sec-WebSocket-Key") {
		b.WriteString("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	}
	if !has("Sec-WebSocket-Version") {
		b.WriteString("Sec-WebSocket-Version: 13\r\n")
	}
	for _, h := range headers {
		if strings.HasSuffix(h, ": <omit>") {
			continue
		}
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// noneToken is an "alg":"none" token with valid claims.
func noneToken() string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		enc(fmt.Appendf(nil, `{"sub":"eve","exp":%d,"aud":%q,"iss":%q,"channels":["*"]}`, time.Now().Add(time.Hour).Unix(), secAud, secIss)) + "."
}

// TestSecurityBadInputs is the acceptance table: one bad upgrade request
// per row and the answer pushd must give before upgrading (plus the good
// requests each row is a variation of, which must upgrade).
func TestSecurityBadInputs(t *testing.T) {
	e := startSecure(t, "-max-header-bytes", "2048")
	good := func() jwt.MapClaims { return claims("alice", time.Hour, "room:*") }
	hs := func(c jwt.MapClaims) string { return signTok(t, jwt.SigningMethodHS256, []byte(secHS256), c) }
	rs := signTok(t, jwt.SigningMethodRS256, e.rsa, good())
	rows := []struct {
		name    string
		req     string
		status  int
		wantHdr [2]string // a header the answer must carry
	}{
		// Controls: the good requests upgrade.
		{"good HS256 ?token=", upgradeReq("/ws?token=" + hs(good())), 101, [2]string{}},
		{"good RS256 Authorization: Bearer", upgradeReq("/ws", "Authorization: Bearer "+rs), 101, [2]string{}},
		{"good token in bearer. subprotocol", upgradeReq("/ws", "Sec-WebSocket-Protocol: pushd.v1, bearer."+rs), 101, [2]string{"Sec-WebSocket-Protocol", "pushd.v1"}},
		{"anonymous, public channel", upgradeReq("/ws?ch=news"), 101, [2]string{}},
		{"allowed wildcard Origin", upgradeReq("/ws?token="+hs(good()), "Origin: https://a.b.example.org"), 101, [2]string{}},

		// Tokens: 401 before the upgrade.
		{"expired token", upgradeReq("/ws?token=" + hs(claims("alice", -time.Minute))), 401, [2]string{}},
		{"alg none", upgradeReq("/ws?token=" + noneToken()), 401, [2]string{}},
		{"alg confusion: HS256 signed with the RSA public key", upgradeReq("/ws?token=" + signTok(t, jwt.SigningMethodHS256, e.rsaPEM, good())), 401, [2]string{}},
		{"wrong aud", upgradeReq("/ws?token=" + hs(with(good(), "aud", "other"))), 401, [2]string{}},
		{"wrong iss", upgradeReq("/ws?token=" + hs(with(good(), "iss", "https://evil.example.com"))), 401, [2]string{}},
		{"no exp", upgradeReq("/ws?token=" + hs(with(good(), "exp", nil))), 401, [2]string{}},
		{"malformed token", upgradeReq("/ws?token=not.a.jwt"), 401, [2]string{}},
		{"malformed bearer header", upgradeReq("/ws", "Authorization: Basic YWxpY2U6cHc="), 401, [2]string{}},
		{"two tokens", upgradeReq("/ws?token="+hs(good()), "Authorization: Bearer "+rs), 401, [2]string{}},
		{"RS256 token from another key", upgradeReq("/ws?token=" + signTok(t, jwt.SigningMethodRS256, mustKey(t), good())), 401, [2]string{}},
		{"tampered payload", upgradeReq("/ws?token=" + tamperSub(hs(good()))), 401, [2]string{}},
		{"bearer. entry without pushd.v1", upgradeReq("/ws", "Sec-WebSocket-Protocol: bearer."+rs), 400, [2]string{}},

		// Channels in the URL outside what is allowed.
		{"anonymous, private URL channel", upgradeReq("/ws?ch=room:1"), 403, [2]string{}},
		{"token, URL channel outside its patterns", upgradeReq("/ws?ch=secret&token=" + hs(good())), 403, [2]string{}},

		// Origin.
		{"Origin not allowed", upgradeReq("/ws?token="+hs(good()), "Origin: https://evil.com"), 403, [2]string{}},
		{"Origin look-alike", upgradeReq("/ws?token="+hs(good()), "Origin: https://evil-example.org"), 403, [2]string{}},
		{"Origin bare wildcard domain", upgradeReq("/ws?token="+hs(good()), "Origin: https://example.org"), 403, [2]string{}},

		// Malformed handshakes (answers as gobwas/ws and the poller give them).
		{"oversized request header", upgradeReq("/ws", "X-Pad: "+strings.Repeat("a", 4096)), 431, [2]string{}},
		{"no Sec-WebSocket-Key", upgradeReq("/ws", "Sec-WebSocket-Key: <omit>"), 400, [2]string{}},
		{"wrong Sec-WebSocket-Version", upgradeReq("/ws", "Sec-WebSocket-Version: 8"), 426, [2]string{"Sec-WebSocket-Version", "13"}},
		{"not GET", strings.Replace(upgradeReq("/ws"), "GET", "POST", 1), 405, [2]string{}},
		{"wrong path", upgradeReq("/admin"), 404, [2]string{}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			status, hdr := rawRequest(t, e.p.WSAddr, r.req)
			if status != r.status {
				t.Fatalf("status %d, want %d", status, r.status)
			}
			if r.wantHdr[0] != "" && hdr.Get(r.wantHdr[0]) != r.wantHdr[1] {
				t.Fatalf("%s: %q, want %q", r.wantHdr[0], hdr.Get(r.wantHdr[0]), r.wantHdr[1])
			}
		})
	}
	st := stats(t, e.p)
	if v, _ := st["auth_refusals"].(float64); v < 14 {
		t.Errorf("/stats auth_refusals = %v, want at least the 14 refused credential/Origin rows", st["auth_refusals"])
	}
}

func mustKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// tamperSub rewrites the payload's sub without re-signing.
func tamperSub(tok string) string {
	parts := strings.Split(tok, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(b), `"alice"`, `"admin"`, 1)))
	return strings.Join(parts, ".")
}

// TestSecurityNoOriginRefused: with an allowlist and without
// -allow-no-origin, a request without Origin is refused (403).
func TestSecurityNoOriginRefused(t *testing.T) {
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-allowed-origins", "https://app.example.com"}})
	if status, _ := rawRequest(t, p.WSAddr, upgradeReq("/ws")); status != 403 {
		t.Fatalf("no Origin: %d, want 403", status)
	}
	if status, _ := rawRequest(t, p.WSAddr, upgradeReq("/ws", "Origin: https://app.example.com")); status != 101 {
		t.Fatalf("allowed Origin: %d, want 101", status)
	}
}

// TestSecuritySubscribeOutsideChannels: a forbidden sub gets err 403 and
// nothing else; the personal channel, the token's patterns and the public
// channels keep delivering.
func TestSecuritySubscribeOutsideChannels(t *testing.T) {
	e := startSecure(t)
	tok := signTok(t, jwt.SigningMethodRS256, e.rsa, claims("alice", time.Hour, "room:*"))
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{"pushd.v1", "bearer." + tok}}
	c, resp, err := d.Dial(e.p.URL("/ws?ch=room:1"), http.Header{"Origin": {"https://app.example.com"}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "pushd.v1" {
		t.Fatalf("selected %q, want pushd.v1", got)
	}
	ready(t, c)
	for _, ch := range []string{"secret", "user:bob", "room"} {
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"op":"sub","ch":"`+ch+`"}`))
		if m := readJSON(t, c); m.Op != "err" || m.Code != 403 || m.Ch != ch {
			t.Fatalf("sub %s: %+v, want err 403", ch, m)
		}
	}
	_ = c.WriteMessage(websocket.TextMessage, []byte(`{"op":"sub","ch":"news"}`))
	if m := readJSON(t, c); m.Op != "subok" {
		t.Fatalf("sub news: %+v", m)
	}
	mustPublish(t, e.p, "secret", `"s"`)
	mustPublish(t, e.p, "user:bob", `"b"`)
	for _, ch := range []string{"user:alice", "room:1", "news"} {
		seq := mustPublish(t, e.p, ch, `"`+ch+`"`)
		expectPush(t, c, ch, seq, `"`+ch+`"`)
	}
	if v, _ := stats(t, e.p)["forbidden_subscribes"].(float64); v != 3 {
		t.Errorf("/stats forbidden_subscribes = %v, want 3", v)
	}
}

// TestSecurityTokenExpiresMidConnection: the connection is closed with
// 4003 when its token's exp passes, within the wheel's tick.
func TestSecurityTokenExpiresMidConnection(t *testing.T) {
	e := startSecure(t)
	// exp has one-second resolution: between 1 and 2 s from now.
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
	c := dial(t, e.p, "/ws?token="+signTok(t, jwt.SigningMethodHS256, []byte(secHS256), with(claims("bob", time.Hour), "exp", exp.Unix())))
	ready(t, c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// The in-band refresh hint ({"op":"expiring"}) comes first; this
	// client ignores it and is closed at exp.
	var err error
	for {
		var b []byte
		if _, b, err = c.ReadMessage(); err != nil {
			break
		}
		if !strings.Contains(string(b), `"op":"expiring"`) {
			t.Fatalf("unexpected frame before the close: %s", b)
		}
	}
	late := time.Since(exp)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4003 {
		t.Fatalf("want close 4003, got %v", err)
	}
	if late < -50*time.Millisecond || late > 500*time.Millisecond {
		t.Fatalf("closed %v after exp, want within the wheel's tick", late)
	}
	t.Logf("closed with 4003 %v after exp", late)
	waitStat(t, e.p, "token_expired", func(v float64) bool { return v == 1 })
}
