package poller

import (
	"context"
	"fmt"
	"net"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"
)

// Attach serves an already connected stream socket fd as if the listener
// had accepted it from remote: admission (MaxConns, the per-source limits
// for remote's address) refuses it with the same 503 + Retry-After, then
// the handshake timeout, the upgrade and everything after run as for any
// connection, for sockets that come from elsewhere (a test's socketpair,
// a listener the embedding program accepted on). wss does not come
// through here: ListenTLS serves it on the loops. The Server owns fd from the call on (also
// when Attach fails). Call it only while Run is running.
func (s *Server) Attach(fd int, remote net.Addr) error {
	if s.draining.Load() {
		unix.Close(fd)
		return ErrServerClosed
	}
	if s.conns.Load() >= s.maxConns {
		s.refuseFD(fd, []byte(refusal), "capacity")
		return fmt.Errorf("poller: attach: %w", ErrRefused)
	}
	var src *ipState
	if ta, ok := remote.(*net.TCPAddr); ok && s.adm != nil {
		var admitted bool
		var reason string
		var retry int
		if src, admitted, reason, retry = s.adm.admit(ta.AddrPort().Addr()); !admitted {
			s.refuseFD(fd, refusalWith(retry, "too many connections from your address"), reason)
			return fmt.Errorf("poller: attach: %w", ErrRefused)
		}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		s.releaseSrc(src)
		unix.Close(fd)
		return fmt.Errorf("poller: attach: %w", err)
	}
	var nc netpoll.Connection // nil on the lean backend
	if s.cfg.Backend == BackendLean {
		s.mu.Lock()
		closed := s.lean == nil
		s.mu.Unlock()
		if closed {
			s.releaseSrc(src)
			unix.Close(fd)
			return fmt.Errorf("poller: attach: %w", ErrServerClosed)
		}
	} else {
		var err error
		if nc, err = netpoll.NewFDConnection(fd); err != nil {
			s.releaseSrc(src)
			unix.Close(fd)
			return fmt.Errorf("poller: attach: %w", err)
		}
	}
	c := s.newConn(nc, fd)
	c.ext = &connExt{remote: remote}
	c.src = src
	if !s.register(c) {
		return fmt.Errorf("poller: attach: %w", ErrRefused)
	}
	if nc == nil {
		if err := s.lean.add(c); err != nil {
			c.rd.Store(1) // own the read side: nothing else may close c
			c.leanClosed()
			return fmt.Errorf("poller: attach: %w", err)
		}
		return nil
	}
	_ = nc.SetWriteTimeout(s.cfg.WriteTimeout)
	// Set last: it runs OnRequest at once if bytes are already buffered.
	return nc.SetOnRequest(func(context.Context, netpoll.Connection) error {
		c.process()
		return nil
	})
}

// releaseSrc undoes an admission count (nil src: none).
func (s *Server) releaseSrc(src *ipState) {
	if s.adm != nil && src != nil {
		s.adm.release(src)
	}
}

// refuseFD counts a refusal, writes it to a socket that never became a
// connection and closes it, as the listener does for its own refusals.
func (s *Server) refuseFD(fd int, msg []byte, reason string) {
	s.ln.turnAwayWith(fd, msg, reason)
}
