package poller

import (
	"net"

	"github.com/gobwas/ws"
)

// Handler is what the layer above the poller (the pushd.v1 protocol, or
// the echo handler) implements. The poller calls it; it never blocks the
// poller on I/O of its own.
//
// Upgrade, Open, Message and the end of a connection's life are called
// from that connection's processing goroutine, one at a time per
// connection; Close may also run on the goroutine that closed the
// connection. Different connections are processed concurrently.
type Handler interface {
	// Upgrade decides an upgrade request before the 101 response is
	// written. It returns the selected subprotocol ("" for none; it must be
	// one of r.Protocols) or an error, a *RejectError to choose the HTTP
	// status. r is valid only until Upgrade returns.
	Upgrade(c *Conn, r *Request) (protocol string, err error)
	// Open runs after the 101 response was queued: frames sent from here on
	// reach the client after it.
	Open(c *Conn)
	// Message delivers one complete data message (OpText, already UTF-8
	// validated, or OpBinary). data is valid only until Message returns.
	Message(c *Conn, op ws.OpCode, data []byte)
	// Close runs exactly once for every connection that reached Open, after
	// the connection closed. code is the close code the connection ended
	// with (ws.StatusAbnormalClosure when TCP went away without one).
	Close(c *Conn, code ws.StatusCode)
}

// Drainer is an optional Handler capability: Drained runs after a
// connection whose socket was full has written everything it had queued,
// on the goroutine that drained it. A fan-out layer uses it to resume a
// subscriber it had to hold back (conflated or dropped messages).
type Drainer interface {
	Drained(c *Conn)
}

// Expirer is an optional Handler capability: Expiring is called once when
// the time set with Conn.SetExpiryHint comes, on the timing wheel's
// goroutine, so it must not block (queue a frame with Send and return).
// pushd.v1 uses it to ask the client for a fresh token before the
// connection's SetExpiry deadline.
type Expirer interface {
	Expiring(c *Conn)
}

// HTTPResponder is an optional Handler capability: a plain HTTP GET (a
// request without "Upgrade: websocket") to the WebSocket listener is
// passed to Respond instead of being refused with 400, so the public port
// can serve a small static page or script (cmd/pushd's /demo/qr). The
// response is written with Content-Length and "Connection: close", then
// the connection is closed; there is no keep-alive and no request body.
// ok false keeps the 400. It runs on the connection's processing
// goroutine; body must not be modified afterwards.
type HTTPResponder interface {
	Respond(r *Request) (status int, contentType string, body []byte, ok bool)
}

// Request is the upgrade request as the Handler sees it. Strings are copies
// owned by the Request; the Request itself is valid only during Upgrade.
type Request struct {
	// Method is the request method ("GET"); set for plain HTTP requests
	// (Streamer), "" for upgrades (always GET).
	Method string
	// URI is the request target, path and query ("/ws?ch=a").
	URI string
	// Host is the Host header.
	Host string
	// Origin is the Origin header ("" when absent).
	Origin string
	// Authorization is the Authorization header ("" when absent).
	Authorization string
	// LastEventID is the Last-Event-ID header of a plain HTTP request
	// (an EventSource reconnecting), "" when absent.
	LastEventID string
	// Protocols lists the offered subprotocols in the client's order.
	Protocols []string
	// RemoteAddr is the peer's address.
	RemoteAddr net.Addr
}
