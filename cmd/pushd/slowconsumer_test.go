package main_test

// Slow consumers at scale through the built binary (issue 4, acceptance 5,
// scaled down for CI; `go -C bench run . slowconsumers` runs the full 1,000 +
// 1,000 clients and 200 MB): clients that never read share channels with
// clients that read everything. Invariants, for each policy:
//
//   - pushd's heap (/stats heap_inuse, polled throughout) stays within
//     -max-pending × slow clients + 64 MiB;
//   - every normal client receives every push of its channel, in order;
//   - disconnect (default): every slow client is closed with 4001 and
//     /stats counts slow_disconnects and closed_by_code["4001"];
//   - drop: a slow client that starts reading finds pushes and gap notices
//     that name every seq exactly once, in order, up to the last; /stats
//     counts dropped and gap_notices;
//   - conflate: a slow client finds increasing seqs ending with the last
//     one published; /stats counts conflated.
//
// The slow clients set SO_RCVBUF to 4 KiB and TCP_MAXSEG to 536 bytes
// before connecting: a loopback client that never reads otherwise parks
// megabytes per socket in kernel buffers (its autotuned rcvbuf, and pushd's
// sndbuf, which the kernel grows to ~4 MB from loopback's 64 KiB MSS),
// which hides pushd's own queue bound behind the kernel's and costs the
// host gigabytes. With both set, ~100 KB per slow client sit in the kernel
// and pushd's per-connection budget is what must hold the rest.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/internal/pushdtest"
)

// scSize is one run's shape.
type scSize struct {
	slow, normal, channels int
	msgSize                int   // payload bytes per message
	total                  int64 // payload bytes published in total
	maxPending             int   // pushd -max-pending
}

func TestSlowConsumersAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("slow-consumer scale test: skipped with -short")
	}
	bin := pushdtest.Build(t)
	size := scSize{slow: 200, normal: 200, channels: 20, msgSize: 8 << 10, total: 20 << 20, maxPending: 128 << 10}
	small := size
	small.total = 10 << 20
	for _, tc := range []struct {
		policy string // -policy value; "" = the default (disconnect)
		size   scSize
	}{
		{"", size},
		{"bench*=drop", small},
		{"bench*=conflate", small},
	} {
		name := "disconnect"
		if tc.policy != "" {
			name = tc.policy[len("bench*="):]
		}
		t.Run(name, func(t *testing.T) { scRun(t, bin, tc.policy, tc.size) })
	}
}

// scPush is the part of a push or gap notice the test reads.
type scPush struct {
	Op   string `json:"op"`
	Ch   string `json:"ch"`
	Seq  uint64 `json:"seq"`
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// scSeq extracts "seq":N from a push without decoding the payload; 0 if
// absent (gap notices and replies have none).
func scSeq(b []byte) uint64 {
	i := bytes.Index(b, []byte(`"seq":`))
	if i < 0 {
		return 0
	}
	b = b[i+len(`"seq":`):]
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n, _ := strconv.ParseUint(string(b[:j]), 10, 64)
	return n
}

func scChannel(i int) string { return "bench:" + strconv.Itoa(i) }

// scSlowMSS is the MSS a slow client announces. pushd's kernel sizes the
// socket's send buffer from the congestion window in segments times the
// segment size; loopback's 64 KiB MSS lets it autotune to ~4 MB per socket
// (measured: 2.8 MB accepted by write(2) toward a peer that never reads),
// a 536-byte MSS keeps it near 90 KB.
const scSlowMSS = 536

// scDial upgrades to /ws?ch=ch; with rcvbuf > 0 the socket's receive
// buffer and MSS are set before connect(2), so the advertised window and
// pushd's kernel send buffer toward it stay small.
func scDial(ctx context.Context, addr, ch string, rcvbuf int) (*websocket.Conn, error) {
	nd := &net.Dialer{Timeout: 10 * time.Second}
	if rcvbuf > 0 {
		nd.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = errors.Join(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf),
					syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, scSlowMSS))
			}); err != nil {
				return err
			}
			return serr
		}
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: nd.DialContext, ReadBufferSize: 16 << 10}
	c, _, err := d.DialContext(ctx, "ws://"+addr+"/ws?ch="+ch, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", ch, err)
	}
	return c, nil
}

