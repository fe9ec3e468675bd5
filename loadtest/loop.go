package main

import (
	"bytes"
	"container/heap"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// connState is where a connection is in its life.
type connState uint8

const (
	stWaiting     connState = iota // not started yet, or waiting to reconnect
	stConnecting                   // non-blocking connect(2) in progress
	stHandshake                    // upgrade request sent, waiting for 101
	stSubscribing                  // 101 seen, ping sent: the pong proves the URL subscriptions live
	stOpen                         // subscribed, receiving pushes
	stDead                         // gave up (attempts exhausted or run stopping)
	stTLS                          // wss: TLS handshake on its goroutine (tls.go)
)

// conn is everything this client keeps per connection: no goroutine, no
// buffer (the loop's read buffer is shared; pend holds only the tail of a
// frame split across reads, usually nil). Keep it small: it is the
// user-space cost per held connection (see Report.ConnStructBytes).
type conn struct {
	pend    []byte   // partial response head or frame, nil when none
	tls     *tlsConn // wss only (tls.go)
	phaseNs int64    // CLOCK_MONOTONIC ns when the current phase began
	fd      int32
	gid     uint32 // global connection index: channel user:<gid>
	lastU   uint32 // last personal sequence number seen
	lastG   uint32 // last group sequence number seen
	hintMs  uint32 // server's reconnect hint (after_ms), 0 if none
	state   connState
	attempt uint8 // consecutive failed attempts
	wasOpen bool  // reached stOpen at least once (a later drop is a reconnect)
	meas    bool  // open when the measured window began
}

// retry is a scheduled (re)connect.
type retry struct {
	at int64
	i  int32
}

type retryHeap []retry

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(a, b int) bool { return h[a].at < h[b].at }
func (h retryHeap) Swap(a, b int)      { h[a], h[b] = h[b], h[a] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retry)) }
func (h *retryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// loopStats is owned by the loop goroutine until it has stopped.
type loopStats struct {
	connect, subscribe, latency, groupLatency *hdrhistogram.Histogram
	errors                                    map[string]uint64
	closeCodes                                map[string]uint64
	uniqueU, uniqueG, dups, gaps, unmeasured  uint64
	reconnects                                uint64
	tls                                       map[string]uint64 // wss: handshakes by version, "resumed"
}

// newHist returns a latency histogram in microseconds, 1 µs to 10 min, 3
// significant digits.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 600_000_000, 3) }

// loop is one event loop: one epoll instance, one locked OS thread, a
// slice of connections. Only its goroutine touches conns and stats; the
// atomics are what other goroutines read (progress) or write (requests).
type loop struct {
	cfg      *workerConfig
	clock    monoClock
	epfd     int
	conns    []conn
	byFd     []int32 // fd → index in conns, -1 if none
	next     int     // next never-started connection
	nextAt   int64   // when it is due (open-model arrivals)
	rate     float64 // connections per second for this loop
	inflight int
	retries  retryHeap
	rng      *rand.Rand
	buf      []byte
	raw      []byte      // wss: ciphertext read buffer
	tlsCfg   *tls.Config // wss targets: the loop's client config (session cache)
	tlsWG    sync.WaitGroup
	wbuf     []byte
	ping     []byte
	stats    loopStats

	stop       atomic.Bool
	measureReq atomic.Bool
	measuring  bool
	openNow    atomic.Int64
	dead       atomic.Int64
	started    atomic.Int64
	received   atomic.Int64
	inflightA  atomic.Int64
	measured   atomic.Int64
	measDone   atomic.Bool // beginMeasure ran
}

func newLoop(cfg *workerConfig, clock monoClock, id int, gids []uint32, rate float64) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	l := &loop{
		cfg: cfg, clock: clock, epfd: epfd, rate: rate,
		conns: make([]conn, len(gids)),
		rng:   rand.New(rand.NewPCG(cfg.Seed, uint64(id)+uint64(cfg.Lo)<<20)),
		buf:   make([]byte, 2*maxFrame+64<<10),
		ping:  maskedFrame(nil, opText, []byte(`{"op":"ping"}`)),
		stats: loopStats{
			connect: newHist(), subscribe: newHist(), latency: newHist(), groupLatency: newHist(),
			errors: map[string]uint64{}, closeCodes: map[string]uint64{}, tls: map[string]uint64{},
		},
	}
	for _, t := range cfg.Targets {
		if t.TLS && l.tlsCfg == nil {
			st := cfg.staging
			if st == nil {
				st = &stagingOptions{}
			}
			l.tlsCfg = st.clientTLS(t.ServerName)
			l.raw = make([]byte, 32<<10)
		}
	}
	for i, g := range gids {
		l.conns[i] = conn{fd: -1, gid: g}
	}
	return l, nil
}

