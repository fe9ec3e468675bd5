package main_test

// Acceptance of issue 6, item 3: slowloris. 10,000 connections send a
// partial upgrade request and stall (a tenth of them keep trickling one
// byte every 500 ms); meanwhile legitimate clients connect, subscribe and
// get their subok within 100 ms at p99, and every stalled connection is
// closed at the handshake timeout, which trickling does not extend.

import (
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/internal/pushdtest"
)

func TestSecuritySlowloris(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 connections")
	}
	const (
		stalledN  = 10000
		legitN    = 300
		hsTimeout = 20 * time.Second // opening 10,000 sockets took 6.4-8.2 s on a loaded machine
	)
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-handshake-timeout", hsTimeout.String()}})
	start := time.Now()

	// Open the stalled connections from 10 source addresses.
	stalled := make([]net.Conn, stalledN)
	var wg sync.WaitGroup
	var failed atomic.Int64
	next := atomic.Int64{}
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= stalledN {
					return
				}
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%10))}}
				c, err := d.Dial("tcp", p.WSAddr)
				if err != nil {
					failed.Add(1)
					continue
				}
				if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: pushd\r\nUpgrade: websocket\r\n"); err != nil {
					failed.Add(1)
				}
				stalled[i] = c
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range stalled {
			if c != nil {
				c.Close()
			}
		}
	}()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d stalled connections could not be opened", n)
	}
	opened := time.Since(start)
	t.Logf("%d stalled handshakes open after %v", stalledN, opened)
	if opened > hsTimeout/2 {
		t.Fatalf("opening took %v, too close to the %v handshake timeout for the test to mean anything", opened, hsTimeout)
	}

	// Trickle one byte every 500 ms on every tenth connection.
	stop := make(chan struct{})
	var trickle sync.WaitGroup
	trickle.Add(1)
	go func() {
		defer trickle.Done()
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				for i := 0; i < stalledN; i += 10 {
					_ = stalled[i].SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
					_, _ = stalled[i].Write([]byte("X"))
				}
			}
		}
	}()

	// Legitimate clients: dial, upgrade, subscribe, subok; 4 at a time.
	lat := make([]time.Duration, legitN)
	errs := make(chan error, legitN)
	var lwg sync.WaitGroup
	lnext := atomic.Int64{}
	for range 4 {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			for {
				i := int(lnext.Add(1)) - 1
				if i >= legitN {
					return
				}
				t0 := time.Now()
				c, _, err := d.Dial(p.URL("/ws"), nil)
				if err != nil {
					errs <- fmt.Errorf("legit %d: %w", i, err)
					continue
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				err = c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"op":"sub","ch":"legit:%d"}`, i))
				var m struct{ Op string }
				if err == nil {
					err = c.ReadJSON(&m)
				}
				lat[i] = time.Since(t0)
				c.Close()
				if err != nil || m.Op != "subok" {
					errs <- fmt.Errorf("legit %d: %v %q", i, err, m.Op)
				}
			}
		}()
	}
	lwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	legitDone := time.Since(start)
	slices.Sort(lat)
	p50, p99, worst := lat[legitN/2], lat[legitN*99/100], lat[legitN-1]
	t.Logf("legitimate connect+subscribe with %d stalled handshakes: p50 %v p99 %v max %v (all done %v after start)", stalledN, p50, p99, worst, legitDone)
	if p99 > 100*time.Millisecond {
		t.Errorf("p99 connect+subscribe %v, want < 100ms", p99)
	}
	if legitDone > hsTimeout {
		t.Errorf("the legitimate clients finished %v after start, after the handshake timeout: the stall was not measured", legitDone)
	}

	// Every stalled connection is closed at the handshake timeout, counted
	// from its accept: the last ones were accepted up to opened after
	// start.
	var closed atomic.Int64
	var cwg sync.WaitGroup
	grace := opened + hsTimeout + 3*time.Second
	deadline := start.Add(grace)
	for w := range 64 {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			buf := make([]byte, 512)
			for i := w; i < stalledN; i += 64 {
				_ = stalled[i].SetReadDeadline(deadline)
				for {
					if _, err := stalled[i].Read(buf); err != nil {
						if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
							closed.Add(1)
						}
						break
					}
				}
			}
		}()
	}
	cwg.Wait()
	close(stop)
	trickle.Wait()
	if n := closed.Load(); n != stalledN {
		t.Errorf("%d of %d stalled connections closed by %v after start", n, stalledN, grace)
	}
	st := p.Stats(t)
	t.Logf("closed after %v; /stats handshake_timeouts %d, conns %d", time.Since(start), st.HandshakeTimeouts, st.Conns)
	if st.HandshakeTimeouts < stalledN {
		t.Errorf("handshake_timeouts %d, want >= %d", st.HandshakeTimeouts, stalledN)
	}
}