// scNormal reads every push of one channel in order; progress is the last
// seq read (for the publishers' flow control).
type scNormal struct {
	c        *websocket.Conn
	ch       int
	progress atomic.Uint64
	err      atomic.Pointer[string]
}

func (n *scNormal) fail(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	n.err.CompareAndSwap(nil, &s)
}

// read consumes pushes until it has seen seq last or fails.
func (n *scNormal) read(last uint64) {
	for n.progress.Load() < last {
		_ = n.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, b, err := n.c.ReadMessage()
		if err != nil {
			n.fail("normal client of %s: read after seq %d: %v", scChannel(n.ch), n.progress.Load(), err)
			return
		}
		seq := scSeq(b)
		if seq == 0 || !bytes.Contains(b[:min(len(b), 64)], []byte(`"ch":"`+scChannel(n.ch)+`"`)) {
			n.fail("normal client of %s: not a push of its channel: %.80s", scChannel(n.ch), b)
			return
		}
		if want := n.progress.Load() + 1; seq != want {
			n.fail("normal client of %s: seq %d, want %d", scChannel(n.ch), seq, want)
			return
		}
		n.progress.Store(seq)
	}
}

func scRun(t *testing.T, bin, policy string, sz scSize) {
	// -close-timeout 30s: pushd queues the 4001 close frame behind what the
	// slow client's socket already holds and closes TCP after the timeout
	// even if the frame never went out (a peer that never reads cannot get
	// it). The slow clients read only after publishing, which under -race
	// takes longer than the 2 s default; with 30 s they find the frame.
	// -write-timeout 60s for the same reason: a kicked slow client's
	// socket stays full until it reads, and on a loaded machine
	// publishing outlasted the 10 s default (TCP closed, 1006).
	args := []string{"-max-pending", strconv.Itoa(sz.maxPending), "-ping-interval", "10m", "-history-size", "0", "-close-timeout", "30s", "-write-timeout", "60s"}
	if policy != "" {
		args = append(args, "-policy", policy)
	}
	p := pushdtest.Start(t, bin, pushdtest.Options{Args: args})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	// Slow clients (4 KiB SO_RCVBUF, never read) and normal ones, spread
	// evenly over the channels.
	slow := make([]*websocket.Conn, sz.slow)
	normal := make([]*scNormal, sz.normal)
	var dialErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range sz.slow + sz.normal {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			isSlow := i < sz.slow
			j := i
			rcv := 4096
			if !isSlow {
				j, rcv = i-sz.slow, 0
			}
			c, err := scDial(ctx, p.WSAddr, scChannel(j%sz.channels), rcv)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				dialErr = errors.Join(dialErr, err)
				return
			}
			if isSlow {
				slow[j] = c
			} else {
				normal[j] = &scNormal{c: c, ch: j % sz.channels}
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range slow {
			if c != nil {
				c.Close()
			}
		}
		for _, n := range normal {
			if n != nil {
				n.c.Close()
			}
		}
	})
	if dialErr != nil {
		t.Fatal(dialErr)
	}
	scWaitStat(t, p, "subscriptions", func(v float64) bool { return v == float64(sz.slow+sz.normal) })

	// Normal readers: every channel gets perChannel messages, seq 1..perChannel.
	perChannel := int(sz.total / int64(sz.msgSize) / int64(sz.channels))
	lastSeq := make([]atomic.Uint64, sz.channels)
	var readers sync.WaitGroup
	for _, n := range normal {
		readers.Add(1)
		go func() {
			defer readers.Done()
			n.read(uint64(perChannel))
		}()
	}

	// Heap sampler: /stats heap_inuse every 20 ms until the end.
	var maxHeap atomic.Uint64
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for {
			if st, err := p.FetchStats(ctx); err == nil && st.HeapInuse > maxHeap.Load() {
				maxHeap.Store(st.HeapInuse)
			}
			select {
			case <-stopSampler:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	// Publishers, one per channel (per-channel order is the publish order).
	// Flow control keeps every normal client of the channel within half
	// the byte budget, so only the clients that never read overflow.
	window := uint64(max(sz.maxPending/sz.msgSize/2, 1))
	byCh := make([][]*scNormal, sz.channels)
	for _, n := range normal {
		byCh[n.ch] = append(byCh[n.ch], n)
	}
	start := time.Now()
	pubErr := make(chan error, sz.channels)
	var pubs sync.WaitGroup
	for ch := range sz.channels {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			pubErr <- scPublishChannel(ctx, p, ch, perChannel, sz.msgSize, window, byCh[ch], &lastSeq[ch])
		}()
	}
	pubs.Wait()
	close(pubErr)
	for err := range pubErr {
		if err != nil {
			t.Fatal(err)
		}
	}
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()
	select {
	case <-readersDone:
	case <-ctx.Done():
		t.Fatalf("normal clients still reading at the deadline")
	}
	published := time.Since(start)
	for _, n := range normal {
		if e := n.err.Load(); e != nil {
			t.Fatal(*e)
		}
		if got, want := n.progress.Load(), lastSeq[n.ch].Load(); got != want {
			t.Fatalf("normal client of %s stopped at seq %d of %d", scChannel(n.ch), got, want)
		}
	}

	// Policy outcome on the slow clients (this also lets pushd's queues
	// drain before the last heap samples).
	switch policy {
	case "":
		scCheckDisconnect(t, p, slow)
	case "bench*=drop":
		scCheckDrop(t, p, slow, sz.channels, lastSeq)
	case "bench*=conflate":
		scCheckConflate(t, p, slow, sz.channels, lastSeq)
	}
	close(stopSampler)
	<-samplerDone
	bound := uint64(sz.maxPending)*uint64(sz.slow) + 64<<20
	st := stats(t, p)
	t.Logf("policy %q: %d slow + %d normal clients on %d channels, %d MiB published in %v; max heap_inuse %.1f MiB (bound %.1f MiB); "+
		"slow_disconnects %v dropped %v gap_notices %v conflated %v closed_by_code %v",
		policy, sz.slow, sz.normal, sz.channels, sz.total>>20, published.Round(time.Millisecond),
		float64(maxHeap.Load())/(1<<20), float64(bound)/(1<<20),
		st["slow_disconnects"], st["dropped"], st["gap_notices"], st["conflated"], st["closed_by_code"])
	if uint64(sz.total) < bound {
		// Frames are shared by every subscriber of a channel, so even an
		// unbounded queue holds at most what was published: at this scale
		// the heap bound is a necessary condition only; the policy checks
		// above are what catch a queue that ignores -max-pending.
		t.Logf("published %d MiB < heap bound %d MiB: the heap check cannot tell a bounded queue from an unbounded one here (bench slowconsumers can)",
			sz.total>>20, bound>>20)
	}
	if maxHeap.Load() == 0 {
		t.Fatal("no heap sample")
	}
	if maxHeap.Load() > bound {
		t.Errorf("heap_inuse reached %d bytes > -max-pending × slow + 64 MiB = %d", maxHeap.Load(), bound)
	}
	if policy != "" && st["slow_disconnects"].(float64) != 0 {
		t.Errorf("policy %s: slow_disconnects = %v, want 0", policy, st["slow_disconnects"])
	}
}

