package poller

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The lean backend: pushd's own event loops on epoll, driven through
// golang.org/x/sys/unix (see doc.go for why it exists and what it costs).
//
// Each loop owns one epoll set, one eventfd to wake it for shutdown, one
// shared read buffer and its event array. Connections are registered
// edge-triggered for input and output at once (EPOLLIN|EPOLLOUT|
// EPOLLRDHUP|EPOLLET), so no epoll_ctl call is ever needed after the
// ADD: an EPOLLOUT edge comes only after a write hit EAGAIN. A
// connection's loop is fd % loops; events carry the fd, and the
// connection is found in the Server's fd table. The listener sits
// level-triggered in loop 0.

// Kinds of epoll registrations, kept in EpollEvent.Pad.
const (
	kindConn int32 = iota
	kindListener
	kindWake
	kindTLSListener
)

const (
	leanEvents    = 256      // events per epoll_wait
	leanReadBuf   = 64 << 10 // the loop's shared read buffer
	leanAcceptMax = 64       // accepts per listener event (level-triggered: the rest raise another)
)

// DefaultLeanLoops returns the lean backend's default loop count: one per
// four CPUs, at least one. A loop only reads and parses; writes happen on
// the goroutines that publish, so few loops keep up.
func DefaultLeanLoops() int {
	return max(1, runtime.GOMAXPROCS(0)/4)
}

type leanBackend struct {
	s     *Server
	loops []*leanLoop
	wg    sync.WaitGroup
	once  sync.Once
}

type leanLoop struct {
	b      *leanBackend
	epfd   int
	file   *os.File        // epfd, registered with Go's own netpoller
	rc     syscall.RawConn // file's: parks the loop goroutine until epfd is readable
	wakefd int
	buf    []byte
	events []unix.EpollEvent
}

// newLean creates n loops (epoll sets and eventfds) without starting them.
func newLean(s *Server, n int) (*leanBackend, error) {
	b := &leanBackend{s: s}
	for range n {
		l, err := b.newLoop()
		if err != nil {
			b.closeFDs()
			return nil, err
		}
		b.loops = append(b.loops, l)
	}
	return b, nil
}

func (b *leanBackend) newLoop() (*leanLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("poller: epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("poller: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd), Pad: kindWake}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(wfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("poller: epoll_ctl eventfd: %w", err)
	}
	l := &leanLoop{b: b, epfd: epfd, wakefd: wfd, buf: make([]byte, leanReadBuf), events: make([]unix.EpollEvent, leanEvents)}
	// An epoll descriptor is itself pollable (readable while its ready
	// list is non-empty). Handing it to Go's netpoller lets the loop
	// goroutine park like any network goroutine instead of blocking a
	// thread in epoll_wait, which made the runtime hand the thread's P
	// off and wake sysmon at every event (strace on bench slowwriters'
	// echo window: 10,591 nanosleep calls in 4 s blocking, 3,365 parked).
	// Measured with bench slowwriters, same host, alternating runs: echo
	// window 4.8-5.6 % of a core parked vs 6.8-8.4 % blocking; slow
	// writers alone 4.8-5.2 % vs 5.1-5.3 %.
	if err := unix.SetNonblock(epfd, true); err == nil {
		l.file = os.NewFile(uintptr(epfd), "epoll")
		if rc, err := l.file.SyscallConn(); err == nil {
			l.rc = rc
		}
	}
	return l, nil
}

// start registers the listener with loop 0 and runs every loop on its own
// goroutine until stop.
func (b *leanBackend) start(ln *listener) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ln.fd), Pad: kindListener}
	if err := unix.EpollCtl(b.loops[0].epfd, unix.EPOLL_CTL_ADD, ln.fd, &ev); err != nil {
		return fmt.Errorf("poller: epoll_ctl listener: %w", err)
	}
	if tln := b.s.tln; tln != nil {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(tln.fd), Pad: kindTLSListener}
		if err := unix.EpollCtl(b.loops[0].epfd, unix.EPOLL_CTL_ADD, tln.fd, &ev); err != nil {
			return fmt.Errorf("poller: epoll_ctl wss listener: %w", err)
		}
	}
	for _, l := range b.loops {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			l.run()
		}()
	}
	return nil
}

