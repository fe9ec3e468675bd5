package main_test

// SIGHUP re-reads the token keys and the wss certificate; a failed reload
// keeps what was loaded. POST /publish needs -admin-api-key when set.

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushd/pushd/internal/pushdtest"
)

func TestSecuritySIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	secretA, secretB := strings.Repeat("a", 32), strings.Repeat("b", 32)
	if err := os.WriteFile(secretFile, []byte(secretA), 0o600); err != nil {
		t.Fatal(err)
	}
	pki1, pki2 := newTestPKI(t), newTestPKI(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	install := func(p testPKI) {
		for src, dst := range map[string]string{p.certFile: certFile, p.keyFile: keyFile} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(pki1)
	p, wssAddr := startTLS(t, testPKI{certFile: certFile, keyFile: keyFile}, "-jwt-hs256-secret-file", secretFile)
	tok := func(secret string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	status := func(secret string) int {
		s, _ := rawRequest(t, p.WSAddr, upgradeReq("/ws?token="+tok(secret)))
		return s
	}
	trusts := func(pki testPKI) bool {
		c, err := tls.Dial("tcp", wssAddr, &tls.Config{RootCAs: pki.pool, ServerName: "localhost"})
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	if status(secretA) != 101 || status(secretB) != 401 || !trusts(pki1) || trusts(pki2) {
		t.Fatal("initial keys not in force")
	}
	hup := func() {
		if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\n%s", what, p.Tail(20))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// New secret and certificate, SIGHUP: both swap.
	if err := os.WriteFile(secretFile, []byte(secretB), 0o600); err != nil {
		t.Fatal(err)
	}
	install(pki2)
	hup()
	waitFor("the new keys", func() bool { return status(secretB) == 101 && trusts(pki2) })
	if status(secretA) != 401 || trusts(pki1) {
		t.Fatal("old secret or certificate still accepted after the reload")
	}
	// A broken file: the reload fails and the keys in force stay.
	if err := os.WriteFile(secretFile, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	waitFor("the failed reload's log line", func() bool {
		return strings.Contains(p.Log(), "auth reload failed") && strings.Contains(p.Log(), "certificate reload failed")
	})
	if status(secretB) != 101 || !trusts(pki2) {
		t.Fatal("a failed reload dropped the keys in force")
	}
}

func TestSecurityAdminAPIKey(t *testing.T) {
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-admin-api-key", "s3cret"}})
	post := func(auth string) int {
		req, _ := http.NewRequest("POST", p.AdminURL("/publish?ch=a"), bytes.NewReader([]byte(`1`)))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for auth, want := range map[string]int{"": 401, "Bearer wrong": 401, "s3cret": 401, "Bearer s3cret": 200} {
		if got := post(auth); got != want {
			t.Errorf("POST /publish with Authorization %q: %d, want %d", auth, got, want)
		}
	}
}
