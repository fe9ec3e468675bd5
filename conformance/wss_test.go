package conformance

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/internal/pushdtest"
)

// The conformance cases over wss: pushd's TLS runs on its lean event
// loops (poller/tls.go), so the same peers judge the same cases through
// it. Each peer trusts a test CA made here the way its platform does
// (Node: NODE_EXTRA_CA_CERTS; Python's ssl: SSL_CERT_FILE); nothing
// disables verification.

// wssPKI writes a CA and a localhost certificate it signed; it returns
// the CA file and the certificate and key files.
func wssPKI(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pushd conformance CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for file, blk := range map[string]*pem.Block{
		caFile: {Type: "CERTIFICATE", Bytes: caDER}, certFile: {Type: "CERTIFICATE", Bytes: leafDER}, keyFile: {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(blk), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// startWSSEcho starts pushd -echo with a wss listener (on the lean loops,
// whatever PUSHD_POLLER says) and returns it and the wss address.
func startWSSEcho(t *testing.T, certFile, keyFile string) (*pushdtest.Proc, string) {
	t.Helper()
	p := startEcho(t, "-poller", "lean", "-tls-listen", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile)
	for _, line := range strings.Split(p.Log(), "\n") {
		var rec struct{ Msg, Kind, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" && rec.Kind == "wss" {
			return p, rec.Addr
		}
	}
	t.Fatalf("no wss listening line in\n%s", p.Log())
	return nil, ""
}

// caseNames lists the cases a peer runs: echoes of every size, then (full
// peers) fragmentation and pings, then the close codes.
func caseNames(full bool, codes []int) []string {
	var want []string
	for _, kind := range []string{"text", "binary"} {
		for _, n := range echoSizes {
			want = append(want, fmt.Sprintf("echo-%s-%d", kind, n))
		}
	}
	if full {
		want = append(want, "frag-text-65536", "frag-binary-1048576", "ping-empty", "ping-text", "ping-125")
	}
	for _, c := range codes {
		want = append(want, fmt.Sprintf("close-%d", c))
	}
	return want
}

func sizeArgs() []string {
	var a []string
	for _, n := range echoSizes {
		a = append(a, fmt.Sprint(n))
	}
	return a
}

// TestWSSPeers runs npm ws, undici and python3-websockets through every
// conformance case over wss, and gorilla through the echo sizes and a
// close handshake.
func TestWSSPeers(t *testing.T) {
	t.Parallel()
	caFile, certFile, keyFile := wssPKI(t)
	_, addr := startWSSEcho(t, certFile, keyFile)
	_, port, _ := net.SplitHostPort(addr)
	base := "wss://localhost:" + port
	t.Run("node", func(t *testing.T) {
		node, script := nodePeer(t)
		for _, client := range []string{"ws", "undici"} {
			t.Run(client, func(t *testing.T) {
				full := client == "ws"
				codes := browserCloseCodes[:]
				if full {
					codes = validCloseCodes[:]
				}
				argv := append([]string{node, script, client, "cases", base + "/" + client}, sizeArgs()...)
				res := runScript(t, raceScale(2*time.Minute), []string{"NODE_EXTRA_CA_CERTS=" + caFile}, argv...)
				judgeScript(t, client+" over wss", res, caseNames(full, codes))
			})
		}
	})
	t.Run("gorilla", func(t *testing.T) {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		for _, kind := range []int{websocket.TextMessage, websocket.BinaryMessage} {
			d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: &tls.Config{RootCAs: pool}}
			c, _, err := d.Dial(base+"/gorilla", nil)
			if err != nil {
				t.Fatalf("gorilla dial: %v", err)
			}
			for _, n := range echoSizes {
				want := payloadFor(kind == websocket.TextMessage, n)
				_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if err := c.WriteMessage(kind, want); err != nil {
					t.Fatalf("write %d B: %v", n, err)
				}
				_ = c.SetReadDeadline(time.Now().Add(raceScale(30 * time.Second)))
				mt, got, err := c.ReadMessage()
				if err != nil || mt != kind || !bytes.Equal(got, want) {
					t.Fatalf("%s %d B: echo type %d, %d B, err %v", kindName(kind), n, mt, len(got), err)
				}
			}
			gorillaCloseOK(t, c, 4000)
		}
	})
	t.Run("python3-websockets", func(t *testing.T) {
		script := pythonPeer(t)
		argv := append([]string{pythonExe, "-u", script, "cases", base + "/python"}, sizeArgs()...)
		res := runScript(t, raceScale(2*time.Minute), []string{"SSL_CERT_FILE=" + caFile}, argv...)
		judgeScript(t, "python3-websockets over wss", res, caseNames(true, validCloseCodes[:]))
	})
}

// TestChromiumWSS runs the browser cases over wss. Chromium trusts the
// test certificate by its public key (--ignore-certificate-errors-spki-list
// names exactly that key; every other certificate is still verified).
func TestChromiumWSS(t *testing.T) {
	t.Parallel()
	_, certFile, keyFile := wssPKI(t)
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	ctx := startBrowser(t, chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	_, addr := startWSSEcho(t, certFile, keyFile)
	_, port, _ := net.SplitHostPort(addr)
	want := caseNames(false, nil)
	want = append(want, "close-after-echo-text", "close-after-echo-binary", "subprotocol-pushd.v1")
	for _, c := range browserCloseCodes {
		want = append(want, fmt.Sprintf("close-%d", c))
	}
	expr := fmt.Sprintf("runCases(%s, %s, %s)", jsArgs("wss://localhost:"+port+"/chromium"), jsArgs(echoSizes), jsArgs(browserCloseCodes))
	res := parseLines(t, evalJS(t, ctx, raceScale(2*time.Minute), expr))
	judgeScript(t, "chromium over wss", res, want)
}
