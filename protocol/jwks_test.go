package protocol

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/auth"
)

// jwkSet is the in-test JWKS endpoint's mutable key set.
type jwkSet struct {
	mu   sync.Mutex
	keys []map[string]string
	hits int
}

func (s *jwkSet) set(keys ...map[string]string) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func (s *jwkSet) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits++
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": s.keys})
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64u(k.N.Bytes()), "e": b64u(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]string {
	x, y := make([]byte, 32), make([]byte, 32)
	k.X.FillBytes(x)
	k.Y.FillBytes(y)
	return map[string]string{"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64u(x), "y": b64u(y)}
}

func edJWK(kid string, k ed25519.PublicKey) map[string]string {
	return map[string]string{"kty": "OKP", "kid": kid, "alg": "EdDSA", "use": "sig", "crv": "Ed25519", "x": b64u(k)}
}

func signKid(t *testing.T, m jwt.SigningMethod, kid string, key any, sub string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJWKSRotationLiveClients: an in-test HTTPS JWKS rotates RS256 →
// ES256 → EdDSA while clients stay connected; tokens of each new key are
// accepted (unknown kid refresh), nothing is dropped for the connected
// clients, a removed key's new tokens are refused, a malformed key in the
// set is skipped, and an unreachable endpoint keeps the cached keys and
// counts refresh errors.
func TestJWKSRotationLiveClients(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	epub, edk, _ := ed25519.GenerateKey(rand.Reader)
	set := &jwkSet{}
	bad := map[string]string{"kty": "RSA", "kid": "broken", "alg": "RS256", "n": "!!not-base64!!", "e": "AQAB"}
	set.set(rsaJWK("r1", &rk.PublicKey), bad)
	srv := httptest.NewTLSServer(set)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	j, err := auth.NewJWKS(ctx, auth.JWKSConfig{URL: srv.URL + "/jwks.json", Client: srv.Client(), Refresh: 500 * time.Millisecond, UnknownKID: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{Keys: auth.KeyConfig{JWKS: j}, Required: true})
	if err != nil {
		t.Fatal(err)
	}
	base, _, mem := startAuthStack(t, Config{Auth: a, Public: []string{}})
	dial := func(tok string) (*websocket.Conn, int) {
		c, resp, err := websocket.DefaultDialer.Dial(base+"/ws?token="+tok, nil)
		if err != nil {
			if resp != nil {
				return nil, resp.StatusCode
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, 101
	}
	var live []*websocket.Conn
	c1, st := dial(signKid(t, jwt.SigningMethodRS256, "r1", rk, "alice"))
	if st != 101 {
		t.Fatalf("RS256 r1: %d", st)
	}
	live = append(live, c1)
	// Rotation 1: ES256 e2 added next to r1.
	set.set(rsaJWK("r1", &rk.PublicKey), ecJWK("e2", &ek.PublicKey), bad)
	c2, st := dial(signKid(t, jwt.SigningMethodES256, "e2", ek, "alice"))
	if st != 101 {
		t.Fatalf("ES256 e2 after rotation: %d", st)
	}
	live = append(live, c2)
	// Rotation 2: r1 retired, EdDSA d3 added.
	set.set(ecJWK("e2", &ek.PublicKey), edJWK("d3", epub))
	time.Sleep(100 * time.Millisecond) // past the unknown-kid rate limit
	c3, st := dial(signKid(t, jwt.SigningMethodEdDSA, "d3", edk, "alice"))
	if st != 101 {
		t.Fatalf("EdDSA d3 after rotation: %d", st)
	}
	live = append(live, c3)
	// Wait for a periodic refresh to drop r1, then a new r1 token fails.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, st := dial(signKid(t, jwt.SigningMethodRS256, "r1", rk, "alice")); st == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a retired key's token is still accepted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Nothing dropped: every live client gets both pushes.
	for i := range 2 {
		if _, err := mem.Publish(context.Background(), "user:alice", []byte(`"p`+string(rune('0'+i))+`"`)); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range live {
		for _, want := range []string{`"p0"`, `"p1"`} {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil || !strings.Contains(string(b), want) {
				t.Fatalf("live client %d: %s %v, want %s", i, b, err, want)
			}
		}
	}
	// Unreachable: cached keys keep working, failures are counted.
	srv.Close()
	deadline = time.Now().Add(15 * time.Second)
	for j.RefreshErrors() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no refresh error counted with the endpoint down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, st := dial(signKid(t, jwt.SigningMethodES256, "e2", ek, "alice")); st != 101 {
		t.Fatalf("cached e2 with the endpoint down: %d", st)
	}
	if j.SkippedKeys() == 0 {
		t.Error("the malformed key was not counted as skipped")
	}
	t.Logf("JWKS fetched %d times, %d refresh errors, %d keys skipped", set.hits, j.RefreshErrors(), j.SkippedKeys())
}
