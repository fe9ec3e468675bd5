package poller

import (
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"
)

// refTLSServer is the reference: crypto/tls with a goroutine per
// connection, handshaking and then closing.
func refTLSServer(b *testing.B, cfg *tls.Config) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if tc := c.(*tls.Conn); tc.Handshake() == nil {
					var one [1]byte
					_, _ = tc.Read(one[:]) // until the client closes
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// handshakes runs n full TLS 1.3 handshakes (no resumption) against addr
// from conc clients and returns the elapsed time.
func handshakes(b *testing.B, addr string, cfg *tls.Config, n, conc int) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan struct{}, n)
	for range n {
		work <- struct{}{}
	}
	close(work)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
				if err != nil {
					b.Error(err)
					return
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkTLSHandshakes measures wss handshakes per second on the lean
// loops (pooled handshakes, Config.TLSCPU tokens) against a
// goroutine-per-connection crypto/tls server, alternating in the same
// run; it reports both rates and their ratio (goal ≥ 0.8).
func BenchmarkTLSHandshakes(b *testing.B) {
	cert, pool := testCert(b)
	scfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	s, err := New(Config{Backend: BackendLean, TLS: scfg}, Echo{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Listen("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	addr, err := s.ListenTLS("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.Run(b.Context()) }()
	ref := refTLSServer(b, scfg)
	ccfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
	const per, conc = 200, 8
	var ours, theirs time.Duration
	b.ReportAllocs()
	for b.Loop() {
		ours += handshakes(b, addr.String(), ccfg, per, conc)
		theirs += handshakes(b, ref, ccfg, per, conc)
	}
	n := float64(b.N * per)
	b.ReportMetric(n/ours.Seconds(), "poller-hs/s")
	b.ReportMetric(n/theirs.Seconds(), "ref-hs/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio")
}
