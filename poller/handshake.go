package poller

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

// headerEnd terminates an HTTP request head.
var headerEnd = []byte("\r\n\r\n")

// handshake consumes the upgrade request from b (continuing an incomplete
// one kept in c.partial); the bytes after the request are already
// WebSocket frames. An incomplete request is copied into c.partial,
// bounded by MaxHeaderBytes, so the read buffer is always fully consumed.
// It reports whether the complete request was handed to a worker (lean
// backend, inline reads: the Handler's Upgrade may block on auth or a
// broker lookup, which must never stall an event loop).
func (c *Conn) handshake(b []byte) (handedOff bool) {
	var rest []byte
	req := b
	if len(c.partial) > 0 {
		old := len(c.partial)
		c.partial = append(c.partial, b...)
		req = c.partial
		// Search only where a terminator may newly appear.
		from := max(old-len(headerEnd)+1, 0)
		if i := bytes.Index(req[from:], headerEnd); i >= 0 {
			end := from + i + len(headerEnd)
			rest = b[len(b)-(len(req)-end):]
			req = req[:end]
		} else {
			req = nil
		}
	} else if i := bytes.Index(b, headerEnd); i >= 0 {
		end := i + len(headerEnd)
		req, rest = b[:end], b[end:]
	} else {
		req = nil
	}
	if req == nil {
		if len(c.partial)+len(b) > c.srv.cfg.MaxHeaderBytes {
			c.reject(http.StatusRequestHeaderFieldsTooLarge, "request header too large")
			return false
		}
		if len(c.partial) == 0 {
			c.partial = append(make([]byte, 0, min(2*len(b), c.srv.cfg.MaxHeaderBytes)), b...)
		}
		return false
	}
	if len(req) > c.srv.cfg.MaxHeaderBytes {
		c.reject(http.StatusRequestHeaderFieldsTooLarge, "request header too large")
		return false
	}
	if c.inline {
		c.handoff(opUpgrade, req, rest)
		return true
	}
	c.finishHandshake(req, rest)
	return false
}

// finishHandshake answers a complete request head: a plain HTTP request
// goes to the Handler's HTTPResponder, anything else through the upgrade;
// rest (frames that followed the request) is parsed once open.
func (c *Conn) finishHandshake(req, rest []byte) {
	if st, isST := c.srv.h.(Streamer); isST && !hasUpgrade(req) && c.respondStream(st, req) {
		c.partial = nil
		return
	}
	if hr, isHR := c.srv.h.(HTTPResponder); isHR && !hasUpgrade(req) {
		c.respondHTTP(hr, req)
		c.partial = nil
		return
	}
	ok := c.upgrade(req)
	c.partial = nil
	if ok && len(rest) > 0 && c.state.Load() == stateOpen {
		c.readFrames(rest)
	}
}

// hsConn adapts a complete request head and the connection's send path to
// the io.ReadWriter gobwas's zero-copy Upgrader wants.
type hsConn struct {
	r   bytes.Reader
	out []byte
}

func (h *hsConn) Read(p []byte) (int, error) { return h.r.Read(p) }
func (h *hsConn) Write(p []byte) (int, error) {
	h.out = append(h.out, p...)
	return len(p), nil
}

// upgrader is one upgrade's scratch: the Request, the handshake's I/O and
// a gobwas Upgrader whose callbacks are bound to it once. Server.upgraders
// pools them, so an upgrade allocates none of it (about 400 bytes of
// garbage per connection otherwise); Handler.Upgrade's contract (r is valid
// only until it returns) allows the reuse.
type upgrader struct {
	c        *Conn
	req      Request
	hc       hsConn
	rejected bool
	neg      codec.DeflateNegotiator
	u        ws.Upgrader
}

func newUpgrader(deflate bool) *upgrader {
	st := &upgrader{}
	st.u = ws.Upgrader{
		OnRequest:       st.onRequest,
		OnHost:          st.onHost,
		OnHeader:        st.onHeader,
		ProtocolCustom:  st.protocolCustom,
		OnBeforeUpgrade: st.onBeforeUpgrade,
	}
	if deflate {
		st.u.Negotiate = st.neg.Negotiate
	}
	return st
}

func (st *upgrader) onRequest(uri []byte) error {
	st.req.URI = string(uri)
	return nil
}

func (st *upgrader) onHost(host []byte) error {
	st.req.Host = string(host)
	return nil
}

func (st *upgrader) onHeader(key, value []byte) error {
	switch {
	case bytes.EqualFold(key, []byte("Origin")):
		st.req.Origin = string(value)
	case bytes.EqualFold(key, []byte("Authorization")):
		st.req.Authorization = string(value)
	}
	return nil
}

// protocolCustom collects the offers; the choice is made in
// onBeforeUpgrade, once every header is known. gobwas reads false as a
// malformed header (400), so false only when it is one.
func (st *upgrader) protocolCustom(v []byte) (string, bool) {
	ok := httphead.ScanTokens(v, func(tok []byte) bool {
		st.req.Protocols = append(st.req.Protocols, string(tok))
		return true
	})
	return "", ok
}

func (st *upgrader) onBeforeUpgrade() (ws.HandshakeHeader, error) {
	c := st.c
	c.deflate = st.neg.Accepted()
	proto, err := c.srv.h.Upgrade(c, &st.req)
	if err != nil {
		st.rejected = true
		return nil, rejection(err)
	}
	if proto == "" {
		return ws.HandshakeHeaderString(""), nil
	}
	return ws.HandshakeHeaderString("Sec-WebSocket-Protocol: " + proto + "\r\n"), nil
}