// run is the loop goroutine's body. It returns after stop is set; the
// sockets stay open until closeAll.
func (l *loop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, 1024)
	now := l.clock.now()
	l.nextAt = now
	nextScan := now + int64(100*time.Millisecond)
	for !l.stop.Load() {
		now = l.clock.now()
		l.startDue(now)
		l.retryDue(now)
		if l.measureReq.Load() && !l.measuring {
			l.beginMeasure()
		}
		k, err := unix.EpollWait(l.epfd, events, l.waitMs(now))
		if err != nil && !errors.Is(err, unix.EINTR) {
			l.stats.errors["epoll_wait"]++
			break
		}
		now = l.clock.now()
		for _, ev := range events[:max(k, 0)] {
			l.event(int(ev.Fd), ev.Events, now)
		}
		if now >= nextScan {
			l.scanTimeouts(now)
			nextScan = now + int64(100*time.Millisecond)
		}
	}
}

// closeAll closes every socket and the epoll instance of a stopped loop.
// It is separate from run so that a worker reports first: closing tens of
// thousands of sockets on a saturated host takes longer than the parent
// should wait for a result.
func (l *loop) closeAll() {
	l.closeTLS()
	for i := range l.conns {
		if l.conns[i].fd >= 0 {
			unix.Close(int(l.conns[i].fd))
			l.conns[i].fd = -1
		}
	}
	unix.Close(l.epfd)
}

// waitMs is the epoll_wait timeout: until the next arrival or retry is
// due (at least 1 ms), at most 50 ms (the stop and measure requests are
// polled at that period). A loop at its in-flight cap waits for events.
// Waking every millisecond instead costs a hundred loops a core.
func (l *loop) waitMs(now int64) int {
	due := now + int64(50*time.Millisecond)
	if l.next < len(l.conns) && l.inflight < l.cfg.MaxInflight {
		due = min(due, l.nextAt)
	}
	if len(l.retries) > 0 && l.inflight < l.cfg.MaxInflight {
		due = min(due, l.retries[0].at)
	}
	return int(max((due-now+int64(time.Millisecond)-1)/int64(time.Millisecond), 1))
}

// beginMeasure marks the open connections as measured: only their pushes
// count towards delivery, and the expected counts are computed for them.
func (l *loop) beginMeasure() {
	l.measuring = true
	// The ramp is over: connections not started yet never will be.
	l.next = len(l.conns)
	var n int64
	for i := range l.conns {
		c := &l.conns[i]
		if c.state == stOpen {
			c.meas = true
			c.lastU, c.lastG = 0, 0
			n++
		}
	}
	l.measured.Store(n)
	l.measDone.Store(true)
}

// startDue starts never-started connections whose arrival time has come,
// within the in-flight handshake cap. Arrivals are a Poisson process at
// l.rate (open model: exponential gaps give each connection its jitter).
func (l *loop) startDue(now int64) {
	for l.next < len(l.conns) && l.nextAt <= now && l.inflight < l.cfg.MaxInflight {
		i := l.next
		l.next++
		l.started.Add(1)
		l.dial(i, now)
		if l.rate > 0 {
			l.nextAt += int64(l.rng.ExpFloat64() / l.rate * 1e9)
		}
	}
}

func (l *loop) retryDue(now int64) {
	for len(l.retries) > 0 && l.retries[0].at <= now && l.inflight < l.cfg.MaxInflight {
		r := heap.Pop(&l.retries).(retry)
		l.dial(int(r.i), now)
	}
}

func (l *loop) setPhase(c *conn, s connState, now int64) {
	inflight := func(s connState) bool {
		return s == stConnecting || s == stTLS || s == stHandshake || s == stSubscribing
	}
	if inflight(c.state) && !inflight(s) {
		l.inflight--
	} else if !inflight(c.state) && inflight(s) {
		l.inflight++
	}
	l.inflightA.Store(int64(l.inflight))
	c.state = s
	c.phaseNs = now
}

