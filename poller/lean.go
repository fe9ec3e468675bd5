package poller

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

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
	return &leanLoop{b: b, epfd: epfd, wakefd: wfd, buf: make([]byte, leanReadBuf), events: make([]unix.EpollEvent, leanEvents)}, nil
}

// start registers the listener with loop 0 and runs every loop on its own
// goroutine until stop.
func (b *leanBackend) start(ln *listener) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ln.fd), Pad: kindListener}
	if err := unix.EpollCtl(b.loops[0].epfd, unix.EPOLL_CTL_ADD, ln.fd, &ev); err != nil {
		return fmt.Errorf("poller: epoll_ctl listener: %w", err)
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
		unix.Close(l.epfd)
	}
}

// run waits for events and dispatches them until the wake eventfd fires.
func (l *leanLoop) run() {
	s := l.b.s
	for {
		n, err := unix.EpollWait(l.epfd, l.events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			s.log.Error("epoll_wait failed; loop stops", "err", err)
			return
		}
		for i := range n {
			ev := &l.events[i]
			switch ev.Pad {
			case kindListener:
				s.acceptLean()
			case kindWake:
				return
			default:
				l.dispatch(ev)
			}
		}
	}
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
		nfd, sa, err := s.ln.acceptFD()
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
		if s.adm != nil {
			c.src = sockIP(sa)
		}
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
