package main

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// wssCert holds the wss certificate: the poller serves TLS on its own
// loops (poller.Server.ListenTLS) and asks GetCertificate for every
// handshake, so a SIGHUP reload swaps the pointer and established
// connections keep their sessions.
type wssCert struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// loadCert reads a certificate chain and its key.
func loadCert(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	return &c, nil
}

// tlsVersions maps -tls-min-version to crypto/tls versions.
var tlsVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// newWSSCert loads the certificate and builds the wss TLS configuration:
// -tls-min-version, ALPN http/1.1 (the WebSocket upgrade), session
// tickets with crypto/tls's own rotating keys.
func newWSSCert(cfg Config) (*wssCert, *tls.Config, error) {
	c, err := loadCert(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, nil, err
	}
	w := &wssCert{certFile: cfg.TLSCert, keyFile: cfg.TLSKey}
	w.cert.Store(c)
	return w, &tls.Config{
		MinVersion: tlsVersions[cfg.TLSMinVersion],
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return w.cert.Load(), nil
		},
		NextProtos: []string{"http/1.1"},
	}, nil
}

// reload re-reads the certificate and key; on error the old pair stays.
func (w *wssCert) reload() error {
	c, err := loadCert(w.certFile, w.keyFile)
	if err != nil {
		return err
	}
	w.cert.Store(c)
	return nil
}
