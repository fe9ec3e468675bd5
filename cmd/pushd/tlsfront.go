package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pushd/pushd/poller"
)

// tlsFront is the wss listener. netpoll hands the poller raw bytes and
// crypto/tls needs a blocking net.Conn, so TLS runs here, outside the
// event loop, with two goroutines per connection: serve (handshake, then
// client → server) and one pump (server → client). Each connection's
// plaintext travels through a socketpair whose other end is attached to
// the poller (poller.Server.Attach), so admission, the upgrade, the
// protocol, timeouts and close handshakes are the ws listener's, byte for
// byte. This path trades memory (measured in
// security_tls_test.go; README "Security") for not reimplementing TLS on
// the event loop; a million wss clients belong behind a TLS-terminating
// load balancer in front of plain -listen.
type tlsFront struct {
	ln        net.Listener
	srv       *poller.Server
	cfg       *tls.Config
	hsTimeout time.Duration
	log       *slog.Logger
	certFile  string
	keyFile   string
	cert      atomic.Pointer[tls.Certificate]

	hsFailures atomic.Uint64
	active     atomic.Int64

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// tlsBufSize is each direction's copy buffer: one TLS record's plaintext
// is at most 16 KiB; pushes are usually far smaller, and a larger frame
// just takes several reads.
const tlsBufSize = 4 << 10

// loadCert reads a certificate chain and its key.
func loadCert(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	return &c, nil
}

func newTLSFront(cfg Config, srv *poller.Server, log *slog.Logger) (*tlsFront, error) {
	cert, err := loadCert(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.TLSListen)
	if err != nil {
		return nil, fmt.Errorf("wss listen: %w", err)
	}
	f := &tlsFront{
		ln: ln, srv: srv, hsTimeout: cfg.HandshakeTimeout, log: log,
		certFile: cfg.TLSCert, keyFile: cfg.TLSKey, conns: map[net.Conn]struct{}{},
	}
	f.cert.Store(cert)
	f.cfg = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return f.cert.Load(), nil
		},
		// The WebSocket upgrade is HTTP/1.1.
		NextProtos: []string{"http/1.1"},
	}
	log.Info("listening", "kind", "wss", "addr", ln.Addr().String())
	return f, nil
}

// reload re-reads the certificate and key; on error the old pair stays.
func (f *tlsFront) reload() error {
	c, err := loadCert(f.certFile, f.keyFile)
	if err != nil {
		return err
	}
	f.cert.Store(c)
	return nil
}

// run accepts until shutdown.
func (f *tlsFront) run() error {
	for {
		raw, err := f.ln.Accept()
		if err != nil {
			if f.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("wss accept: %w", err)
		}
		if !f.track(raw) {
			raw.Close()
			return nil
		}
		f.wg.Add(1)
		go f.serve(raw)
	}
}

func (f *tlsFront) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

func (f *tlsFront) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	f.active.Add(1)
	return true
}

func (f *tlsFront) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	f.active.Add(-1)
}

// serve runs one wss connection: the TLS handshake bounded by the
// handshake timeout, then the socketpair to the poller and the two copy
// goroutines. serve itself returns after the handshake, so the deep stack
// the handshake grew is freed and an idle connection keeps two small
// goroutines blocked in Read; the last of them to finish closes both ends.
func (f *tlsFront) serve(raw net.Conn) {
	handedOff := false
	defer func() {
		if !handedOff {
			raw.Close()
			f.untrack(raw)
			f.wg.Done()
		}
	}()
	tc := tls.Server(raw, f.cfg)
	_ = raw.SetDeadline(time.Now().Add(f.hsTimeout))
	if err := tc.Handshake(); err != nil {
		f.hsFailures.Add(1)
		return
	}
	_ = raw.SetDeadline(time.Time{})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.log.Warn("wss: socketpair", "err", err)
		return
	}
	file := os.NewFile(uintptr(fds[1]), "wss")
	plain, err := net.FileConn(file)
	file.Close()
	if err != nil {
		unix.Close(fds[0])
		return
	}
	// A refused Attach wrote its 503 into the pair: relay it all the same.
	if err := f.srv.Attach(fds[0], raw.RemoteAddr()); errors.Is(err, poller.ErrServerClosed) {
		plain.Close()
		return
	}
	handedOff = true
	var left atomic.Int32
	left.Store(2)
	finish := func() {
		if left.Add(-1) == 0 {
			plain.Close()
			raw.Close()
			f.untrack(raw)
			f.wg.Done()
		}
	}
	go func() {
		pump(tc, plain) // server → client
		_ = tc.CloseWrite()
		raw.Close() // unblocks the other pump's Read
		finish()
	}()
	go func() {
		pump(plain, tc) // client → server
		_ = plain.(*net.UnixConn).CloseWrite()
		finish()
	}()
}

// pump copies src to dst until either fails, with a small buffer of its
// own (io.Copy would allocate 32 KiB).
func pump(dst, src net.Conn) {
	buf := make([]byte, tlsBufSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// shutdown stops accepting, closes every wss connection's TCP (their
// poller side is drained by the poller's own Shutdown first) and waits.
// stopAccepting closes the wss listener (the drain); established
// connections keep being served until shutdown.
func (f *tlsFront) stopAccepting() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	_ = f.ln.Close()
}

func (f *tlsFront) shutdown(ctx context.Context) error {
	f.mu.Lock()
	f.closed = true
	conns := make([]net.Conn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()
	_ = f.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
