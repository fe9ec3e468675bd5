package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pushd/pushd/internal/srcaddr"
)

// monoClock converts Go's monotonic clock into CLOCK_MONOTONIC nanoseconds,
// which every process on the host shares: the parent stamps a publication,
// the client stamps each receipt, and the two subtract. Go's runtime
// nanotime is CLOCK_MONOTONIC on Linux, so base + time.Since(baseTime) is
// that clock read through the vDSO at the cost of time.Now.
type monoClock struct {
	baseTime time.Time
	baseNs   int64
}

func newMonoClock() (monoClock, error) {
	var ts unix.Timespec
	t := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return monoClock{}, fmt.Errorf("clock_gettime: %w", err)
	}
	return monoClock{baseTime: t, baseNs: ts.Nano()}, nil
}

func (m monoClock) now() int64 { return m.baseNs + int64(time.Since(m.baseTime)) }

// fanoutRound is the client's account of one delivery round: when each
// connection had all the bytes it expected (CLOCK_MONOTONIC ns).
type fanoutRound struct {
	Conns     int    `json:"conns"`
	Complete  int    `json:"complete"`
	FirstNs   int64  `json:"first_ns"`
	P50Ns     int64  `json:"p50_ns"`
	P99Ns     int64  `json:"p99_ns"`
	LastNs    int64  `json:"last_ns"`
	Mismatch  int    `json:"mismatch"`   // connections whose bytes differed from the expected frames
	Extra     int    `json:"extra"`      // connections that got more bytes than expected
	Closed    int    `json:"closed"`     // connections that hit EOF or an error
	Stale     int64  `json:"stale"`      // bytes left over from before the round, discarded
	Reads     int64  `json:"reads"`      // read(2) calls that returned data
	CPUNs     int64  `json:"cpu_ns"`     // client process CPU (user+sys) during the round
	Captured  []byte `json:"captured"`   // capture rounds: the first read of one connection
	TimedOut  bool   `json:"timed_out"`  // the round ended by -ms, not by completion
	WaitCalls int64  `json:"wait_calls"` // epoll_wait calls
}

// fanoutSet holds the client's connections as bare descriptors in one
// epoll instance: no goroutine, no Go netpoll and no buffer per connection,
// so receiving costs one epoll_wait per batch of ready sockets and one
// read(2) per ready socket, and stamping a receipt costs one clock read.
type fanoutSet struct {
	epfd  int
	fds   []int
	index []int32 // fd → position in fds, -1 if none
	got   []int32 // bytes received this round per connection
	at    []int64 // completion time this round per connection
	clock monoClock
}

func (s *fanoutSet) close() {
	for _, fd := range s.fds {
		unix.Close(fd)
	}
	if s.epfd >= 0 {
		unix.Close(s.epfd)
	}
	s.fds, s.index = nil, nil
	s.epfd = -1
}

