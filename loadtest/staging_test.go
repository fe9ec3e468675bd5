package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a self-signed P-256 certificate for 127.0.0.1 and
// localhost (it is its own CA) and its key; it returns their paths.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestRunAgainstWSSWithTokens: the staging setup, wss plus required
// tokens. pushd serves -tls-listen with -auth-required; loadtest trusts
// the CA (-ca), signs one token per connection (sub = its index, its own
// personal channel) and must get every publication, resumed handshakes
// counted in its summary. An unsigned run is refused: the tokens matter.
func TestRunAgainstWSSWithTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(strings.Repeat("s3cr3t-", 6)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startPushd(t, "-poller", "lean", "-tls-listen", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile,
		"-jwt-hs256-secret-file", secretFile, "-auth-required")
	var wss string
	for _, line := range strings.Split(p.Log(), "\n") {
		var rec struct{ Msg, Kind, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" && rec.Kind == "wss" {
			wss = rec.Addr
		}
	}
	if wss == "" {
		t.Fatalf("no wss listener in\n%s", p.Log())
	}
	js := filepath.Join(dir, "report.json")
	base := []string{"-target", "wss://" + wss + "/ws", "-ca", certFile, "-publish-url", p.AdminURL("/publish"),
		"-conns", "100", "-ramp", "1000/s", "-rate", "200", "-duration", "2s", "-seed", "5", "-loops", "2", "-max-attempts", "1"}
	code, out, errs := runInProcess(t, append(base, "-jwt-hs256-secret-file", secretFile, "-json", js, "-min-delivery", "1")...)
	if code != ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	r := readReport(t, js)
	if r.Held != 100 || r.Failed != 0 || r.DeliveryRatio != 1 || r.PublishedPersonal < 300 {
		t.Fatalf("held %d failed %d delivery %v published %d\n%s", r.Held, r.Failed, r.DeliveryRatio, r.PublishedPersonal, out)
	}
	if r.TLS["TLS 1.3"] != 100 || r.TLS["resumed"] == 0 || !strings.Contains(out, "100 handshakes (TLS 1.3 100), resumed") {
		t.Fatalf("tls %v\n%s", r.TLS, out)
	}
	t.Logf("\n%s", out)

	// No token: every upgrade is refused with 401.
	code, out, _ = runInProcess(t, append(base, "-conns", "5", "-rate", "0", "-duration", "1s", "-json", filepath.Join(dir, "no-token.json"))...)
	if code == ExitOK || !strings.Contains(out, "handshake_status_401") {
		t.Fatalf("without tokens: exit %d\n%s", code, out)
	}
}

func TestSignHS256(t *testing.T) {
	// Header and claims are base64url without padding.
	got := string(signHS256(nil, []byte("0123456789abcdef0123456789abcdef"), `{"sub":"7"}`))
	parts := strings.Split(got, ".")
	if len(parts) != 3 || parts[0] != "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9" || parts[1] != "eyJzdWIiOiI3In0" {
		t.Fatalf("token %q", got)
	}
}
