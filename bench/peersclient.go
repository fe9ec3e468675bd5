package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// The peers scenario's additions to the fanout client (bench -client
// fanout): connections that say a protocol's hello after the upgrade,
// personal-channel paths, growing a set in steps, and collecting
// publish→receive latencies.

// indexedPaths returns a function yielding path with "{i}" replaced by 0,
// 1, 2, ... on successive calls (safe for concurrent use); a path without
// "{i}" is returned as is.
func indexedPaths(path string) func() string {
	if !strings.Contains(path, "{i}") {
		return func() string { return path }
	}
	var next atomic.Int64
	return func() string { return strings.ReplaceAll(path, "{i}", itoa(int(next.Add(1)-1))) }
}

// sayHello sends hello as one masked text frame and reads the server's
// reply frame (e.g. centrifuge's connect command and its reply) within
// timeout. Anything buffered after the reply fails the connection: the
// fanout client must own every byte that follows.
func sayHello(c net.Conn, br *bufio.Reader, hello string, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write(appendMaskedFrame(nil, 0x1, []byte(hello))); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	op, p, err := readFrame(br, nil)
	if err != nil {
		return fmt.Errorf("read hello reply: %w", err)
	}
	if op != 0x1 && op != 0x2 {
		return fmt.Errorf("%w: hello reply opcode %#x %q", ErrFrame, op, p)
	}
	if br.Buffered() > 0 {
		return fmt.Errorf("%w: %d bytes after the hello reply", ErrFrame, br.Buffered())
	}
	return nil
}

// merge moves o's connections into s's epoll set and closes o's epoll
// descriptor.
func (s *fanoutSet) merge(o *fanoutSet) error {
	defer func() {
		unix.Close(o.epfd)
		o.epfd, o.fds, o.index = -1, nil, nil
	}()
	for _, fd := range o.fds {
		_ = unix.EpollCtl(o.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		for fd >= len(s.index) {
			s.index = append(s.index, -1)
		}
		s.index[fd] = int32(len(s.fds))
		s.fds = append(s.fds, fd)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	s.got = make([]int32, len(s.fds))
	s.at = make([]int64, len(s.fds))
	return nil
}

// latencyPoint is one point of a latency distribution: the fraction q of
// messages arrived within Us microseconds.
type latencyPoint struct {
	Q  float64 `json:"q"`
	Us int64   `json:"us"`
}

// latencyResult is the client's account of a "collect" window.
type latencyResult struct {
	Messages int64          `json:"messages"`
	Closed   int            `json:"closed"`    // connections that hit EOF or an error
	Garbled  int64          `json:"garbled"`   // reads with no "@<ns>" stamp in them
	TimedOut bool           `json:"timed_out"` // the window ended before Total messages
	P50Us    int64          `json:"p50_us"`
	P99Us    int64          `json:"p99_us"`
	P999Us   int64          `json:"p999_us"`
	MaxUs    int64          `json:"max_us"`
	CDF      []latencyPoint `json:"cdf"`
}

// cdfQuantiles are the points of latencyResult.CDF, dense in the tail.
func cdfQuantiles() []float64 {
	var q []float64
	for i := 0; i <= 98; i++ {
		q = append(q, float64(i))
	}
	for _, t := range []float64{99, 99.5, 99.9, 99.95, 99.99, 100} {
		q = append(q, t)
	}
	return q
}

// collect reads every connection until total messages have arrived or
// timeout passes. A message is any "@<digits>" in the bytes received: the
// publisher's scheduled send time (CLOCK_MONOTONIC ns), wherever the
// server's framing puts it (raw payload or inside a protocol's JSON).
// Latency = receipt - scheduled send time, so a publisher that falls
// behind shows as latency.
func (s *fanoutSet) collect(total int, timeout time.Duration, buf []byte, events []unix.EpollEvent) latencyResult {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h := hdrhistogram.New(1, 60_000_000, 3) // µs, up to 60 s
	var r latencyResult
	tails := map[int][]byte{} // a stamp cut by the end of a read, per fd
	deadline := time.Now().Add(timeout)
	r.TimedOut, _ = s.readReady(deadline, buf, events,
		func() bool { return r.Messages >= int64(total) },
		func(fd int, data []byte) {
			now := s.clock.now()
			if t := tails[fd]; t != nil {
				data = append(t, data...)
				delete(tails, fd)
			}
			stamps, tail := scanStamps(data, func(ns int64) {
				_ = h.RecordValue(max((now-ns)/1000, 1))
			})
			if tail != nil {
				tails[fd] = append([]byte(nil), tail...)
			}
			if stamps == 0 && tail == nil {
				r.Garbled++
			}
			r.Messages += int64(stamps)
		},
		func(int) { r.Closed++ })
	if h.TotalCount() > 0 {
		r.P50Us, r.P99Us, r.P999Us, r.MaxUs = h.ValueAtQuantile(50), h.ValueAtQuantile(99), h.ValueAtQuantile(99.9), h.Max()
		for _, q := range cdfQuantiles() {
			r.CDF = append(r.CDF, latencyPoint{Q: q / 100, Us: h.ValueAtQuantile(q)})
		}
	}
	return r
}

// readReady is the client's receive loop: one thread, level-triggered
// epoll (at most 100 ms per epoll_wait, never past deadline), one read(2)
// per ready socket per wake-up. onData gets each read's bytes (valid until
// it returns); a socket at EOF or in error leaves the set and goes to
// onClosed. It stops when done() holds, when epoll fails, or at deadline
// (timedOut), and returns the epoll_wait calls made.
func (s *fanoutSet) readReady(deadline time.Time, buf []byte, events []unix.EpollEvent, done func() bool,
	onData func(fd int, data []byte), onClosed func(fd int)) (timedOut bool, waits int64) {
	for !done() {
		left := time.Until(deadline)
		if left <= 0 {
			return true, waits
		}
		k, err := unix.EpollWait(s.epfd, events, int(min(left, 100*time.Millisecond)/time.Millisecond)+1)
		waits++
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, waits
		}
		for _, ev := range events[:k] {
			fd := int(ev.Fd)
			n, e := sysRead(fd, buf)
			switch {
			case e == unix.EAGAIN:
			case e != 0 || n <= 0:
				_ = unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil)
				onClosed(fd)
			default:
				onData(fd, buf[:n])
			}
		}
	}
	return false, waits
}

// scanStamps calls stamp for every "@<digits>" followed by a non-digit in
// b and returns how many it found, plus the unfinished stamp at the end of
// b (from its '@'), if any.
func scanStamps(b []byte, stamp func(ns int64)) (int, []byte) {
	found := 0
	for {
		i := bytes.IndexByte(b, '@')
		if i < 0 {
			return found, nil
		}
		b = b[i+1:]
		var ns int64
		j := 0
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			ns = ns*10 + int64(b[j]-'0')
			j++
		}
		if j == len(b) {
			return found, append([]byte{'@'}, b...)
		}
		if j > 0 {
			stamp(ns)
			found++
		}
		b = b[j:]
	}
}