// reset empties st for the pool: nothing of the last request is kept
// (the Protocols array is, cleared).
func (st *upgrader) reset() {
	protos := st.req.Protocols
	clear(protos)
	st.c = nil
	st.req = Request{Protocols: protos[:0]}
	st.hc.r.Reset(nil)
	st.hc.out = nil
	st.rejected = false
	st.neg = codec.DeflateNegotiator{}
}

// upgrade runs gobwas's Upgrader over the complete request head. It
// reports whether the connection is now open.
func (c *Conn) upgrade(head []byte) bool {
	s := c.srv
	out, err := c.runUpgrader(head)
	if err != nil {
		c.state.Store(stateFailed)
		c.sendControl(out) // gobwas wrote the error response
		c.shutdownAfterFlush()
		return false
	}
	if !c.state.CompareAndSwap(stateHandshake, stateOpen) {
		return false
	}
	c.parser = nil // parsed with codecConfig from the first frame on
	s.stats.upgraded.Add(1)
	if c.deflate {
		s.stats.deflateConns.Add(1)
	}
	c.sendControl(out)
	s.wheel.schedule(c, c.capDue(s.wheel.now.Load()+s.firstPingTicks(c.id)))
	c.opened = true
	s.h.Open(c)
	return true
}

// runUpgrader runs a pooled upgrader over head (Handler.Upgrade included)
// and returns the response gobwas wrote (101, or the refusal when err is
// set). The response is not pooled: a write that does not finish at once
// keeps it queued.
func (c *Conn) runUpgrader(head []byte) ([]byte, error) {
	s := c.srv
	st, _ := s.upgraders.Get().(*upgrader)
	if st == nil {
		st = newUpgrader(s.cfg.Deflate)
	}
	st.c = c
	st.hc.r.Reset(head)
	st.req.RemoteAddr = c.RemoteAddr()
	_, err := st.u.Upgrade(&st.hc)
	if err != nil {
		if !st.rejected {
			s.stats.handshakeFailures.Add(1)
		} else {
			s.stats.rejected.Add(1)
		}
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("upgrade failed", "remote", st.req.RemoteAddr, "err", err)
		}
	}
	out := st.hc.out
	st.reset()
	s.upgraders.Put(st)
	return out, err
}

// rejection turns a Handler error into the gobwas rejection that writes the
// HTTP status (403 unless a *RejectError says otherwise).
func rejection(err error) error {
	status, reason, retry := http.StatusForbidden, err.Error(), 0
	var re *RejectError
	if errors.As(err, &re) {
		status, reason, retry = re.Status, re.Reason, re.RetryAfter
	}
	opts := []ws.RejectOption{ws.RejectionStatus(status), ws.RejectionReason(reason)}
	if retry > 0 {
		opts = append(opts, ws.RejectionHeader(ws.HandshakeHeaderString("Retry-After: "+strconv.Itoa(retry)+"\r\n")))
	}
	return ws.RejectConnectionError(opts...)
}

// hasUpgrade reports whether the request head carries an Upgrade header
// (any value: gobwas judges it). A request without one is plain HTTP.
func hasUpgrade(head []byte) bool {
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		if len(line) > 8 && bytes.EqualFold(line[:8], []byte("upgrade:")) {
			return true
		}
	}
	return false
}

// respondHTTP answers a plain HTTP request (no Upgrade header) through the
// Handler's HTTPResponder and closes the connection after the response. A
// request that is not a GET, or that the responder declines, gets the 400 a
// failed upgrade gets.
func (c *Conn) respondHTTP(hr HTTPResponder, head []byte) {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	method, rest, _ := bytes.Cut(line, []byte(" "))
	uri, _, _ := bytes.Cut(rest, []byte(" "))
	if !bytes.Equal(method, []byte(http.MethodGet)) || len(uri) == 0 {
		c.reject(http.StatusBadRequest, "not a WebSocket upgrade request")
		return
	}
	req := Request{URI: string(uri), RemoteAddr: c.RemoteAddr()}
	for l := range bytes.SplitSeq(head, []byte("\r\n")) {
		if k, v, ok := bytes.Cut(l, []byte(":")); ok && bytes.EqualFold(k, []byte("Host")) {
			req.Host = string(bytes.TrimSpace(v))
		}
	}
	status, ctype, body, ok := hr.Respond(&req)
	if !ok {
		c.reject(http.StatusBadRequest, "not a WebSocket upgrade request")
		return
	}
	c.srv.stats.httpResponses.Add(1)
	c.state.Store(stateFailed)
	hdr := "HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) +
		"\r\nContent-Type: " + ctype + "\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
	c.mu.Lock()
	_ = c.queueLocked([]byte(hdr), true)
	if len(body) > 0 {
		_ = c.queueLocked(body, true)
	}
	c.flushLocked()
	c.unlock()
	c.shutdownAfterFlush()
}

// reject answers a request the poller itself refuses (before gobwas ran).
func (c *Conn) reject(status int, reason string) {
	c.srv.stats.handshakeFailures.Add(1)
	c.state.Store(stateFailed)
	c.partial = nil
	body := reason + "\n"
	c.sendControl([]byte("HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) +
		"\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nConnection: close\r\n\r\n" + body))
	c.shutdownAfterFlush()
}
