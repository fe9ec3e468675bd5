package poller

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

// testCert returns a self-signed P-256 certificate for 127.0.0.1 and a
// pool that trusts it.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pushd test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// startTLSServer runs a lean Server with a wss listener; it returns the
// server, the wss address and a client config trusting its certificate.
func startTLSServer(t *testing.T, cfg Config, h Handler) (*Server, string, *tls.Config) {
	t.Helper()
	// wss is served by the lean backend only (doc.go), whatever
	// PUSHD_POLLER says; TestListenTLSNeedsLean covers netpoll.
	cert, pool := testCert(t)
	cfg.Backend = BackendLean
	if cfg.Tick == 0 {
		cfg.Tick = 10 * time.Millisecond
	}
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	s, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr, err := s.ListenTLS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return s, addr.String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
}

// chopConn writes every Write in pieces of n bytes, each its own segment.
type chopConn struct {
	net.Conn
	n int
}

func (c chopConn) Write(p []byte) (int, error) {
	w := 0
	for len(p) > 0 {
		k := min(c.n, len(p))
		m, err := c.Conn.Write(p[:k])
		w += m
		if err != nil {
			return w, err
		}
		p = p[k:]
	}
	return w, nil
}

// recordCounter counts the TLS records read from the server.
type recordCounter struct {
	net.Conn
	mu      sync.Mutex
	buf     []byte
	records int
}

func (r *recordCounter) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.buf = append(r.buf, p[:n]...)
	for len(r.buf) >= 5 {
		l := 5 + (int(r.buf[3])<<8 | int(r.buf[4]))
		if len(r.buf) < l {
			break
		}
		if r.buf[0] == 23 { // application_data
			r.records++
		}
		r.buf = r.buf[l:]
	}
	r.mu.Unlock()
	return n, err
}

func (r *recordCounter) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.records
}

// dialTLS opens a wss client connection (chop > 0: every write of the
// client's records is split into chop-byte segments).
func dialTLS(t *testing.T, addr string, cfg *tls.Config, chop int) (*rawClient, *tls.Conn) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var under net.Conn = raw
	if chop > 0 {
		raw.(*net.TCPConn).SetNoDelay(true)
		under = chopConn{raw, chop}
	}
	tc := tls.Client(under, cfg)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("tls handshake: %v", err)
	}
	_ = tc.SetDeadline(time.Time{})
	t.Cleanup(func() { tc.Close() })
	c := &rawClient{t: t, conn: tc, br: bufio.NewReader(tc), cfg: codec.Config{Role: codec.RoleClient}}
	c.p.Init(&c.cfg)
	return c, tc
}

func TestTLSEchoVersionsAndSizes(t *testing.T) {
	s, addr, ccfg := startTLSServer(t, Config{MaxFrameSize: 1 << 20, MaxMessageSize: 1 << 20}, Echo{})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := ccfg.Clone()
		cfg.MinVersion, cfg.MaxVersion = v, v
		c, tc := dialTLS(t, addr, cfg, 0)
		if st := tc.ConnectionState(); st.Version != v || st.NegotiatedProtocol != "http/1.1" {
			t.Fatalf("version %x alpn %q, want %x http/1.1", st.Version, st.NegotiatedProtocol, v)
		}
		c.upgrade(0)
		for _, n := range []int{0, 1, 125, 126, 16 << 10, 65536, 1 << 20} {
			msg := bytes.Repeat([]byte{'x'}, n)
			c.writeChopped(c.frame(ws.OpBinary, true, msg), 0)
			op, got, err := c.readFrame()
			if err != nil || op != ws.OpBinary || !bytes.Equal(got, msg) {
				t.Fatalf("tls %x size %d: op=%v len=%d err=%v", v, n, op, len(got), err)
			}
		}
		c.writeChopped(c.frame(ws.OpClose, true, codec.AppendClosePayload(nil, 4000, "bye")), 0)
		if code := c.expectClose(); code != 4000 {
			t.Fatalf("close code %d, want 4000", code)
		}
	}
	if st := s.Stats(); st.TLSHandshakes != 2 {
		t.Fatalf("TLSHandshakes %d, want 2", st.TLSHandshakes)
	}
}