// add registers an accepted or attached connection with its loop.
func (b *leanBackend) add(c *Conn) error {
	l := b.loops[c.fd%len(b.loops)]
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		return fmt.Errorf("poller: epoll_ctl: %w", err)
	}
	return nil
}

// stop wakes every loop, waits for them to return and closes their
// descriptors. It is idempotent.
func (b *leanBackend) stop() {
	b.once.Do(func() {
		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		for _, l := range b.loops {
			_, _ = unix.Write(l.wakefd, one)
		}
		b.wg.Wait()
		b.closeFDs()
	})
}

func (b *leanBackend) closeFDs() {
	for _, l := range b.loops {
		unix.Close(l.wakefd)
		if l.file != nil {
			_ = l.file.Close()
		} else {
			unix.Close(l.epfd)
		}
	}
}

// run waits for events and dispatches them until the wake eventfd fires.
// It parks in Go's netpoller on the epoll descriptor and drains it with
// non-blocking epoll_wait calls; if the descriptor could not be handed to
// the netpoller it blocks in epoll_wait instead.
func (l *leanLoop) run() {
	if l.rc != nil {
		stop := false
		err := l.rc.Read(func(fd uintptr) bool {
			for !stop {
				n, errno := epollNow(int(fd), l.events)
				if errno == unix.EINTR {
					continue
				}
				if errno != 0 {
					return l.fail(errno)
				}
				if n == 0 {
					// Park until epfd is readable again. Go's netpoller
					// watches it edge-triggered, and every new event in
					// this set raises a new edge, so none is missed.
					return false
				}
				stop = l.handle(n)
			}
			return true
		})
		if err == nil || stop {
			return
		}
		l.b.s.log.Warn("epoll descriptor not pollable by the Go runtime; blocking in epoll_wait", "err", err)
	}
	for {
		n, err := unix.EpollWait(l.epfd, l.events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			l.fail(err)
			return
		}
		if l.handle(n) {
			return
		}
	}
}

// epollNow is epoll_wait with a zero timeout. It never blocks, so it is a
// raw system call: the scheduler need not prepare for a blocked thread.
func epollNow(epfd int, events []unix.EpollEvent) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd),
		uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(n), errno
}

// fail logs a failed epoll_wait; the loop stops.
func (l *leanLoop) fail(err error) bool {
	l.b.s.log.Error("epoll_wait failed; loop stops", "err", err)
	return true
}

// handle dispatches n events; it reports true when the wake eventfd
// asked the loop to stop.
func (l *leanLoop) handle(n int) bool {
	s := l.b.s
	for i := range n {
		ev := &l.events[i]
		switch ev.Pad {
		case kindListener:
			s.acceptLean()
		case kindTLSListener:
			s.acceptTLS()
		case kindWake:
			return true
		default:
			l.dispatch(ev)
		}
	}
	return false
}

// dispatch hands one connection event to its Conn.
func (l *leanLoop) dispatch(ev *unix.EpollEvent) {
	c := l.b.s.fds.get(int(ev.Fd))
	if c == nil {
		return // closed meanwhile (and the descriptor not reused yet)
	}
	if ev.Events&unix.EPOLLOUT != 0 && c.waitOut.Load() {
		c.onWritable()
	}
	const in = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	if ev.Events&in != 0 {
		c.onReadable(l.buf, ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
	}
}

// acceptLean accepts pending connections (up to leanAcceptMax: the
// listener is level-triggered, so more raise another event).
func (s *Server) acceptLean() {
	for range leanAcceptMax {
		nfd, _, src, err := s.ln.acceptFD()
		if err != nil {
			if !errors.Is(err, ErrListenerClosed) {
				s.log.Error("accept failed", "err", err)
			}
			return
		}
		if nfd < 0 {
			return
		}
		_ = unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		c := s.newConn(nil, nfd)
		c.src = src
		if !s.register(c) {
			continue
		}
		if err := s.lean.add(c); err != nil {
			s.log.Error("cannot register connection", "err", err)
			c.rd.Store(1) // take the read side so nothing else closes it
			c.leanClosed()
		}
	}
}
