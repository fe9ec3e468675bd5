package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pushd/pushd/internal/srcaddr"
)

// The consumers client (bench -client consumers) is the slowconsumers
// scenario's client side and backend: it holds the slow clients (never
// read until told) and the normal ones (read and check every push), and
// publishes through pushd's admin POST /publish, one publisher per channel,
// keeping every normal client within half the byte budget of the newest
// publication so only the slow clients overflow.

// consumerFlags configure the consumers client; the scenario passes them on.
type consumerFlags struct {
	admin      string
	slow       int
	normal     int
	channels   int
	msgSize    int
	total      int64
	maxPending int
	rcvbuf     int
	mss        int
	policy     string // disconnect, drop, conflate
}

func (f *consumerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.admin, "admin", "", "pushd admin host:port (POST /publish)")
	fs.IntVar(&f.slow, "slow", 1000, "clients that never read")
	fs.IntVar(&f.normal, "normal", 1000, "clients that read everything")
	fs.IntVar(&f.channels, "channels", 250, "channels; clients are spread evenly over them")
	fs.IntVar(&f.msgSize, "msg-size", 8<<10, "payload bytes per publication")
	fs.Int64Var(&f.total, "total", 200<<20, "payload bytes published in total")
	fs.IntVar(&f.maxPending, "max-pending", 64<<10, "pushd -max-pending (per-connection byte budget)")
	fs.IntVar(&f.rcvbuf, "slow-rcvbuf", 4096, "SO_RCVBUF of the slow clients (set before connect)")
	fs.IntVar(&f.mss, "slow-mss", 536, "TCP_MAXSEG of the slow clients (set before connect; caps pushd's autotuned sndbuf toward them)")
	fs.StringVar(&f.policy, "policy", "disconnect", "the policy pushd applies to bench:* (what to check on the slow clients)")
}

func (f *consumerFlags) args() []string {
	return []string{"-admin", f.admin, "-slow", itoa(f.slow), "-normal", itoa(f.normal), "-channels", itoa(f.channels),
		"-msg-size", itoa(f.msgSize), "-total", strconv.FormatInt(f.total, 10), "-max-pending", itoa(f.maxPending),
		"-slow-rcvbuf", itoa(f.rcvbuf), "-slow-mss", itoa(f.mss), "-policy", f.policy}
}

// consumersResult is what the consumers client saw.
type consumersResult struct {
	SlowConns      int            `json:"slow_conns"`
	NormalConns    int            `json:"normal_conns"`
	ConnectErrors  map[string]int `json:"connect_errors,omitempty"`
	Published      int            `json:"published"`
	PublishedBytes int64          `json:"published_bytes"`
	PublishSeconds float64        `json:"publish_seconds"`
	NormalComplete int            `json:"normal_complete"` // got every push of their channel, in order
	NormalBytes    int64          `json:"normal_bytes"`
	Errors         []string       `json:"errors,omitempty"` // first few
	SlowOK         int            `json:"slow_ok"`          // slow clients whose outcome matches the policy
	SlowCloseCodes map[string]int `json:"slow_close_codes,omitempty"`
	Gaps           int64          `json:"gaps"`   // drop: gap notices the slow clients read
	Missed         int64          `json:"missed"` // conflate: pushes the slow clients never saw
}

// errList keeps the first few errors of many goroutines.
type errList struct {
	mu   sync.Mutex
	errs []string
}

func (e *errList) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.errs) < 10 {
		e.errs = append(e.errs, fmt.Sprintf(format, args...))
	}
}

func benchChannel(i int) string { return "bench:" + strconv.Itoa(i) }

// pushSeq extracts "seq":N from a push without decoding it; 0 if absent.
func pushSeq(b []byte) uint64 {
	i := bytes.Index(b, []byte(`"seq":`))
	if i < 0 {
		return 0
	}
	var n uint64
	for _, c := range b[i+len(`"seq":`):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}

// dialSmall dials from the next source with IP_BIND_ADDRESS_NO_PORT, the
// given SO_RCVBUF and TCP_MAXSEG set before connect(2) (0: leave as is).
func dialSmall(ctx context.Context, d *srcaddr.Dialer, target string, rcvbuf, mss int, timeout time.Duration) (net.Conn, error) {
	src := d.NextSource()
	nd := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()},
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
				if rcvbuf > 0 {
					serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf))
				}
				if mss > 0 {
					serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss))
				}
			})
			return errors.Join(err, serr)
		}}
	return nd.DialContext(ctx, "tcp", target)
}

// consumer is one client connection and its channel.
type consumer struct {
	c        net.Conn
	br       *bufio.Reader
	ch       int
	progress atomic.Uint64 // normal: last seq read in order
}

