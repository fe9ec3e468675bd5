package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The pushd-wss server: the same binary on the lean loops with a wss
// listener (-tls-listen) and a self-signed P-256 certificate made in the
// harness's temporary directory; clients reach it over TLS (client -tls)
// and bench measures it exactly as it measures ws.

// wssServer is the -servers name of pushd over wss.
const wssServer = "pushd-wss"

// wssArgs writes a self-signed certificate for 127.0.0.1/localhost into
// dir (once) and returns the pushd flags that serve wss with it.
func wssArgs(dir string) ([]string, error) {
	cert, key := filepath.Join(dir, "wss-cert.pem"), filepath.Join(dir, "wss-key.pem")
	if _, err := os.Stat(key); err != nil {
		if err := writeSelfSigned(cert, key); err != nil {
			return nil, fmt.Errorf("wss certificate: %w", err)
		}
	}
	return []string{"-poller", "lean", "-tls-listen", "127.0.0.1:0", "-tls-cert", cert, "-tls-key", key}, nil
}

func writeSelfSigned(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
}

// wssListenAddr finds the wss listener in a pushd log ("listening",
// kind wss; logged before the ws and admin lines).
func wssListenAddr(log string) (string, error) {
	for _, line := range strings.Split(log, "\n") {
		var rec struct{ Msg, Kind, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" && rec.Kind == "wss" {
			return rec.Addr, nil
		}
	}
	return "", fmt.Errorf("%w: no wss listening line", ErrExited)
}

// clientTLS is the bench client's TLS configuration: the certificate is
// the harness's own, so it is not verified.
func clientTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
}