// Every byte of the client's records (handshake included) arrives in its
// own segment: crypto/tls is fed partial records by the loop.
func TestTLSByteByByte(t *testing.T) {
	_, addr, ccfg := startTLSServer(t, Config{HandshakeTimeout: 30 * time.Second}, Echo{})
	c, _ := dialTLS(t, addr, ccfg, 1)
	c.upgrade(0)
	var stream []byte
	stream = append(stream, c.frame(ws.OpText, false, []byte("héllo "))...)
	stream = append(stream, c.frame(ws.OpPing, true, []byte("p"))...)
	stream = append(stream, c.frame(ws.OpContinuation, true, []byte("wörld"))...)
	c.writeChopped(stream, 3)
	op, p, err := c.readFrame()
	if err != nil || op != ws.OpPong || string(p) != "p" {
		t.Fatalf("want pong, got op=%v %q err=%v", op, p, err)
	}
	op, p, err = c.readFrame()
	if err != nil || op != ws.OpText || string(p) != "héllo wörld" {
		t.Fatalf("want echo, got op=%v %q err=%v", op, p, err)
	}
}

// A burst queued with Queue and one Flush leaves as one TLS record.
func TestTLSBurstIsOneRecord(t *testing.T) {
	h := &openHook{ch: make(chan *Conn, 1)}
	_, addr, ccfg := startTLSServer(t, Config{}, h)
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rc := &recordCounter{Conn: raw}
	tc := tls.Client(rc, ccfg)
	t.Cleanup(func() { tc.Close() })
	c := &rawClient{t: t, conn: tc, br: bufio.NewReader(tc), cfg: codec.Config{Role: codec.RoleClient}}
	c.p.Init(&c.cfg)
	c.upgrade(0)
	sc := <-h.ch
	before := rc.count()
	frame := codec.CompileFrame(ws.OpText, []byte("push"))
	for range 16 {
		if err := sc.Queue(frame); err != nil {
			t.Fatal(err)
		}
	}
	sc.Flush()
	for i := range 16 {
		if op, p, err := c.readFrame(); err != nil || op != ws.OpText || string(p) != "push" {
			t.Fatalf("frame %d: op=%v %q err=%v", i, op, p, err)
		}
	}
	if got := rc.count() - before; got != 1 {
		t.Fatalf("16 queued frames arrived in %d records, want 1", got)
	}
}

func TestTLSResumption(t *testing.T) {
	s, addr, ccfg := startTLSServer(t, Config{}, Echo{})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := ccfg.Clone()
		cfg.MinVersion, cfg.MaxVersion = v, v
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		for i := range 2 {
			c, tc := dialTLS(t, addr, cfg, 0)
			c.upgrade(0) // TLS 1.3 tickets arrive after the handshake
			if got := tc.ConnectionState().DidResume; got != (i == 1) {
				t.Fatalf("tls %x connection %d: DidResume %v", v, i, got)
			}
		}
	}
	if st := s.Stats(); st.TLSResumed != 2 || st.TLSHandshakes != 4 {
		t.Fatalf("TLSResumed %d of %d handshakes, want 2 of 4", st.TLSResumed, st.TLSHandshakes)
	}
}

func TestTLSBadInput(t *testing.T) {
	s, addr, ccfg := startTLSServer(t, Config{}, Echo{})
	t.Run("plaintext HTTP", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(handshakeRequest(addr))
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("want 400, got %v %v", resp, err)
		}
		if _, err := io.ReadAll(resp.Body); err != nil {
			t.Fatalf("body: %v", err)
		}
		eventually(t, "plaintext counted", func() bool { return s.Stats().TLSPlaintext == 1 })
	})
	t.Run("garbage", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte{22, 3, 1, 0, 40, 0xde, 0xad, 0xbe, 0xef})
		conn.Write(bytes.Repeat([]byte{0x55}, 64))
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, conn); err != nil {
			t.Fatalf("want EOF after garbage, got %v", err)
		}
	})
	t.Run("garbage record after the handshake", func(t *testing.T) {
		raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		tc := tls.Client(raw, ccfg)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		before := s.Stats().TLSRecordErrors
		// An application_data record that does not decrypt.
		raw.Write(append([]byte{23, 3, 3, 0, 64}, bytes.Repeat([]byte{0x42}, 64)...))
		_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, raw); err != nil {
			t.Fatalf("want EOF after a bad record, got %v", err)
		}
		if got := s.Stats().TLSRecordErrors; got != before+1 {
			t.Fatalf("TLSRecordErrors %d, want %d", got, before+1)
		}
	})
	eventually(t, "connections gone", func() bool { return s.Stats().Conns == 0 })
	if st := s.Stats(); st.TLSFailures < 1 {
		t.Fatalf("TLSFailures %d after a garbage handshake, want ≥ 1", st.TLSFailures)
	}
}