// scPublishChannel publishes n messages of size bytes on channel ch,
// keeping the readers within window messages, and records the last seq.
func scPublishChannel(ctx context.Context, p *pushdtest.Proc, ch, n, size int, window uint64, readers []*scNormal, last *atomic.Uint64) error {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	url := p.AdminURL("/publish?ch=" + scChannel(ch))
	for i := 1; i <= n; i++ {
		for _, r := range readers {
			for r.progress.Load()+window < uint64(i) {
				if r.err.Load() != nil {
					return fmt.Errorf("%s", *r.err.Load())
				}
				if ctx.Err() != nil {
					return fmt.Errorf("publisher of %s: readers at %d, publishing %d: %w", scChannel(ch), r.progress.Load(), i, ctx.Err())
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
		copy(payload, fmt.Sprintf("%08d", i))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("publish %s #%d: %w", scChannel(ch), i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("publish %s #%d: %s %s", scChannel(ch), i, resp.Status, b)
		}
		var r struct{ Seq uint64 }
		if err := json.Unmarshal(b, &r); err != nil || r.Seq != uint64(i) {
			return fmt.Errorf("publish %s #%d: reply %s", scChannel(ch), i, b)
		}
		last.Store(r.Seq)
	}
	return nil
}

func scWaitStat(t *testing.T, p *pushdtest.Proc, key string, ok func(float64) bool) {
	t.Helper()
	waitStatWithin(t, p, key, 20*time.Second, ok)
}

// scCheckDisconnect: every slow client finds, after whatever was queued
// for it, a close frame with 4001; /stats counts all of them.
func scCheckDisconnect(t *testing.T, p *pushdtest.Proc, slow []*websocket.Conn) {
	t.Helper()
	n := float64(len(slow))
	scWaitStat(t, p, "slow_disconnects", func(v float64) bool { return v == n })
	var wrong atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup
	for _, c := range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, _, err := c.ReadMessage(); err != nil {
					var ce *websocket.CloseError
					if !errors.As(err, &ce) || ce.Code != 4001 {
						wrong.Add(1)
						s := err.Error()
						firstErr.CompareAndSwap(nil, &s)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	if w := wrong.Load(); w > 0 {
		t.Errorf("%d of %d slow clients did not get a 4001 close; first: %s", w, len(slow), *firstErr.Load())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, _ := stats(t, p)["closed_by_code"].(map[string]any)["4001"].(float64)
		if c == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("closed_by_code[4001] = %v, want %v", c, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scCheckDrop: each slow client now reads; pushes and gap notices together
// name every seq 1..last exactly once, in order, with at least one gap.
func scCheckDrop(t *testing.T, p *pushdtest.Proc, slow []*websocket.Conn, channels int, last []atomic.Uint64) {
	t.Helper()
	var gaps atomic.Int64
	errc := make(chan error, len(slow))
	var wg sync.WaitGroup
	for j, c := range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			end := last[j%channels].Load()
			var next uint64 = 1
			own := 0
			for next <= end {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, b, err := c.ReadMessage()
				if err != nil {
					errc <- fmt.Errorf("slow client %d: read at seq %d of %d: %w", j, next, end, err)
					return
				}
				var m scPush
				if seq := scSeq(b); seq != 0 {
					m.Seq = seq
				} else if err := json.Unmarshal(b, &m); err != nil {
					errc <- fmt.Errorf("slow client %d: %.80s: %w", j, b, err)
					return
				}
				switch {
				case m.Op == "gap" && m.From == next && m.To >= m.From:
					own++
					next = m.To + 1
				case m.Op == "" && m.Seq == next:
					next++
				default:
					errc <- fmt.Errorf("slow client %d: at seq %d got %.100s", j, next, b)
					return
				}
			}
			if own == 0 {
				errc <- fmt.Errorf("slow client %d: no gap notice: it was never slow", j)
			}
			gaps.Add(int64(own))
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	st := stats(t, p)
	if st["dropped"].(float64) < 1 || st["gap_notices"].(float64) != float64(gaps.Load()) {
		t.Errorf("dropped %v gap_notices %v; the slow clients saw %d gap notices", st["dropped"], st["gap_notices"], gaps.Load())
	}
}

// scCheckConflate: each slow client now reads increasing seqs ending with
// the last one published on its channel, fewer than were published.
func scCheckConflate(t *testing.T, p *pushdtest.Proc, slow []*websocket.Conn, channels int, last []atomic.Uint64) {
	t.Helper()
	var missed atomic.Int64
	errc := make(chan error, len(slow))
	var wg sync.WaitGroup
	for j, c := range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			end := last[j%channels].Load()
			var prev uint64
			n := 0
			for prev < end {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, b, err := c.ReadMessage()
				if err != nil {
					errc <- fmt.Errorf("slow client %d: read after seq %d of %d: %w", j, prev, end, err)
					return
				}
				seq := scSeq(b)
				if seq <= prev {
					errc <- fmt.Errorf("slow client %d: after seq %d got %.100s", j, prev, b)
					return
				}
				prev = seq
				n++
			}
			if uint64(n) >= end {
				errc <- fmt.Errorf("slow client %d: got all %d pushes: it was never slow", j, n)
			}
			missed.Add(int64(end) - int64(n))
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if c := stats(t, p)["conflated"].(float64); c < float64(missed.Load()) {
		t.Errorf("conflated = %v, the slow clients missed %d pushes", c, missed.Load())
	}
}
