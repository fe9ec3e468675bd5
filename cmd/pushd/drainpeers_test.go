package main_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// drainPeers holds many upgraded client connections on one epoll loop in
// this process (a goroutine each would pass the race detector's limit of
// 8128 live goroutines) and records, per connection, what the server's
// drain sent: reconnect hints and the close frame, with the time each
// arrived. On a close frame it answers with a close frame and closes the
// socket, as a browser does.
type drainPeers struct {
	epfd  int
	peers []drainPeer
	open  int

	first     chan struct{} // closed at the first close frame
	firstOnce sync.Once
}

// drainPeer is one client connection's record.
type drainPeer struct {
	fd      int
	buf     []byte
	raw     bool // asked for format=raw
	hints   int
	afterMs int64
	hintAt  time.Time
	closeAt time.Time
	code    int
	bad     string // anything unexpected
}

// newDrainPeers takes over upgraded connections: each descriptor is
// duplicated onto the epoll set and the net.Conn closed.
func newDrainPeers(t *testing.T, conns []syscall.Conn, raw func(i int) bool) *drainPeers {
	t.Helper()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	d := &drainPeers{epfd: epfd, peers: make([]drainPeer, len(conns)), first: make(chan struct{})}
	t.Cleanup(d.closeAll)
	for i, c := range conns {
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		nfd := -1
		var derr error
		if err := rc.Control(func(fd uintptr) { nfd, derr = unix.Dup(int(fd)) }); err != nil || derr != nil {
			t.Fatalf("dup: %v %v", err, derr)
		}
		if cl, ok := c.(interface{ Close() error }); ok {
			_ = cl.Close()
		}
		if err := unix.SetNonblock(nfd, true); err != nil {
			t.Fatal(err)
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(i)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, nfd, &ev); err != nil {
			t.Fatal(err)
		}
		d.peers[i] = drainPeer{fd: nfd, afterMs: -1, raw: raw != nil && raw(i)}
		d.open++
	}
	return d
}

// run reads until every connection has closed or deadline passes; it
// returns how many are still open. Only run's goroutine touches peers
// until it returns.
func (d *drainPeers) run(deadline time.Time) int {
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 16<<10)
	for d.open > 0 && time.Now().Before(deadline) {
		n, err := unix.EpollWait(d.epfd, events, 50)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return d.open
		}
		now := time.Now()
		for _, ev := range events[:n] {
			d.read(&d.peers[ev.Fd], buf, now)
		}
	}
	return d.open
}

func (d *drainPeers) read(p *drainPeer, buf []byte, now time.Time) {
	for p.fd >= 0 {
		n, err := unix.Read(p.fd, buf)
		if n > 0 {
			p.buf = append(p.buf, buf[:n]...)
			d.parse(p, now)
			continue
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		if p.code == 0 && p.bad == "" {
			p.bad = fmt.Sprintf("connection ended without a close frame (read %d, %v)", n, err)
		}
		d.finish(p)
	}
}

// parse consumes the complete server frames in p.buf (unmasked; the
// drain only sends short text and close frames).
func (d *drainPeers) parse(p *drainPeer, now time.Time) {
	for p.fd >= 0 && len(p.buf) >= 2 {
		b := p.buf
		op, size, hdr := b[0]&0x0f, int(b[1]&0x7f), 2
		switch {
		case b[1]&0x80 != 0 || size == 127:
			p.bad = fmt.Sprintf("unexpected frame header % x", b[:2])
			d.finish(p)
			return
		case size == 126:
			if len(b) < 4 {
				return
			}
			size, hdr = int(binary.BigEndian.Uint16(b[2:4])), 4
		}
		if len(b) < hdr+size {
			return
		}
		payload := b[hdr : hdr+size]
		p.buf = b[hdr+size:]
		switch op {
		case 0x1:
			var m struct {
				Op      string `json:"op"`
				AfterMs *int64 `json:"after_ms"`
			}
			if json.Unmarshal(payload, &m) != nil || m.Op != "reconnect" || m.AfterMs == nil {
				p.bad = fmt.Sprintf("unexpected text frame %q", payload)
				continue
			}
			if p.code != 0 {
				p.bad = "hint after the close frame"
			}
			p.hints++
			p.afterMs, p.hintAt = *m.AfterMs, now
		case 0x8:
			if len(payload) < 2 {
				p.bad = "close frame without a code"
				d.finish(p)
				return
			}
			p.code, p.closeAt = int(binary.BigEndian.Uint16(payload)), now
			d.firstOnce.Do(func() { close(d.first) })
			// Answer with the same code (masked with a zero key) and hang up.
			reply := []byte{0x88, 0x82, 0, 0, 0, 0, payload[0], payload[1]}
			_, _ = unix.Write(p.fd, reply)
			d.finish(p)
			return
		case 0x9, 0xA:
			// pings (the tests set -ping-interval high) are ignored
		default:
			p.bad = fmt.Sprintf("unexpected opcode %#x", op)
		}
	}
}

func (d *drainPeers) finish(p *drainPeer) {
	if p.fd < 0 {
		return
	}
	_ = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, p.fd, nil)
	_ = unix.Close(p.fd)
	p.fd = -1
	d.open--
}

// closeAll releases every descriptor (test cleanup, after run returned).
func (d *drainPeers) closeAll() {
	for i := range d.peers {
		d.finish(&d.peers[i])
	}
	_ = unix.Close(d.epfd)
}
