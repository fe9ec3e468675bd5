package main_test

// End-to-end limit tests: the real pushd binary in its own process, driven
// from this test process over loopback from many 127.0.x.y source
// addresses. They check the resource contract of DESIGN §6: goroutines do
// not grow with connections, EMFILE is shed cleanly, and -max-conns refuses
// with 503 + Retry-After.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/internal/pushdtest"
	"github.com/pushd/pushd/internal/srcaddr"
)

// limDialer returns a many-source dialer over sources (a srcaddr list).
func limDialer(t *testing.T, sources string) *srcaddr.Dialer {
	t.Helper()
	srcs, err := srcaddr.ParseList(sources)
	if err != nil {
		t.Fatal(err)
	}
	d, err := srcaddr.NewDialer(srcs, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// limOutcome is how one connection attempt ended.
type limOutcome int

const (
	limUpgraded limOutcome = iota // 101 Switching Protocols
	limRefused                    // HTTP 503
	limClosed                     // closed or reset before any response
	limHung                       // no answer within the deadline
	limOther                      // anything else (wrong status, bad accept key)
)

func (o limOutcome) String() string {
	return [...]string{"upgraded", "refused", "closed", "hung", "other"}[o]
}

// limAttempt is one dial + upgrade request.
type limAttempt struct {
	outcome limOutcome
	conn    net.Conn // open when upgraded
	status  int
	header  http.Header
	err     error
	took    time.Duration
}

// limUpgrade dials addr from d and sends an upgrade request, all within
// timeout, and classifies the answer. The connection stays open only when
// it upgraded.
func limUpgrade(d *srcaddr.Dialer, addr string, timeout time.Duration) limAttempt {
	start := time.Now()
	a := limUpgradeInner(d, addr, timeout)
	a.took = time.Since(start)
	return a
}

func limUpgradeInner(d *srcaddr.Dialer, addr string, timeout time.Duration) limAttempt {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return limClassify(err)
	}
	_ = c.SetDeadline(deadline)
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return limClassify(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return limClassify(err)
	}
	resp.Body.Close()
	a := limAttempt{status: resp.StatusCode, header: resp.Header}
	switch resp.StatusCode {
	case http.StatusSwitchingProtocols:
		sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
			c.Close()
			a.outcome, a.err = limOther, errors.New("bad Sec-WebSocket-Accept")
			return a
		}
		_ = c.SetDeadline(time.Time{})
		a.outcome, a.conn = limUpgraded, c
	case http.StatusServiceUnavailable:
		c.Close()
		a.outcome = limRefused
	default:
		c.Close()
		a.outcome, a.err = limOther, fmt.Errorf("status %s", resp.Status)
	}
	return a
}

func limClassify(err error) limAttempt {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return limAttempt{outcome: limHung, err: err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return limAttempt{outcome: limClosed, err: err}
	default:
		return limAttempt{outcome: limOther, err: err}
	}
}

// limOpen makes n attempts with conc workers and returns them all.
func limOpen(d *srcaddr.Dialer, addr string, n, conc int, timeout time.Duration) []limAttempt {
	out := make([]limAttempt, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				out[i] = limUpgrade(d, addr, timeout)
			}
		}()
	}
	wg.Wait()
	return out
}

// limCount tallies outcomes and closes nothing.
func limCount(as []limAttempt) map[limOutcome]int {
	m := map[limOutcome]int{}
	for _, a := range as {
		m[a.outcome]++
	}
	return m
}

func limCloseAll(as []limAttempt) {
	for _, a := range as {
		if a.conn != nil {
			a.conn.Close()
		}
	}
}

