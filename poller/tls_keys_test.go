package poller

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"reflect"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

// onlyConn returns the server side of s's one connection.
func onlyConn(t *testing.T, s *Server) *Conn {
	t.Helper()
	var got *Conn
	eventually(t, "the server's connection", func() bool {
		got = nil
		s.Each(func(c *Conn) bool { got = c; return false })
		return got != nil
	})
	return got
}

// waitCold waits until both directions of c dropped their AES-GCM.
func waitCold(t *testing.T, c *Conn) time.Duration {
	t.Helper()
	start := time.Now()
	k := c.tlsKeys()
	eventually(t, "both AES-GCM states dropped", func() bool { return !k.in.built() && !k.out.built() })
	return time.Since(start)
}

// echo sends msg as one frame and checks that the server echoes it.
func (c *rawClient) echo(msg []byte) {
	c.t.Helper()
	c.writeChopped(c.frame(ws.OpBinary, true, msg), 0)
	op, got, err := c.readFrame()
	if err != nil || op != ws.OpBinary || !bytes.Equal(got, msg) {
		c.t.Fatalf("echo of %d B: op=%v len=%d err=%v", len(msg), op, len(got), err)
	}
}

// A TLS 1.3 AES-GCM connection drops its AES-GCM state once idle, then
// rebuilds it on the next record in either direction, any number of
// times, and the bytes on the wire stay right (a Go crypto/tls client
// decrypts them and its records are decrypted).
func TestTLSIdleKeysDropped(t *testing.T) {
	if !findTLSAEAD().ok {
		t.Fatal("crypto/tls.Conn's in/out halfConn cipher/trafficSecret not found: idle wss connections keep 1.8 KiB of AES-GCM state (tls_keys.go)")
	}
	s, addr, ccfg := startTLSServer(t, Config{tlsCool: 100 * time.Millisecond, MaxMessageSize: 1 << 20, MaxFrameSize: 1 << 20}, Echo{})
	ccfg.MinVersion = tls.VersionTLS13
	c, _ := dialTLS(t, addr, ccfg, 0)
	c.upgrade(0)
	c.echo([]byte("first"))
	sc := onlyConn(t, s)
	if sc.tlsKeys() == nil {
		t.Fatalf("lazy AES-GCM not installed (suite %s); stats %+v", tls.CipherSuiteName(sc.tls.tc.ConnectionState().CipherSuite), s.Stats())
	}
	for i := range 3 {
		took := waitCold(t, sc)
		before := s.Stats().TLSKeyRebuilds
		c.echo(bytes.Repeat([]byte{byte('a' + i)}, 1+i*30000)) // 1 B, then records of 16 KiB
		if got := s.Stats().TLSKeyRebuilds - before; got != 2 {
			t.Fatalf("round %d: %d AES-GCM rebuilds, want 2 (in and out)", i, got)
		}
		t.Logf("round %d: cold %v after the last record", i, took.Round(time.Millisecond))
	}
	// A server-initiated push to a cold connection (the flush seals).
	waitCold(t, sc)
	if err := sc.Send(codec.CompileFrame(ws.OpText, []byte("push"))); err != nil {
		t.Fatal(err)
	}
	if op, p, err := c.readFrame(); err != nil || op != ws.OpText || string(p) != "push" {
		t.Fatalf("push after cooling: op=%v %q err=%v", op, p, err)
	}
	if st := s.Stats(); st.TLSKeysKept != 0 {
		t.Fatalf("TLSKeysKept %d, want 0", st.TLSKeysKept)
	}
}