// dial opens a non-blocking socket for conns[i] from its source address
// (IP_BIND_ADDRESS_NO_PORT: the port is picked at connect(2), so only the
// 4-tuple must be unique) and starts connect(2).
func (l *loop) dial(i int, now int64) {
	c := &l.conns[i]
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.fail(i, errClass(err), now)
		return
	}
	if len(l.cfg.Sources) > 0 {
		src := l.cfg.Sources[int(c.gid)%len(l.cfg.Sources)]
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Addr: src})
		}
		if err != nil {
			unix.Close(fd)
			l.fail(i, "bind_"+errClass(err), now)
			return
		}
	}
	t := &l.cfg.Targets[int(c.gid)%len(l.cfg.Targets)]
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: t.Port, Addr: t.Addr}); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		l.fail(i, errClass(err), now)
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		l.fail(i, "epoll_ctl_"+errClass(err), now)
		return
	}
	for fd >= len(l.byFd) {
		l.byFd = append(l.byFd, -1)
	}
	l.byFd[fd] = int32(i)
	c.fd = int32(fd)
	l.setPhase(c, stConnecting, now)
}

// fail records a failed attempt of conns[i] (not connected) and schedules
// another one with full-jitter exponential backoff, or gives up.
func (l *loop) fail(i int, class string, now int64) {
	c := &l.conns[i]
	l.stats.errors[class]++
	l.closeFd(c)
	l.setPhase(c, stWaiting, now)
	c.attempt++
	if int(c.attempt) > l.cfg.MaxAttempts || l.stop.Load() {
		c.state = stDead
		l.dead.Add(1)
		return
	}
	l.schedule(i, now, 0)
}

// schedule queues a reconnect of conns[i]: after the server's hint when it
// gave one (plus up to 10% jitter), else after a full-jitter backoff of
// up to 100 ms × 2^attempt, capped at 5 s.
func (l *loop) schedule(i int, now int64, hintMs uint32) {
	c := &l.conns[i]
	var d time.Duration
	if hintMs > 0 {
		h := time.Duration(hintMs) * time.Millisecond
		d = h + time.Duration(l.rng.Int64N(int64(h)/10+1))
	} else {
		ceil := min(100*time.Millisecond<<min(c.attempt, 6), 5*time.Second)
		d = time.Duration(l.rng.Int64N(int64(ceil) + 1))
	}
	heap.Push(&l.retries, retry{at: now + int64(d), i: int32(i)})
}

func (l *loop) closeFd(c *conn) {
	if c.fd >= 0 {
		l.byFd[c.fd] = -1
		unix.Close(int(c.fd))
		c.fd = -1
	}
	c.pend = nil
	c.tls = nil
}

// drop ends an established (or establishing) connection for class and
// schedules a reconnect. code is the close code, 0 if none was received.
func (l *loop) drop(i int, class string, now int64) {
	c := &l.conns[i]
	if c.state != stOpen {
		l.fail(i, class, now)
		return
	}
	l.stats.errors[class]++
	l.openNow.Add(-1)
	l.closeFd(c)
	l.setPhase(c, stWaiting, now)
	c.attempt = 0
	if l.stop.Load() {
		c.state = stDead
		return
	}
	l.stats.reconnects++
	hint := c.hintMs
	c.hintMs = 0
	l.schedule(i, now, hint)
}

