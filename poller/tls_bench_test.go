package poller

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
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

// broadcastGroup is n connected clients of one kind and their server
// Conns; every client drains its socket and counts the bytes.
type broadcastGroup struct {
	conns []*Conn
	got   atomic.Int64
}

// openGroup connects n clients to addr (over TLS when ccfg is set) and
// waits for their server-side Conns from h.
func openGroup(b *testing.B, addr string, ccfg *tls.Config, n int, h *openHook) *broadcastGroup {
	g := &broadcastGroup{}
	for range n {
		raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		c := raw
		if ccfg != nil {
			c = tls.Client(raw, ccfg)
		}
		b.Cleanup(func() { c.Close() })
		if _, err := c.Write(handshakeRequest(addr)); err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(c)
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			b.Fatalf("upgrade: %v %v", resp, err)
		}
		g.conns = append(g.conns, <-h.ch)
		go func() {
			buf := make([]byte, 32<<10)
			for {
				k, err := br.Read(buf)
				g.got.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	return g
}

// broadcast queues burst copies of frame on every Conn of g, flushes
// each once (one write, one TLS record per connection) and waits until
// every client has read them all.
func (g *broadcastGroup) broadcast(b *testing.B, frame []byte, burst int) time.Duration {
	start := time.Now()
	want := g.got.Load() + int64(len(g.conns)*burst*len(frame))
	for _, c := range g.conns {
		for range burst {
			_ = c.Queue(frame)
		}
		c.Flush()
	}
	deadline := time.Now().Add(30 * time.Second)
	for g.got.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("broadcast: %d of %d bytes arrived", g.got.Load(), want)
		}
		time.Sleep(100 * time.Microsecond)
	}
	return time.Since(start)
}

// BenchmarkTLSBroadcast delivers bursts of 16 pushes (one encoded frame
// shared by all) to 500 ws and 500 wss subscribers of the same lean
// server, alternating, and reports deliveries per second for each and the
// wss/ws ratio (goal ≥ 0.5). The clients run in this process, so their
// decryption competes with the server's encryption for the same cores.
// keys=cold lets every wss connection drop its AES-GCM state before each
// burst (tls_keys.go), as a connection pushed to less often than every
// tlsCoolTime does: the ratio against keys=hot is the rebuild's cost.
func BenchmarkTLSBroadcast(b *testing.B) {
	for _, cold := range []bool{false, true} {
		name := "keys=hot"
		if cold {
			name = "keys=cold"
		}
		b.Run(name, func(b *testing.B) { benchTLSBroadcast(b, cold) })
	}
}

func benchTLSBroadcast(b *testing.B, cold bool) {
	const n, burst = 500, 16
	cert, pool := testCert(b)
	h := &openHook{ch: make(chan *Conn, 1)}
	cfg := Config{Backend: BackendLean, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}
	if cold {
		cfg.Tick, cfg.tlsCool = 5*time.Millisecond, 5*time.Millisecond
	}
	s, err := New(cfg, h)
	if err != nil {
		b.Fatal(err)
	}
	wsAddr, err := s.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	wssAddr, err := s.ListenTLS("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.Run(b.Context()) }()
	plain := openGroup(b, wsAddr.String(), nil, n, h)
	secure := openGroup(b, wssAddr.String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, n, h)
	frame := codec.CompileFrame(ws.OpText, bytes.Repeat([]byte("x"), 100))
	var tws, twss time.Duration
	rebuilds := s.Stats().TLSKeyRebuilds
	b.ReportAllocs()
	for b.Loop() {
		tws += plain.broadcast(b, frame, burst)
		if cold {
			b.StopTimer()
			for _, c := range secure.conns {
				for k := c.tlsKeys(); k != nil && k.out.built(); {
					time.Sleep(time.Millisecond)
				}
			}
			b.StartTimer()
		}
		twss += secure.broadcast(b, frame, burst)
	}
	d := float64(b.N * n * burst)
	b.ReportMetric(d/tws.Seconds(), "ws-deliveries/s")
	b.ReportMetric(d/twss.Seconds(), "wss-deliveries/s")
	b.ReportMetric(tws.Seconds()/twss.Seconds(), "ratio")
	b.ReportMetric(float64(s.Stats().TLSKeyRebuilds-rebuilds)/float64(b.N*n), "rebuilds/conn-burst")
}