// limWaitConns polls /stats until conns == n and returns the stats.
func limWaitConns(t *testing.T, p *pushdtest.Proc, n int64, timeout time.Duration) pushdtest.Stats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		st, err := p.FetchStats(ctx)
		cancel()
		if err == nil && st.Conns == n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("/stats conns = %d (err %v), want %d after %v", st.Conns, err, n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// limSettledGoroutines returns /stats goroutines once seven reads 300 ms
// apart agree, or the last read after 9 s. The ~2 s of agreement
// outlasts the worker pool's idle expiry (ants: 1 s, purged every 1 s), so
// workers spawned for the handshake burst have gone.
func limSettledGoroutines(t *testing.T, p *pushdtest.Proc) int {
	t.Helper()
	last, same := -1, 0
	for range 30 {
		g := p.Stats(t).Goroutines
		if g == last {
			if same++; same == 6 {
				return g
			}
		} else {
			last, same = g, 0
		}
		time.Sleep(300 * time.Millisecond)
	}
	return last
}

// limCPU returns utime+stime of pid from /proc/<pid>/stat (USER_HZ = 100).
func limCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("parse /proc/%d/stat: %q", pid, b)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// limEchoClient is an independent (gorilla) client used to prove pushd
// keeps serving.
func limEchoClient(t *testing.T, d *srcaddr.Dialer, p *pushdtest.Proc) *websocket.Conn {
	t.Helper()
	wd := websocket.Dialer{NetDialContext: d.DialContext, HandshakeTimeout: 5 * time.Second}
	c, resp, err := wd.Dial(p.URL("/ws"), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("echo client dial: %v (status %d)", err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// limEcho sends msg and expects it back within 5 s.
func limEcho(c *websocket.Conn, msg string) error {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, got, err := c.ReadMessage()
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if mt != websocket.TextMessage || string(got) != msg {
		return fmt.Errorf("echo = %d %q, want text %q", mt, got, msg)
	}
	return nil
}

// TestLimitsGoroutinesFlat: idle upgraded connections cost pushd no
// goroutines. 200 then 2,000 connections from another process; goroutines
// at 2,000 must be within 16 of the count at 200 and within
// 64 + loops + workers.
func TestLimitsGoroutinesFlat(t *testing.T) {
	// A small pool keeps the transient worker count (spawned by the
	// handshake burst) well below the +16 slack.
	const loops, workers = 2, 8
	bin := pushdtest.Build(t)
	p := pushdtest.Start(t, bin, pushdtest.Options{Args: []string{"-echo", "-ping-interval", "10m",
		"-loops", strconv.Itoa(loops), "-workers", strconv.Itoa(workers)}})
	d := limDialer(t, "127.0.5.0/24")

	var held []limAttempt
	t.Cleanup(func() { limCloseAll(held) })
	goroutinesAt := map[int]int{}
	for _, n := range []int{200, 2000} {
		as := limOpen(d, p.WSAddr, n-len(held), 32, 10*time.Second)
		held = append(held, as...)
		if c := limCount(as); c[limUpgraded] != len(as) {
			t.Fatalf("opening to %d: outcomes %v (first error: %v)", n, c, firstErr(as))
		}
		limWaitConns(t, p, int64(n), 10*time.Second)
		goroutinesAt[n] = limSettledGoroutines(t, p)
		t.Logf("%d idle connections: pushd goroutines = %d", n, goroutinesAt[n])
	}
	if g, g0 := goroutinesAt[2000], goroutinesAt[200]; g > g0+16 {
		t.Errorf("goroutines grew with connections: %d at 200, %d at 2000 (> +16)", g0, g)
	}
	if g, bound := goroutinesAt[2000], 64+loops+workers; g > bound {
		t.Errorf("goroutines at 2000 connections = %d > 64 + loops + workers = %d", g, bound)
	}
}

func firstErr(as []limAttempt) error {
	for _, a := range as {
		if a.outcome != limUpgraded {
			return fmt.Errorf("%v: status %d: %v", a.outcome, a.status, a.err)
		}
	}
	return nil
}

// TestLimitsEMFILE: pushd limited to 256 descriptors (and -max-conns far
// above, so the real EMFILE path runs) gets 400 extra connections on top of
// 5 echo clients. Every attempt upgrades or is refused cleanly within a few
// seconds; 3 s of sustained overload cost pushd < 1 s of CPU (no busy
// loop); the 5 clients keep echoing; once the extra connections close, new
// clients connect.
func TestLimitsEMFILE(t *testing.T) {
	const nofile, extra = 256, 400
	const answerWithin = 5 * time.Second
	bin := pushdtest.Build(t)
	p := pushdtest.Start(t, bin, pushdtest.Options{
		Wrapper: []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", nofile, nofile)},
		Args:    []string{"-echo", "-max-conns", "100000", "-ping-interval", "10m"},
	})
	if st := p.Stats(t); st.RlimitNofile != nofile {
		t.Fatalf("pushd reports rlimit_nofile %d, want %d (prlimit wrapper not applied?)", st.RlimitNofile, nofile)
	}
	d := limDialer(t, "127.0.6.0/24")
	var originals []*websocket.Conn
	for i := range 5 {
		c := limEchoClient(t, d, p)
		if err := limEcho(c, fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatalf("original client %d: %v", i, err)
		}
		originals = append(originals, c)
	}
	echoAll := func(when string) {
		t.Helper()
		for i, c := range originals {
			if err := limEcho(c, fmt.Sprintf("%s %d", when, i)); err != nil {
				t.Errorf("original client %d %s: %v", i, when, err)
			}
		}
	}

	as := limOpen(d, p.WSAddr, extra, 50, answerWithin)
	var held []limAttempt
	t.Cleanup(func() { limCloseAll(held) })
	held = append(held, as...)
	c := limCount(as)
	var slowest time.Duration
	for _, a := range as {
		slowest = max(slowest, a.took)
	}
	t.Logf("%d extra connections under RLIMIT_NOFILE %d: %v; slowest answer %v", extra, nofile, c, slowest.Round(time.Millisecond))
	if c[limHung] > 0 || c[limOther] > 0 {
		t.Errorf("%d attempts hung past %v and %d ended otherwise (first: %v)", c[limHung], answerWithin, c[limOther], firstBad(as))
	}
	if c[limRefused]+c[limClosed] == 0 {
		t.Fatalf("no connection was refused: the EMFILE path was not reached (%v)", c)
	}
	if c[limUpgraded] == 0 {
		t.Fatalf("no extra connection upgraded (%v)", c)
	}
	echoAll("after burst")

	// Sustained overload: pushd's table stays full and new attempts keep
	// arriving for 3 s (8 clients, each retrying every 10 ms, ~800/s).
	// Measure its CPU over the window: refusing costs an accept, a write
	// and a close each; a loop spinning on EMFILE would burn a whole core.
	cpu0, t0 := limCPU(t, p.Pid()), time.Now()
	var attempts, hung, upgradedLate atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var lateMu sync.Mutex
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a := limUpgrade(d, p.WSAddr, answerWithin)
				attempts.Add(1)
				switch a.outcome {
				case limHung, limOther:
					hung.Add(1)
				case limUpgraded:
					upgradedLate.Add(1)
					lateMu.Lock()
					held = append(held, a)
					lateMu.Unlock()
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	cpu, wall := limCPU(t, p.Pid())-cpu0, time.Since(t0)
	t.Logf("overload window %v: %d attempts (%d upgraded, %d hung/other), pushd CPU %v",
		wall.Round(time.Millisecond), attempts.Load(), upgradedLate.Load(), hung.Load(), cpu)
	if cpu >= time.Second {
		t.Errorf("pushd used %v of CPU during %v of overload (>= 1 s): busy loop on EMFILE?", cpu, wall.Round(time.Millisecond))
	}
	if hung.Load() > 0 {
		t.Errorf("%d attempts during the overload window hung or failed oddly", hung.Load())
	}
	if attempts.Load() < 8 {
		t.Errorf("only %d attempts in the overload window", attempts.Load())
	}
	echoAll("during overload")

	limCloseAll(held)
	held = nil
	limWaitConns(t, p, 5, 15*time.Second)
	echoAll("after overload")
	for i := range 5 {
		c := limEchoClient(t, d, p)
		if err := limEcho(c, fmt.Sprintf("new %d", i)); err != nil {
			t.Errorf("new client %d after overload: %v", i, err)
		}
	}
	st := p.Stats(t)
	t.Logf("stats after: conns %d accepted %d upgraded %d refused %d", st.Conns, st.Accepted, st.Upgraded, st.Refused)
	if st.Refused == 0 {
		t.Errorf("/stats refused = 0 after EMFILE refusals")
	}
}

func firstBad(as []limAttempt) error {
	for _, a := range as {
		if a.outcome == limHung || a.outcome == limOther {
			return fmt.Errorf("%v after %v: status %d: %v", a.outcome, a.took.Round(time.Millisecond), a.status, a.err)
		}
	}
	return nil
}

// TestLimitsMaxConns: with -max-conns 50 the 51st handshake gets HTTP 503
// with Retry-After, /stats counts the refusal, and a slot freed by a close
// is usable again.
func TestLimitsMaxConns(t *testing.T) {
	bin := pushdtest.Build(t)
	p := pushdtest.Start(t, bin, pushdtest.Options{Args: []string{"-echo", "-max-conns", "50", "-ping-interval", "10m"}})
	d := limDialer(t, "127.0.7.0/24")
	as := limOpen(d, p.WSAddr, 50, 10, 5*time.Second)
	t.Cleanup(func() { limCloseAll(as) })
	if c := limCount(as); c[limUpgraded] != 50 {
		t.Fatalf("first 50: outcomes %v (first error: %v)", c, firstErr(as))
	}
	limWaitConns(t, p, 50, 10*time.Second)

	a := limUpgrade(d, p.WSAddr, 5*time.Second)
	if a.conn != nil {
		a.conn.Close()
	}
	if a.outcome != limRefused {
		t.Fatalf("51st handshake: %v status %d err %v, want HTTP 503", a.outcome, a.status, a.err)
	}
	if ra := a.header.Get("Retry-After"); ra == "" {
		t.Errorf("503 without Retry-After (headers %v)", a.header)
	} else if n, err := strconv.Atoi(ra); err != nil || n < 0 {
		t.Errorf("Retry-After %q is not delay-seconds", ra)
	}
	st := p.Stats(t)
	if st.Refused != 1 || st.Conns != 50 {
		t.Errorf("/stats refused = %d, conns = %d; want 1 and 50", st.Refused, st.Conns)
	}

	as[0].conn.Close()
	as[0].conn = nil
	limWaitConns(t, p, 49, 10*time.Second)
	b := limUpgrade(d, p.WSAddr, 5*time.Second)
	if b.outcome != limUpgraded {
		t.Fatalf("after one close: %v status %d err %v, want upgraded", b.outcome, b.status, b.err)
	}
	b.conn.Close()
}