// detach duplicates c's descriptor (close-on-exec, same open file, so
// still non-blocking) and closes c: the socket lives on in the duplicate,
// out of Go's netpoll.
func detach(c net.Conn) (int, error) {
	defer c.Close()
	fd, err := connFd(c)
	if err != nil {
		return -1, err
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	return nfd, nil
}

// openFanout opens cmd.Total connections to cmd.Target (WebSocket upgrades
// to cmd.Path, or plain TCP with cmd.Raw) and registers them with a new
// epoll instance.
func openFanout(ctx context.Context, cf clientFlags, d *srcaddr.Dialer, cmd clientCmd, clock monoClock) (*fanoutSet, map[string]int, error) {
	cf.target, cf.path, cf.hello = cmd.Target, cmd.Path, cmd.Hello
	paths := indexedPaths(cmd.Path)
	fds, errs := dialAll(ctx, cmd.Total, cf.concurrency, func() (int, error) {
		c := cf
		c.path = paths()
		return dialDetached(ctx, c, d, cmd.Raw)
	})
	s := &fanoutSet{epfd: -1, fds: fds, clock: clock}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		s.close()
		return nil, errs, fmt.Errorf("epoll_create1: %w", err)
	}
	s.epfd = epfd
	s.index = make([]int32, slices.Max(append([]int{0}, fds...))+1)
	for i := range s.index {
		s.index[i] = -1
	}
	for i, fd := range fds {
		s.index[fd] = int32(i)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			s.close()
			return nil, errs, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	s.got = make([]int32, len(fds))
	s.at = make([]int64, len(fds))
	return s, errs, nil
}

func dialDetached(ctx context.Context, cf clientFlags, d *srcaddr.Dialer, raw bool) (int, error) {
	if raw {
		dctx, cancel := context.WithTimeout(ctx, cf.hsTimeout)
		defer cancel()
		c, err := d.DialContext(dctx, "tcp", cf.target)
		if err != nil {
			return -1, err
		}
		return detach(c)
	}
	c, err := dialUpgrade(ctx, cf, d)
	if err != nil {
		return -1, err
	}
	if c.br.Buffered() > 0 {
		c.c.Close()
		return -1, fmt.Errorf("%w: %d bytes after the 101 response", ErrFrame, c.br.Buffered())
	}
	return detach(c.c)
}

// sysRead is read(2) without the scheduler hand-off of syscall.Read: the
// sockets are non-blocking, so the call never blocks the thread.
func sysRead(fd int, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

// drain reads and discards whatever is pending on every socket (stale
// bytes of an earlier round) and resets the round state.
func (s *fanoutSet) drain(buf []byte, events []unix.EpollEvent) int64 {
	var stale int64
	for {
		k, err := unix.EpollWait(s.epfd, events, 0)
		if err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
		if k <= 0 {
			break
		}
		for _, ev := range events[:k] {
			for {
				n, e := sysRead(int(ev.Fd), buf)
				if e != 0 || n <= 0 {
					if e != unix.EAGAIN {
						_ = unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, int(ev.Fd), nil)
					}
					break
				}
				stale += int64(n)
			}
		}
	}
	clear(s.got)
	clear(s.at)
	return stale
}

// receive waits until every connection has want bytes equal to expect
// (with capture: any bytes, and the first read is kept), or until timeout.
// One thread, level-triggered epoll, one read per ready socket per wake-up.
func (s *fanoutSet) receive(want int, expect []byte, capture bool, timeout time.Duration, buf []byte, events []unix.EpollEvent) fanoutRound {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := fanoutRound{Conns: len(s.fds)}
	cpu0 := processCPU()
	deadline := time.Now().Add(timeout)
	counted := make([]bool, len(s.fds)) // extra/mismatch counted once per conn
	r.TimedOut, r.WaitCalls = s.readReady(deadline, buf, events,
		func() bool { return r.Complete+r.Closed >= len(s.fds) },
		func(fd int, data []byte) {
			i := s.index[fd]
			n := len(data)
			r.Reads++
			pos := int(s.got[i])
			s.got[i] += int32(n)
			if capture {
				if pos == 0 {
					s.at[i] = s.clock.now()
					r.Complete++
					if r.Captured == nil {
						r.Captured = append([]byte(nil), data...)
					}
				}
				return
			}
			m := min(n, max(want-pos, 0))
			if (m < n || !bytes.Equal(data[:m], expect[pos:pos+m])) && !counted[i] {
				counted[i] = true
				if m < n {
					r.Extra++
				} else {
					r.Mismatch++
				}
			}
			if pos < want && pos+n >= want {
				s.at[i] = s.clock.now()
				r.Complete++
			}
		},
		func(fd int) {
			if i := s.index[fd]; s.got[i] < int32(want) || (capture && s.got[i] == 0) {
				r.Closed++
			}
		})
	r.CPUNs = int64(processCPU() - cpu0)
	var at []int64
	for _, t := range s.at {
		if t != 0 {
			at = append(at, t)
		}
	}
	if len(at) > 0 {
		slices.Sort(at)
		r.FirstNs, r.LastNs = at[0], at[len(at)-1]
		r.P50Ns, r.P99Ns = at[len(at)/2], at[(len(at)-1)*99/100]
	}
	return r
}

// processCPU returns this process's user+sys time.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runFanoutClient serves the fanout scenario's commands:
//
//	{"cmd":"open","total":N,"target":..,"path":..,"raw":bool} → "opened"
//	{"cmd":"arm","bytes":B,"frame":..,"ms":T}  → "armed", then "received"
//	    once every connection has B bytes equal to frame repeated (or any
//	    bytes with "capture":true), or after T ms
//	{"cmd":"collect","total":N,"ms":T} → "collecting", then "collected"
//	    with the publish→receive latencies of N "@<ns>" stamps (or what
//	    arrived within T ms); see peersclient.go
//	{"cmd":"close"} → "closed"; "quit" or stdin EOF ends the process.
//
// One set of connections at a time; "open" with "add" grows it.
func runFanoutClient(ctx context.Context, cf clientFlags, d *srcaddr.Dialer, out *eventWriter) int {
	clock, err := newMonoClock()
	if err != nil {
		out.send(clientEvent{Event: "error", Message: err.Error()})
		return 1
	}
	cmds := make(chan clientCmd)
	go readCmds(os.Stdin, cmds)
	var set *fanoutSet
	defer func() {
		if set != nil {
			set.close()
		}
	}()
	buf := make([]byte, 64<<10)
	events := make([]unix.EpollEvent, 4096)
	for {
		cmd, code, done := nextCmd(ctx, cmds, out, "fanout client", clientEvent{Event: "bye"})
		if done {
			return code
		}
		switch cmd.Cmd {
		case "open":
			if set != nil && !cmd.Add {
				set.close()
				set = nil
			}
			start := time.Now()
			added, errs, err := openFanout(ctx, cf, d, cmd, clock)
			got := 0
			if err == nil {
				got = len(added.fds)
			}
			if err == nil && set != nil {
				err = set.merge(added)
			} else if err == nil {
				set = added
			}
			if err != nil {
				out.send(clientEvent{Event: "error", Message: err.Error()})
				continue
			}
			out.send(clientEvent{Event: "opened", Open: len(set.fds), Failed: cmd.Total - got, Errors: errs,
				Millis: time.Since(start).Milliseconds()})
		case "arm":
			if set == nil {
				out.send(clientEvent{Event: "error", Message: "arm before open"})
				continue
			}
			stale := set.drain(buf, events)
			out.send(clientEvent{Event: "armed"})
			r := set.receive(cmd.Bytes, cmd.Frame, cmd.Capture, time.Duration(cmd.Ms)*time.Millisecond, buf, events)
			r.Stale = stale
			out.send(clientEvent{Event: "received", Fanout: &r})
		case "collect":
			if set == nil {
				out.send(clientEvent{Event: "error", Message: "collect before open"})
				continue
			}
			set.drain(buf, events)
			out.send(clientEvent{Event: "collecting"})
			lat := set.collect(cmd.Total, time.Duration(cmd.Ms)*time.Millisecond, buf, events)
			out.send(clientEvent{Event: "collected", Latency: &lat})
		case "close":
			if set != nil {
				set.close()
				set = nil
			}
			out.send(clientEvent{Event: "closed"})
		default:
			out.send(clientEvent{Event: "error", Message: "unknown command " + cmd.Cmd})
		}
	}
}
