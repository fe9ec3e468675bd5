package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testKeys are freshly generated keys of every supported kind.
type testKeys struct {
	hs     []byte
	rsa    *rsa.PrivateKey
	ec     *ecdsa.PrivateKey
	ed     ed25519.PrivateKey
	rsaPEM []byte // the RSA public key as configured (PEM)
}

func newTestKeys(t testing.TB) *testKeys {
	t.Helper()
	k := &testKeys{hs: []byte(strings.Repeat("s3cret!", 6))}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k.rsaPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	return k
}

func (k *testKeys) pemAll(t testing.TB) []byte {
	t.Helper()
	out := append([]byte(nil), k.rsaPEM...)
	for _, pub := range []any{&k.ec.PublicKey, k.ed.Public()} {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	return out
}

func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsigned builds an "alg":"none" token by hand (jwt refuses to, unless
// asked with its UnsafeAllowNoneSignatureType constant).
func unsigned(c string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(c)) + "."
}

func TestCheckTable(t *testing.T) {
	k := newTestKeys(t)
	now := time.Unix(1_800_000_000, 0)
	keys, err := ParsePublicKeys(k.pemAll(t))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{
		Keys: KeyConfig{HS256Secret: k.hs, PublicKeys: keys, Audience: "pushd", Issuer: "https://id.example.com", Now: func() time.Time { return now }},
	})
	if err != nil {
		t.Fatal(err)
	}
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix(), "aud": "pushd", "iss": "https://id.example.com", "channels": []string{"room:*"}}
	}
	with := func(key string, v any) jwt.MapClaims {
		c := good()
		if v == nil {
			delete(c, key)
		} else {
			c[key] = v
		}
		return c
	}
	rows := []struct {
		name     string
		req      Request
		status   int // 0: accepted
		sentinel error
		reason   string
	}{
		{"HS256 in query", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, k.hs, good())}, 0, nil, ""},
		{"RS256 in header", Request{URI: "/ws", Authorization: "Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa, good())}, 0, nil, ""},
		{"ES256 in subprotocol", Request{URI: "/ws", Protocols: []string{"pushd.v1", "bearer." + sign(t, jwt.SigningMethodES256, k.ec, good())}}, 0, nil, ""},
		{"EdDSA", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodEdDSA, k.ed, good())}, 0, nil, ""},
		{"no token (not required)", Request{URI: "/ws"}, 0, nil, ""},

		{"expired", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, k.hs, with("exp", now.Add(-time.Second).Unix()))}, 401, ErrInvalidToken, "token expired"},
		{"no exp", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, k.hs, with("exp", nil))}, 401, ErrInvalidToken, "token lacks a required claim"},
		{"not yet valid", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, k.hs, with("nbf", now.Add(time.Hour).Unix()))}, 401, ErrInvalidToken, "token not valid yet"},
		{"alg none", Request{URI: "/ws?token=" + unsigned(`{"sub":"u1","exp":1900000000,"aud":"pushd","iss":"https://id.example.com"}`)}, 401, ErrInvalidToken, "invalid token signature or algorithm"},
		{"alg confusion: HS256 with the RSA public key", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, k.rsaPEM, good())}, 401, ErrInvalidToken, "invalid token signature or algorithm"},
		{"HS512 not allowed", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS512, k.hs, good())}, 401, ErrInvalidToken, "invalid token signature or algorithm"},
		{"RS256 by another key", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodRS256, mustRSA(t), good())}, 401, ErrInvalidToken, "invalid token signature or algorithm"},
		{"wrong aud", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, k.hs, with("aud", "other"))}, 401, ErrInvalidToken, "wrong token audience"},
		{"no aud", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, k.hs, with("aud", nil))}, 401, ErrInvalidToken, "token lacks a required claim"},
		{"wrong iss", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, k.hs, with("iss", "https://evil.example.com"))}, 401, ErrInvalidToken, "wrong token issuer"},
		{"no sub", Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, k.hs, with("sub", nil))}, 401, ErrInvalidToken, "token has no sub"},
		{"malformed", Request{URI: "/ws?token=abc.def"}, 401, ErrInvalidToken, "malformed token"},
		{"malformed base64", Request{URI: "/ws?token=%21%21.%21%21.%21%21"}, 401, ErrInvalidToken, "malformed token"},
		{"tampered payload", Request{URI: "/ws?token=" + tamper(sign(t, jwt.SigningMethodHS256, k.hs, good()))}, 401, ErrInvalidToken, "invalid token signature or algorithm"},
		{"Basic auth", Request{URI: "/ws", Authorization: "Basic dTpw"}, 401, ErrMalformedRequest, "Authorization must be Bearer <token>"},
		{"empty bearer", Request{URI: "/ws", Authorization: "Bearer "}, 401, ErrMalformedRequest, "Authorization must be Bearer <token>"},
		{"two tokens", Request{URI: "/ws?token=a&token=b"}, 401, ErrMalformedRequest, "more than one token"},
		{"header and query", Request{URI: "/ws?token=a", Authorization: "Bearer b"}, 401, ErrMalformedRequest, "more than one token"},
		{"empty query token", Request{URI: "/ws?token="}, 401, ErrMalformedRequest, "empty token"},
		{"empty bearer subprotocol", Request{URI: "/ws", Protocols: []string{"bearer."}}, 401, ErrMalformedRequest, "empty token"},
		{"huge token", Request{URI: "/ws?token=" + strings.Repeat("a", MaxTokenLen+1)}, 401, ErrMalformedRequest, "token too long"},
		{"bad query escape", Request{URI: "/ws?token=%zz"}, 401, ErrMalformedRequest, "malformed query"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			g, err := a.Check(r.req)
			if r.status == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if r.req.URI == "/ws" && r.req.Authorization == "" && len(r.req.Protocols) == 0 {
					if g.Subject != "" {
						t.Fatalf("anonymous request got %+v", g)
					}
					return
				}
				if g.Subject != "u1" || g.PersonalChannel() != "user:u1" || !g.Expires.Equal(now.Add(time.Hour)) || len(g.Channels) != 1 || g.Channels[0] != "room:*" {
					t.Fatalf("grant %+v", g)
				}
				return
			}
			var ae *Error
			if !errors.As(err, &ae) || ae.Status != r.status || !errors.Is(err, r.sentinel) || ae.Reason != r.reason {
				t.Fatalf("got %v (%#v), want %d %v %q", err, ae, r.status, r.sentinel, r.reason)
			}
		})
	}
}

func mustRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// tamper changes the payload's sub without re-signing.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(b), `"u1"`, `"u2"`, 1)))
	return strings.Join(parts, ".")
}

// TestAlgConfusionOnlyRSA: with only an RSA key configured (no HS256
// secret), an HS256 token whose HMAC key is the PEM of that very public key
// is refused (the classic confusion attack).
func TestAlgConfusionOnlyRSA(t *testing.T) {
	k := newTestKeys(t)
	keys, err := ParsePublicKeys(k.rsaPEM)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Keys: KeyConfig{PublicKeys: keys}, Required: true})
	if err != nil {
		t.Fatal(err)
	}
	c := jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()}
	if _, err := a.Check(Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodRS256, k.rsa, c)}); err != nil {
		t.Fatalf("good RS256 token refused: %v", err)
	}
	for _, key := range [][]byte{k.rsaPEM, x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)} {
		if _, err := a.Check(Request{URI: "/ws?token=" + sign(t, jwt.SigningMethodHS256, key, c)}); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("HS256 signed with the public key: %v, want ErrInvalidToken", err)
		}
	}
	if _, err := a.Check(Request{URI: "/ws"}); !errors.Is(err, ErrNoToken) {
		t.Fatalf("no token with Required: %v", err)
	}
}

func TestKeyConfigRefused(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, kc := range map[string]KeyConfig{
		"short secret": {HS256Secret: []byte("short")},
		"RSA 1024":     {PublicKeys: []crypto.PublicKey{&weak.PublicKey}},
		"P-384":        {PublicKeys: []crypto.PublicKey{&p384.PublicKey}},
		"private key":  {PublicKeys: []crypto.PublicKey{weak}},
	} {
		if _, err := New(Config{Keys: kc}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	der, _ := x509.MarshalPKCS8PrivateKey(weak)
	if _, err := ParsePublicKeys(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); !errors.Is(err, ErrConfig) {
		t.Errorf("private key PEM: %v", err)
	}
	if _, err := ParsePublicKeys([]byte("not pem")); !errors.Is(err, ErrConfig) {
		t.Errorf("garbage: %v", err)
	}
}

func TestOriginPolicy(t *testing.T) {
	p, err := NewOriginPolicy([]string{"https://app.example.com", "https://*.example.org", "http://localhost:3000"}, false)
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]bool{
		"https://app.example.com":      true,
		"HTTPS://APP.EXAMPLE.COM":      true,
		"https://app.example.com/":     true,
		"http://app.example.com":       false,
		"https://app.example.com:8443": false,
		"https://evil.com":             false,
		"https://app.example.com.evil": false,
		"https://a.example.org":        true,
		"https://a.b.example.org":      true,
		"https://example.org":          false,
		"https://evil-example.org":     false,
		"https://xexample.org":         false,
		"http://a.example.org":         false,
		"http://localhost:3000":        true,
		"http://localhost":             false,
		"null":                         false,
		"":                             false,
		"https://u@app.example.com":    false,
		"https://app.example.com/path": false,
		"%%%":                          false,
	} {
		if got := p.Allow(origin); got != want {
			t.Errorf("Allow(%q) = %v, want %v", origin, got, want)
		}
	}
	p2, _ := NewOriginPolicy([]string{"https://app.example.com"}, true)
	if !p2.Allow("") {
		t.Error("missing Origin refused with allowMissing")
	}
	a, _ := New(Config{Origins: p})
	if _, err := a.Check(Request{URI: "/ws", Origin: "https://evil.com"}); !errors.Is(err, ErrOrigin) || err.(*Error).Status != http.StatusForbidden {
		t.Errorf("Check with a bad origin: %v", err)
	}
	for _, bad := range []string{"app.example.com", "https://*", "https://a.*.com", "https://x/path"} {
		if _, err := NewOriginPolicy([]string{bad}, false); !errors.Is(err, ErrConfig) {
			t.Errorf("pattern %q accepted: %v", bad, err)
		}
	}
}