// innerLazy reports whether each direction of c's record layer still
// runs on its lazyGCM.
func innerLazy(t *testing.T, s *Server, c *Conn) (in, out bool) {
	t.Helper()
	l := &s.tlsAEAD
	if f, ok := reflect.TypeFor[tls.Conn]().FieldByName("in"); !ok || f.Type.Field(0).Type != reflect.TypeFor[sync.Mutex]() {
		t.Fatal("crypto/tls halfConn does not start with its sync.Mutex")
	}
	var got [2]bool
	for i, off := range [2]uintptr{l.in, l.out} {
		hc := unsafe.Add(unsafe.Pointer(c.tls.tc), off)
		// halfConn embeds its sync.Mutex first; crypto/tls swaps the
		// cipher under it.
		mu := (*sync.Mutex)(hc)
		mu.Lock()
		s.tlsAEADMu.Lock()
		_, inner, err := l.xorNonce(*(*any)(unsafe.Add(hc, l.cipher)))
		s.tlsAEADMu.Unlock()
		if err == nil {
			_, got[i] = (*inner).(*lazyGCM)
		}
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	return got[0], got[1]
}

// pipeConn is a net.Conn over an openssl s_client's stdin and stdout.
type pipeConn struct {
	net.Conn // nil: only Read, Write and SetReadDeadline are used
	r, w     *os.File
}

func (p pipeConn) Read(b []byte) (int, error)         { return p.r.Read(b) }
func (p pipeConn) Write(b []byte) (int, error)        { return p.w.Write(b) }
func (p pipeConn) SetReadDeadline(t time.Time) error  { return p.r.SetReadDeadline(t) }
func (p pipeConn) SetDeadline(t time.Time) error      { return p.r.SetReadDeadline(t) }
func (p pipeConn) SetWriteDeadline(t time.Time) error { return p.w.SetWriteDeadline(t) }
func (p pipeConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }

// Every TLS 1.3 suite, negotiated by a client we did not write (openssl
// s_client, one suite each), echoes before and after the connection
// went cold: AES-128-GCM and AES-256-GCM get lazy state, ChaCha20
// keeps crypto/tls's (it holds no table worth dropping).
func TestTLSIdleKeysOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is not installed (scripts/test.sh installs it): ", err)
	}
	s, addr, _ := startTLSServer(t, Config{tlsCool: 100 * time.Millisecond, MaxMessageSize: 1 << 20, MaxFrameSize: 1 << 20}, Echo{})
	for _, tc := range []struct {
		name, suite string
		id          uint16
		lazy        bool
		keyUpdate   bool
	}{
		{"TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", tls.TLS_AES_128_GCM_SHA256, true, false},
		{"TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", tls.TLS_AES_256_GCM_SHA384, true, false},
		{"TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256", tls.TLS_CHACHA20_POLY1305_SHA256, false, false},
		// The client's KeyUpdate (update_requested) makes crypto/tls
		// install its own AES-GCM for both directions; records keep
		// flowing.
		{"KeyUpdate", "TLS_AES_128_GCM_SHA256", tls.TLS_AES_128_GCM_SHA256, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inR, inW, _ := os.Pipe()
			outR, outW, _ := os.Pipe()
			args := []string{"s_client", "-connect", addr, "-tls1_3", "-ciphersuites", tc.suite,
				"-alpn", "http/1.1", "-quiet", "-no_ign_eof"}
			if !tc.keyUpdate {
				// A chunk of a large frame that starts with Q, R or K
				// would be taken for a command.
				args = append(args, "-nocommands")
			}
			cmd := exec.Command(openssl, args...)
			cmd.Stdin, cmd.Stdout = inR, outW
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			inR.Close()
			outW.Close()
			t.Cleanup(func() {
				inW.Close()
				done := make(chan struct{})
				go func() { _ = cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					_ = cmd.Process.Kill()
					<-done
				}
				outR.Close()
			})
			pc := pipeConn{r: outR, w: inW}
			c := &rawClient{t: t, conn: pc, br: bufio.NewReader(pc), cfg: codec.Config{Role: codec.RoleClient}}
			c.p.Init(&c.cfg)
			c.upgrade(0)
			c.echo([]byte("hello"))
			var sc *Conn
			eventually(t, "the suite's connection", func() bool {
				sc = nil
				s.Each(func(x *Conn) bool {
					if x.state.Load() == stateOpen {
						sc = x
					}
					return sc == nil
				})
				return sc != nil
			})
			if got := sc.tls.tc.ConnectionState().CipherSuite; got != tc.id {
				t.Fatalf("negotiated %s, want %s (openssl: %s)", tls.CipherSuiteName(got), tc.suite, stderr.String())
			}
			if (sc.tlsKeys() != nil) != tc.lazy {
				t.Fatalf("lazy AES-GCM installed: %v, want %v", sc.tlsKeys() != nil, tc.lazy)
			}
			if tc.lazy {
				waitCold(t, sc)
			} else {
				time.Sleep(300 * time.Millisecond)
			}
			if tc.keyUpdate {
				// s_client's "K" command: a KeyUpdate asking for ours.
				// (TLSRecordErrors also counts earlier subtests' close_notify.)
				errs := s.Stats().TLSRecordErrors
				if _, err := inW.Write([]byte("K\n")); err != nil {
					t.Fatal(err)
				}
				time.Sleep(200 * time.Millisecond)
				c.echo([]byte("after the key update"))
				if lazyIn, lazyOut := innerLazy(t, s, sc); lazyIn || lazyOut {
					t.Fatalf("after the KeyUpdate the record layer still uses the lazy AES-GCM (in %v, out %v): was it sent? openssl: %s", lazyIn, lazyOut, stderr.String())
				}
				time.Sleep(300 * time.Millisecond) // the lazy pair goes cold, unused
				c.echo([]byte("and later"))
				if st := s.Stats(); st.TLSRecordErrors != errs {
					t.Fatalf("TLSRecordErrors %d after a KeyUpdate, was %d", st.TLSRecordErrors, errs)
				}
			} else {
				c.echo(bytes.Repeat([]byte("z"), 40000))
				c.echo([]byte("again"))
			}
			c.writeChopped(c.frame(ws.OpClose, true, codec.AppendClosePayload(nil, 4000, "bye")), 0)
			if code := c.expectClose(); code != 4000 {
				t.Fatalf("close code %d, want 4000", code)
			}
			eventually(t, "the connection closed", func() bool { return sc.state.Load() == stateClosed })
		})
	}
	if st := s.Stats(); st.TLSKeysKept != 0 {
		t.Fatalf("TLSKeysKept %d, want 0", st.TLSKeysKept)
	}
}