func openConsumers(ctx context.Context, cf clientFlags, d *srcaddr.Dialer, f consumerFlags) (slow, normal []*consumer, errs map[string]int) {
	slow, normal = make([]*consumer, f.slow), make([]*consumer, f.normal)
	errs = map[string]int{}
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(cf.concurrency, f.slow+f.normal) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= f.slow+f.normal || ctx.Err() != nil {
					return
				}
				isSlow, j, rcv, mss := i < f.slow, i, f.rcvbuf, f.mss
				if !isSlow {
					j, rcv, mss = i-f.slow, 0, 0
				}
				ch := j % f.channels
				c, err := dialSmall(ctx, d, cf.target, rcv, mss, cf.hsTimeout)
				var br *bufio.Reader
				if err == nil {
					if br, err = handshake(c, cf.target, "/ws?ch="+benchChannel(ch), cf.hsTimeout); err != nil {
						c.Close()
					}
				}
				mu.Lock()
				switch {
				case err != nil:
					errs[reason(err)]++
				case isSlow:
					slow[j] = &consumer{c: c, br: br, ch: ch}
				default:
					normal[j] = &consumer{c: c, br: bufio.NewReaderSize(c, 32<<10), ch: ch}
					if br.Buffered() > 0 {
						errs["bytes after 101"]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return compact(slow), compact(normal), errs
}

func compact(cs []*consumer) []*consumer {
	out := cs[:0]
	for _, c := range cs {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// runConsumersClient: "opened" after connecting, then on {"cmd":"run"}
// publishes and reads ("published"), checks the slow clients against the
// policy and reports "result".
func runConsumersClient(ctx context.Context, cf clientFlags, f consumerFlags, d *srcaddr.Dialer, out *eventWriter) int {
	slow, normal, errs := openConsumers(ctx, cf, d, f)
	defer func() {
		for _, c := range append(slow, normal...) {
			c.c.Close()
		}
	}()
	out.send(clientEvent{Event: "opened", Open: len(slow) + len(normal), Failed: f.slow + f.normal - len(slow) - len(normal), Errors: errs})
	cmds := make(chan clientCmd)
	go readCmds(os.Stdin, cmds)
	select {
	case cmd, ok := <-cmds:
		if !ok || cmd.Cmd != "run" {
			out.send(clientEvent{Event: "bye"})
			return 0
		}
	case <-ctx.Done():
		return 1
	}
	res := &consumersResult{SlowConns: len(slow), NormalConns: len(normal), ConnectErrors: errs, SlowCloseCodes: map[string]int{}}
	el := &errList{}
	perChannel := int(f.total / int64(f.msgSize) / int64(f.channels))
	var normalBytes atomic.Int64
	var complete atomic.Int64
	var readers sync.WaitGroup
	for _, n := range normal {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if readNormal(n, uint64(perChannel), &normalBytes, el) {
				complete.Add(1)
			}
		}()
	}
	byCh := make([][]*consumer, f.channels)
	for _, n := range normal {
		byCh[n.ch] = append(byCh[n.ch], n)
	}
	start := time.Now()
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	window := uint64(max(f.maxPending/f.msgSize/2, 1))
	var published atomic.Int64
	var pubs sync.WaitGroup
	sem := make(chan struct{}, 64) // concurrent publishers
	for ch := range f.channels {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			n, err := publishChannel(ctx, hc, f, ch, perChannel, window, byCh[ch])
			published.Add(int64(n))
			if err != nil {
				el.add("publisher %s: %v", benchChannel(ch), err)
			}
		}()
	}
	pubs.Wait()
	res.Published = int(published.Load())
	res.PublishedBytes = int64(res.Published) * int64(f.msgSize)
	res.PublishSeconds = time.Since(start).Seconds()
	waitGroupCtx(ctx, &readers, 2*time.Minute)
	res.NormalComplete, res.NormalBytes = int(complete.Load()), normalBytes.Load()
	out.send(clientEvent{Event: "published"})
	checkSlowConsumers(slow, f, uint64(perChannel), res, el)
	res.Errors = el.errs
	out.send(clientEvent{Event: "result", Consumers: res})
	for {
		select {
		case _, ok := <-cmds:
			if !ok {
				return 0
			}
		case <-ctx.Done():
			return 0
		}
	}
}

// waitGroupCtx waits for wg, at most d; stragglers are reported by their
// own counts.
func waitGroupCtx(ctx context.Context, wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// readNormal reads pushes of n's channel until seq last, checking order.
func readNormal(n *consumer, last uint64, bytesRead *atomic.Int64, el *errList) bool {
	var buf []byte
	want := []byte(`{"ch":"` + benchChannel(n.ch) + `"`)
	for n.progress.Load() < last {
		_ = n.c.SetReadDeadline(time.Now().Add(60 * time.Second))
		op, p, err := readFrame(n.br, buf)
		if err != nil {
			el.add("normal client of %s: read after seq %d: %v", benchChannel(n.ch), n.progress.Load(), err)
			return false
		}
		buf = p[:0]
		bytesRead.Add(int64(len(p)))
		if op != 0x1 || !bytes.HasPrefix(p, want) {
			el.add("normal client of %s: opcode %d %.80q", benchChannel(n.ch), op, p)
			return false
		}
		if seq := pushSeq(p); seq != n.progress.Load()+1 {
			el.add("normal client of %s: seq %d after %d", benchChannel(n.ch), seq, n.progress.Load())
			return false
		}
		n.progress.Add(1)
	}
	return true
}

// publishChannel publishes n messages on channel ch, keeping the channel's
// normal readers within window messages.
func publishChannel(ctx context.Context, hc *http.Client, f consumerFlags, ch, n int, window uint64, readers []*consumer) (int, error) {
	payload := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz"), f.msgSize/26+1)[:f.msgSize]
	url := "http://" + f.admin + "/publish?ch=" + benchChannel(ch)
	for i := 1; i <= n; i++ {
		for _, r := range readers {
			for r.progress.Load()+window < uint64(i) {
				if ctx.Err() != nil {
					return i - 1, ctx.Err()
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
		copy(payload, fmt.Sprintf("%08d", i))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
		if err != nil {
			return i - 1, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return i - 1, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || pushSeq(b) != uint64(i) {
			return i - 1, fmt.Errorf("#%d: %s %s", i, resp.Status, b)
		}
	}
	return n, nil
}

// checkSlowConsumers lets every slow client read now and checks what it
// finds against the policy.
func checkSlowConsumers(slow []*consumer, f consumerFlags, last uint64, res *consumersResult, el *errList) {
	var mu sync.Mutex
	var ok, gaps, missed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for j, c := range slow {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var good bool
			switch f.policy {
			case "drop":
				var g int64
				good, g = checkDrop(c, last, el, j)
				gaps.Add(g)
			case "conflate":
				var m int64
				good, m = checkConflate(c, last, el, j)
				missed.Add(m)
			default:
				code := closeCode(c)
				mu.Lock()
				res.SlowCloseCodes[code]++
				mu.Unlock()
				good = code == "4001"
			}
			if good {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	res.SlowOK, res.Gaps, res.Missed = int(ok.Load()), gaps.Load(), missed.Load()
}

// closeCode reads until the connection ends and returns the close code
// ("none" if it ended without a close frame).
func closeCode(c *consumer) string {
	var buf []byte
	for {
		_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
		op, p, err := readFrame(c.br, buf)
		if err != nil {
			return "none: " + reason(err)
		}
		buf = p[:0]
		if op == 0x8 {
			if len(p) < 2 {
				return "no code"
			}
			// Answer the close (RFC 6455 §5.5.1) so pushd ends the
			// connection now and counts it, instead of at -close-timeout.
			code := strconv.Itoa(int(binary.BigEndian.Uint16(p)))
			_, _ = c.c.Write(appendMaskedFrame(nil, 0x8, p[:2]))
			return code
		}
	}
}

// checkDrop: pushes and gap notices name every seq 1..last exactly once,
// in order, with at least one gap notice.
func checkDrop(c *consumer, last uint64, el *errList, j int) (bool, int64) {
	var buf []byte
	var next uint64 = 1
	var gaps int64
	for next <= last {
		_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, p, err := readFrame(c.br, buf)
		if err != nil {
			el.add("slow client %d: read at seq %d of %d: %v", j, next, last, err)
			return false, gaps
		}
		buf = p[:0]
		if seq := pushSeq(p); seq != 0 {
			if seq != next {
				el.add("slow client %d: push seq %d, want %d", j, seq, next)
				return false, gaps
			}
			next++
			continue
		}
		var m struct {
			Op       string
			From, To uint64
		}
		if json.Unmarshal(p, &m) != nil || m.Op != "gap" || m.From != next || m.To < m.From {
			el.add("slow client %d: at seq %d got %.100q", j, next, p)
			return false, gaps
		}
		gaps++
		next = m.To + 1
	}
	if gaps == 0 {
		el.add("slow client %d: no gap notice: it was never slow", j)
	}
	return gaps > 0, gaps
}

// checkConflate: increasing seqs ending with last, fewer than last pushes.
func checkConflate(c *consumer, last uint64, el *errList, j int) (bool, int64) {
	var buf []byte
	var prev uint64
	n := 0
	for prev < last {
		_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, p, err := readFrame(c.br, buf)
		if err != nil {
			el.add("slow client %d: read after seq %d of %d: %v", j, prev, last, err)
			return false, int64(last) - int64(n)
		}
		buf = p[:0]
		seq := pushSeq(p)
		if seq <= prev {
			el.add("slow client %d: after seq %d got %.100q", j, prev, p)
			return false, int64(last) - int64(n)
		}
		prev = seq
		n++
	}
	if uint64(n) >= last {
		el.add("slow client %d: got all %d pushes: it was never slow", j, n)
		return false, 0
	}
	return true, int64(last) - int64(n)
}