func (l *loop) event(fd int, evs uint32, now int64) {
	if fd >= len(l.byFd) || l.byFd[fd] < 0 {
		return
	}
	i := int(l.byFd[fd])
	c := &l.conns[i]
	if c.state == stTLS {
		l.tlsReady(i, now)
		return
	}
	if c.state == stConnecting {
		if evs&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		if soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soerr != 0 {
			if err == nil {
				err = syscall.Errno(soerr)
			}
			l.fail(i, errClass(err), now)
			return
		}
		if l.cfg.Targets[int(c.gid)%len(l.cfg.Targets)].TLS {
			l.startTLS(i, now)
			return
		}
		l.wbuf = l.upgrade(l.wbuf[:0], c)
		if !l.write(i, l.wbuf, now) {
			return
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
		c.state = stHandshake // still in flight: phase time keeps the connect start
		return
	}
	l.read(i, now)
}

// upgrade appends conns[c]'s upgrade request: its target's path with the
// personal (and group) channel subscribed in the URL.
func (l *loop) upgrade(dst []byte, c *conn) []byte {
	t := &l.cfg.Targets[int(c.gid)%len(l.cfg.Targets)]
	var p [256]byte
	path := append(p[:0], t.Path...)
	if bytes.IndexByte(path, '?') >= 0 {
		path = append(path, '&')
	} else {
		path = append(path, '?')
	}
	path = append(path, "ch="...)
	if !l.cfg.NoPersonal {
		path = append(path, l.cfg.Prefix...)
		path = append(path, "u:"...)
		path = strconv.AppendUint(path, uint64(c.gid), 10)
	}
	if l.cfg.Groups > 0 {
		if !l.cfg.NoPersonal {
			path = append(path, ',')
		}
		path = append(path, l.cfg.Prefix...)
		path = append(path, "g:"...)
		path = strconv.AppendUint(path, uint64(c.gid)%uint64(l.cfg.Groups), 10)
	}
	if s := l.cfg.staging; s != nil && s.anyAuth {
		path = append(path, "&token="...)
		path = s.appendToken(path, c.gid, l.cfg.Prefix)
	}
	var kb [24]byte
	key := wsKey(kb[:0], l.cfg.Seed, c.gid, c.attempt)
	return upgradeRequest(dst, t.Host, unsafe.String(unsafe.SliceData(path), len(path)), key)
}

// write sends b whole on conns[i]; a short write or error drops it (the
// frames sent are tiny: a full socket buffer means the peer is stuck).
func (l *loop) write(i int, b []byte, now int64) bool {
	var n int
	var err error
	if c := &l.conns[i]; c.tls != nil {
		n, err = l.writeTLS(c, b)
	} else {
		n, err = unix.Write(int(c.fd), b)
	}
	if err != nil || n != len(b) {
		class := "short_write"
		if err != nil {
			class = errClass(err)
		}
		l.drop(i, class, now)
		return false
	}
	return true
}

// read reads what conns[i] has (one read(2) per readiness event;
// level-triggered epoll reports the rest) and processes it.
func (l *loop) read(i int, now int64) {
	c := &l.conns[i]
	off := copy(l.buf, c.pend)
	var n int
	var err error
	if c.tls != nil {
		n, err = l.readTLS(c, l.buf[off:min(len(l.buf), off+64<<10)])
		if err == nil && n == 0 {
			return // a partial record: crypto/tls keeps it
		}
	} else {
		n, err = unix.Read(int(c.fd), l.buf[off:min(len(l.buf), off+64<<10)])
	}
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return
	}
	if err != nil || n == 0 {
		class := "eof"
		switch {
		case errors.Is(err, errTLS):
			class = "tls_record"
		case errors.Is(err, errEOF):
			err = nil
		}
		if err != nil && class == "eof" {
			class = errClass(err)
		}
		if c.state == stHandshake {
			class = "handshake_" + class
		}
		l.drop(i, class, now)
		return
	}
	data := l.buf[:off+n]
	used, alive := l.process(i, data, now)
	if !alive {
		return
	}
	if rest := data[used:]; len(rest) > 0 {
		c.pend = append(c.pend[:0], rest...)
	} else {
		c.pend = nil
	}
}

// process consumes the response head (in stHandshake) and whole frames
// from data. It returns the bytes used and whether the connection lives.
func (l *loop) process(i int, data []byte, now int64) (int, bool) {
	c := &l.conns[i]
	off := 0
	if c.state == stHandshake {
		hn, status, accept := parseResponse(data)
		if hn == 0 {
			if len(data) > 16<<10 {
				l.drop(i, "handshake_head_too_big", now)
				return 0, false
			}
			return 0, true
		}
		if status != 101 {
			l.drop(i, "handshake_status_"+strconv.Itoa(status), now)
			return 0, false
		}
		var kb [24]byte
		var ab [28]byte
		if !bytes.Equal(accept, wsAccept(ab[:0], wsKey(kb[:0], l.cfg.Seed, c.gid, c.attempt))) {
			l.drop(i, "handshake_bad_accept", now)
			return 0, false
		}
		l.stats.connect.RecordValue(max((now-c.phaseNs)/1000, 0))
		if !l.write(i, l.ping, now) {
			return 0, false
		}
		c.state = stSubscribing
		c.phaseNs = now
		off = hn
	}
	for off < len(data) {
		f, n, ok := parseFrame(data[off:])
		if !ok {
			l.drop(i, "bad_frame", now)
			return 0, false
		}
		if n == 0 {
			break
		}
		off += n
		switch f.op {
		case opText, opBinary:
			if !f.fin {
				l.stats.errors["fragmented_message"]++
				continue
			}
			if class := l.message(c, f.payload, now); class != "" {
				l.fail(i, class, now)
				return 0, false
			}
		case opPing:
			if len(f.payload) <= 125 {
				l.wbuf = maskedFrame(l.wbuf[:0], opPong, f.payload)
				if !l.write(i, l.wbuf, now) {
					return 0, false
				}
			}
		case opClose:
			code := 1005
			if len(f.payload) >= 2 {
				code = int(binary.BigEndian.Uint16(f.payload))
			}
			l.stats.closeCodes[strconv.Itoa(code)]++
			l.drop(i, "close_"+strconv.Itoa(code), now)
			return 0, false
		}
	}
	return off, true
}

