package poller

import (
	"bytes"
	"net/http"
	"strconv"

	"github.com/gobwas/ws"
)

// Streamer is an optional Handler capability: a plain HTTP request (no
// "Upgrade" header) may become a long-lived HTTP response stream
// (Server-Sent Events, newline-delimited JSON over fetch) that lives on
// the event loops exactly like an upgraded WebSocket: no goroutine, the
// same write queue, MaxPendingBytes, WriteTimeout, expiry, drain (Each,
// Close) and connection caps.
//
// Stream runs on the connection's processing goroutine (it may block on
// auth or a broker lookup, like Upgrade). ok false passes the request on
// (to an HTTPResponder, else 400). With StreamResponse.Open false the
// response is written whole (Content-Length, "Connection: close") and the
// connection closed: errors, CORS preflights. With Open true the head and
// Body are written without a length, the connection opens (Handler.Open
// runs, Message never does: inbound bytes are discarded), Heartbeat is
// written every Config.PingInterval, and Send/Queue carry the handler's
// own framing (not WebSocket frames). The stream's body ends when the
// connection closes: Close writes StreamEnd's bytes, then a FIN.
type Streamer interface {
	Stream(c *Conn, r *Request) (resp StreamResponse, ok bool)
	// StreamEnd returns the last bytes of a stream closed with code and
	// reason (nil: none). It runs on whichever goroutine called Close.
	StreamEnd(c *Conn, code ws.StatusCode, reason string) []byte
}

// StreamResponse is a Streamer's answer to a plain HTTP request.
type StreamResponse struct {
	// Status is the HTTP status (200 when zero).
	Status int
	// Header holds header lines, each ending in "\r\n" (Content-Type
	// included). The poller adds Connection: close, Cache-Control:
	// no-cache and, when !Open, Content-Length.
	Header string
	// Body is the whole body when !Open, the stream's first bytes when
	// Open.
	Body []byte
	// Open keeps the connection as a stream.
	Open bool
	// Heartbeat is written to an open stream every PingInterval (nil:
	// none; the peer's liveness is then judged by writes alone).
	Heartbeat []byte
}

// respondStream answers a plain HTTP request through the Handler's
// Streamer. It reports false when the Streamer passed it on.
func (c *Conn) respondStream(st Streamer, head []byte) bool {
	req, ok := parsePlainRequest(head)
	if !ok {
		return false
	}
	req.RemoteAddr = c.RemoteAddr()
	resp, ok := st.Stream(c, &req)
	if !ok {
		return false
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	var b []byte
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\n"...)
	b = append(b, resp.Header...)
	b = append(b, "Cache-Control: no-cache\r\nConnection: close\r\n"...)
	if !resp.Open {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(resp.Body)), 10)
		b = append(b, "\r\n\r\n"...)
		b = append(b, resp.Body...)
		c.srv.stats.httpResponses.Add(1)
		c.state.Store(stateFailed)
		c.sendControl(b)
		c.shutdownAfterFlush()
		return true
	}
	b = append(b, "X-Accel-Buffering: no\r\n\r\n"...)
	b = append(b, resp.Body...)
	c.streaming = true
	if len(resp.Heartbeat) > 0 {
		if c.ext == nil {
			c.ext = &connExt{}
		}
		c.ext.heartbeat = resp.Heartbeat
	}
	if !c.state.CompareAndSwap(stateHandshake, stateOpen) {
		return true
	}
	s := c.srv
	s.stats.upgraded.Add(1)
	s.stats.streams.Add(1)
	c.sendControl(b)
	// pingTick still holds the accept tick: the first heartbeat is due
	// PingInterval after it (the wheel goroutine owns pingTick).
	s.wheel.schedule(c, c.capDue(s.wheel.now.Load()+s.firstPingTicks(c.id)))
	c.opened = true
	s.h.Open(c)
	return true
}

// streamTimer is onTimer's open-state tail for a stream: the heartbeat
// every PingInterval (there is no pong to wait for; a peer that stops
// reading is found by WriteTimeout).
func (c *Conn) streamTimer(now int64) {
	s := c.srv
	if now-c.pingTick >= s.pingTicks {
		c.pingTick = now
		if x := c.ext; x != nil && len(x.heartbeat) > 0 {
			c.sendControl(x.heartbeat)
		}
	}
	s.wheel.schedule(c, c.capDue(c.pingTick+s.pingTicks))
}

// Streaming reports whether c is an HTTP stream (Streamer) rather than a
// WebSocket.
func (c *Conn) Streaming() bool { return c.streaming }

// parsePlainRequest reads the request line and the headers a Streamer
// needs from a complete plain HTTP request head.
func parsePlainRequest(head []byte) (Request, bool) {
	var r Request
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	method, target, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return r, false
	}
	uri, _, _ := bytes.Cut(target, []byte(" "))
	if len(method) == 0 || len(uri) == 0 {
		return r, false
	}
	r.Method, r.URI = string(method), string(uri)
	for l := range bytes.SplitSeq(rest, []byte("\r\n")) {
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Host")):
			r.Host = string(v)
		case bytes.EqualFold(k, []byte("Origin")):
			r.Origin = string(v)
		case bytes.EqualFold(k, []byte("Authorization")):
			r.Authorization = string(v)
		case bytes.EqualFold(k, []byte("Last-Event-ID")):
			r.LastEventID = string(v)
		}
	}
	return r, true
}