// A client that asks to renegotiate (TLS 1.2) is refused: the connection
// ends instead of a second handshake.
func TestTLSRenegotiationRefused(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	s, addr, _ := startTLSServer(t, Config{}, Echo{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", addr, "-tls1_2")
	pr, pw := io.Pipe()
	cmd.Stdin = pr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "handshake", func() bool { return s.Stats().TLSHandshakes == 1 })
	// "R" on a line of its own asks s_client to renegotiate.
	if _, err := pw.Write([]byte("R\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "renegotiation refused", func() bool { return s.Stats().TLSRecordErrors == 1 })
	eventually(t, "connection closed", func() bool { return s.Stats().Conns == 0 })
	pw.Close()
	_ = cmd.Wait()
	if st := s.Stats(); st.TLSHandshakes != 1 {
		t.Fatalf("TLSHandshakes %d after renegotiation attempt, want 1", st.TLSHandshakes)
	}
	t.Logf("openssl s_client: %s", out.Bytes()[max(0, out.Len()-300):])
}

func TestTLSIdleConnectionsAddNoGoroutines(t *testing.T) {
	s, addr, ccfg := startTLSServer(t, Config{}, Echo{})
	open := func(n int) {
		for range n {
			c, _ := dialTLS(t, addr, ccfg, 0)
			c.upgrade(0)
		}
		eventually(t, "connections registered", func() bool { return s.Stats().Upgraded >= uint64(n) })
	}
	open(20)
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()
	open(300)
	time.Sleep(100 * time.Millisecond)
	if got := runtime.NumGoroutine(); got > base+8 {
		t.Fatalf("goroutines grew from %d to %d with 300 more idle wss connections", base, got)
	}
}

// The reflect lookup finds crypto/tls.Conn's input buffers, and release
// frees them between records without breaking the connection: a client
// tls.Conn that read a large echo holds them, holds none after release,
// and reads the next echo.
func TestTLSIdleBuffersReleased(t *testing.T) {
	bufs := findTLSBufs()
	if !bufs.ok {
		t.Fatal("crypto/tls.Conn's rawInput/input/hand not found: idle wss connections would keep their buffers (tls_idle.go)")
	}
	_, addr, ccfg := startTLSServer(t, Config{}, Echo{})
	c, tc := dialTLS(t, addr, ccfg, 0)
	c.upgrade(0)
	for i := range 3 {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 40<<10)
		c.writeChopped(c.frame(ws.OpBinary, true, msg), 0)
		op, got, err := c.readFrame()
		if err != nil || op != ws.OpBinary || !bytes.Equal(got, msg) {
			t.Fatalf("echo %d: op=%v len=%d err=%v", i, op, len(got), err)
		}
		before := bufs.held(tc)
		bufs.release(tc)
		if after := bufs.held(tc); before < 16<<10 || after != 0 {
			t.Fatalf("echo %d: buffers held %d B before release, %d after; want ≥ 16 KiB, then 0", i, before, after)
		}
	}
}

func TestListenTLSNeedsLean(t *testing.T) {
	cert, _ := testCert(t)
	s, err := New(Config{Backend: BackendNetpoll, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, Echo{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListenTLS("127.0.0.1:0"); !errors.Is(err, ErrConfig) {
		t.Fatalf("ListenTLS on netpoll: %v, want ErrConfig", err)
	}
}

// 2,000 half-open TLS handshakes (a record header, then nothing) hold a
// parked goroutine each and no handshake CPU token: legitimate wss
// clients meanwhile complete the handshake and the upgrade. Latencies are
// logged (p50/p99), not asserted; every legitimate connect must succeed,
// and every half-open one ends (its goroutine too) when its client goes.
func TestTLSHalfOpenFlood(t *testing.T) {
	const flood, legit = 2000, 100
	s, addr, ccfg := startTLSServer(t, Config{HandshakeTimeout: 20 * time.Second}, Echo{})
	var half []net.Conn
	for range flood {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("flood dial %d: %v", len(half), err)
		}
		t.Cleanup(func() { c.Close() })
		_, _ = c.Write([]byte{0x16, 0x03, 0x01})
		half = append(half, c)
	}
	eventually(t, "flood registered", func() bool { return s.Stats().TLSConns >= flood })
	lat := make([]time.Duration, 0, legit)
	for range legit {
		start := time.Now()
		c, _ := dialTLS(t, addr, ccfg, 0)
		c.upgrade(0)
		lat = append(lat, time.Since(start))
		c.conn.Close()
	}
	slices.Sort(lat)
	t.Logf("with %d half-open handshakes: %d wss connects (handshake + upgrade) p50 %v p99 %v max %v; goroutines %d",
		flood, legit, lat[legit/2], lat[legit*99/100], lat[legit-1], runtime.NumGoroutine())
	if st := s.Stats(); st.TLSHandshakes != legit {
		t.Fatalf("TLSHandshakes %d, want %d", st.TLSHandshakes, legit)
	}
	for _, c := range half {
		c.Close()
	}
	eventually(t, "half-open handshakes gone", func() bool { return s.Stats().TLSConns == 0 })
}