// message handles one text message: a protocol reply or a push. A
// non-empty result is the error class of a failed subscription attempt:
// the caller ends the attempt.
func (l *loop) message(c *conn, p []byte, now int64) string {
	if bytes.HasPrefix(p, []byte(`{"op":`)) {
		switch {
		case bytes.HasPrefix(p, []byte(`{"op":"pong"`)):
			if c.state == stSubscribing {
				l.stats.subscribe.RecordValue(max((now-c.phaseNs)/1000, 0))
				l.setPhase(c, stOpen, now)
				c.attempt = 0
				c.wasOpen = true
				l.openNow.Add(1)
			}
		case bytes.HasPrefix(p, []byte(`{"op":"reconnect"`)):
			if ms, ok := jsonInt(p, `"after_ms":`); ok {
				c.hintMs = uint32(min(ms, 600_000))
			}
			l.stats.errors["reconnect_hint"]++
		case bytes.HasPrefix(p, []byte(`{"op":"gap"`)):
			l.stats.errors["server_gap_notice"]++
		case bytes.HasPrefix(p, []byte(`{"op":"err"`)):
			code, _ := jsonInt(p, `"code":`)
			if c.state == stSubscribing {
				// A URL subscription was refused (e.g. 500 "subscribe
				// failed"): the connection is not what the scenario
				// needs, so this attempt failed; it is retried.
				return "subscribe_err_" + strconv.FormatUint(code, 10)
			}
			l.stats.errors["server_err_"+strconv.FormatUint(code, 10)]++
		}
		return ""
	}
	ps, ok := parsePush(p)
	if !ok {
		l.stats.errors["unknown_message"]++
		return ""
	}
	if !c.meas {
		l.stats.unmeasured++
		return ""
	}
	l.received.Add(1)
	lat := max((now-ps.t)/1000, 0)
	last := &c.lastU
	h := l.stats.latency
	unique := &l.stats.uniqueU
	if ps.kind == kindGroup {
		last, h, unique = &c.lastG, l.stats.groupLatency, &l.stats.uniqueG
	}
	q := uint32(ps.q)
	switch {
	case q <= *last:
		l.stats.dups++
		return ""
	case q > *last+1:
		l.stats.gaps += uint64(q - *last - 1)
	}
	*last = q
	*unique++
	h.RecordValue(lat)
	return ""
}

// scanTimeouts drops connections whose connect, handshake or subscribe
// phase outlived HandshakeTimeout. A scan every 100 ms over the loop's
// slice is cheaper than a timer per connection.
func (l *loop) scanTimeouts(now int64) {
	if l.inflight == 0 {
		return
	}
	limit := int64(l.cfg.HandshakeTimeout)
	for i := range l.conns {
		c := &l.conns[i]
		if (c.state == stConnecting || c.state == stHandshake || c.state == stSubscribing) && now-c.phaseNs > limit {
			phase := map[connState]string{stConnecting: "connect", stHandshake: "handshake", stSubscribing: "subscribe"}[c.state]
			l.fail(i, "timeout_"+phase, now)
		}
	}
}

// errClass names an error for the errors-by-class table: the errno name
// (EADDRNOTAVAIL, EMFILE, ECONNREFUSED, ...) when there is one.
func errClass(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		if name := unix.ErrnoName(en); name != "" {
			return name
		}
		return "errno_" + strconv.Itoa(int(en))
	}
	return "other"
}

// stopAndClose releases a loop that was never run (tests).
func (l *loop) stopAndClose() {
	l.stop.Store(true)
	l.closeAll()
}
