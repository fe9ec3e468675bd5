package conformance

import (
	"io"
	"net"
	"sync"
	"testing"
)

// recProxy is a loopback TCP proxy in front of pushd that records what
// each client writes, so a test can check how a scripted peer framed its
// messages (e.g. that ws and python really sent fragments with pings
// between them).
type recProxy struct {
	ln     net.Listener
	target string
	limit  int
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []*recConn
	open   []net.Conn
}

// startRecProxy listens on 127.0.0.1:0 and forwards to target, recording
// the first limit bytes each client sends. It stops when t ends.
func startRecProxy(t *testing.T, target string, limit int) *recProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &recProxy{ln: ln, target: target, limit: limit}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.open {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *recProxy) addr() string { return p.ln.Addr().String() }

func (p *recProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		rec := &recConn{Conn: up, limit: p.limit}
		p.mu.Lock()
		p.conns = append(p.conns, rec)
		p.open = append(p.open, c, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(rec, c, up)
		go p.pipe(c, up, c)
	}
}

// pipe copies src to dst (dst may record), then half-closes dst's
// underlying TCP connection so the peer sees EOF.
func (p *recProxy) pipe(dst io.Writer, src net.Conn, tcpDst net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	if cw, ok := tcpDst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// fragmentation returns the best fragmentedSends result over all recorded
// connections.
func (p *recProxy) fragmentation(t *testing.T) (frames, pings int) {
	t.Helper()
	p.mu.Lock()
	conns := append([]*recConn(nil), p.conns...)
	p.mu.Unlock()
	for _, c := range conns {
		f, n := fragmentedSends(c.sentFrames(t))
		frames, pings = max(frames, f), max(pings, n)
	}
	return frames, pings
}
