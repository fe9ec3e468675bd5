package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/poller"
)

// Subprotocol is the protocol name negotiated in Sec-WebSocket-Protocol.
const Subprotocol = "pushd.v1"

// Defaults for zero Config fields.
const (
	DefaultMaxSubscriptions = 128
	DefaultMaxErrors        = 100
	DefaultSubscribeTimeout = 5 * time.Second
)

// Close codes the protocol sends.
const (
	StatusPolicyViolation ws.StatusCode = 1008 // too many refused requests
	StatusInternalError   ws.StatusCode = 1011
)

// Config configures a Handler.
type Config struct {
	// Hub is the node's fan-out. Required.
	Hub *fanout.Hub
	// Public lists the channel patterns anyone may subscribe to (globs, see
	// fanout.MatchPattern). nil means every channel ("*"); an empty
	// non-nil list means none.
	Public []string
	// MaxSubscriptions caps one connection's subscriptions (err 429 above).
	MaxSubscriptions int
	// MaxErrors is how many refused requests a connection may make before
	// it is closed with 1008.
	MaxErrors int
	// SubscribeTimeout bounds a subscribe's broker calls (history).
	SubscribeTimeout time.Duration
	// Logger receives the handler's logs; nil discards them.
	Logger *slog.Logger
}

// Handler serves the pushd.v1 protocol on the poller. It implements
// poller.Handler and poller.Drainer.
type Handler struct {
	cfg  Config
	hub  *fanout.Hub
	log  *slog.Logger
	pong []byte
}

var (
	_ poller.Handler = (*Handler)(nil)
	_ poller.Drainer = (*Handler)(nil)
)

// New validates cfg and builds a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Hub == nil {
		return nil, fmt.Errorf("%w: Hub is required", ErrConfig)
	}
	if cfg.MaxSubscriptions < 0 || cfg.MaxErrors < 0 || cfg.SubscribeTimeout < 0 {
		return nil, fmt.Errorf("%w: limits must not be negative", ErrConfig)
	}
	if cfg.Public == nil {
		cfg.Public = []string{"*"}
	}
	if cfg.MaxSubscriptions == 0 {
		cfg.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if cfg.MaxErrors == 0 {
		cfg.MaxErrors = DefaultMaxErrors
	}
	if cfg.SubscribeTimeout == 0 {
		cfg.SubscribeTimeout = DefaultSubscribeTimeout
	}
	h := &Handler{cfg: cfg, hub: cfg.Hub, log: cfg.Logger, pong: textFrame([]byte(`{"op":"pong"}`))}
	if h.log == nil {
		h.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return h, nil
}

// Upgrade implements poller.Handler: only GET /ws, URL subscriptions
// checked before the 101 (400 malformed, 403 not public, 404 other paths,
// 429 too many channels). pushd.v1 is selected when offered; with no
// offer, none is echoed (RFC 6455 §4.2.2: a server must not pick one the
// client did not offer), and pushd.v1 is still what is spoken.
func (h *Handler) Upgrade(c *poller.Conn, r *poller.Request) (string, error) {
	u, status, err := parseURL(r.URI, h.cfg.MaxSubscriptions)
	if err != nil {
		return "", &poller.RejectError{Status: status, Reason: err.Error()}
	}
	for _, ch := range u.channels {
		if !h.public(ch) {
			return "", &poller.RejectError{Status: 403, Reason: "channel " + quoteShort(ch) + " is not public"}
		}
	}
	c.SetValue(newSession(h, c, u))
	if slices.Contains(r.Protocols, Subprotocol) {
		return Subprotocol, nil
	}
	return "", nil
}

func (h *Handler) public(ch string) bool { return fanout.MatchAny(h.cfg.Public, ch) }

// Open implements poller.Handler: it subscribes the URL's channels,
// without subok replies, so a plain new WebSocket(url) + onmessage client
// sees only pushes. Open runs before the connection's first message is
// read, so the reply to any op the client sends proves the URL
// subscriptions are live.
func (h *Handler) Open(c *poller.Conn) {
	s := sessionOf(c)
	if s == nil {
		_ = c.Close(StatusInternalError, "no session")
		return
	}
	u := s.url
	s.url = nil
	if u == nil {
		return
	}
	for _, ch := range u.channels {
		if !s.subscribe(Request{Op: OpSub, Ch: ch, Since: u.since}, false) {
			return
		}
	}
}

// Message implements poller.Handler: one JSON op per text message, each
// answered. Binary messages are refused with an err reply.
func (h *Handler) Message(c *poller.Conn, op ws.OpCode, data []byte) {
	if s := sessionOf(c); s != nil {
		h.handle(s, op, data)
	}
}

// handle runs one client message: exactly one reply (or, past MaxErrors,
// a 1008 close).
func (h *Handler) handle(s *session, op ws.OpCode, data []byte) {
	if op != ws.OpText {
		s.refuse(&RequestError{Code: CodeBadRequest, Reason: "binary messages are not supported; send JSON text"})
		return
	}
	req, err := ParseRequest(data)
	if err != nil {
		var re *RequestError
		if !errors.As(err, &re) {
			re = &RequestError{Code: CodeBadRequest, Reason: err.Error()}
		}
		s.refuse(re)
		return
	}
	switch req.Op {
	case OpPing:
		s.send(h.pong)
	case OpSub:
		s.subscribe(req, true)
	case OpUnsub:
		s.unsubscribe(req.Ch)
	}
}

// Close implements poller.Handler: every subscription of the connection
// is removed.
func (h *Handler) Close(c *poller.Conn, _ ws.StatusCode) {
	if s := sessionOf(c); s != nil {
		s.closeAll()
	}
}

// Drained implements poller.Drainer: subscriptions that held back a gap
// notice or a conflated message get it queued now.
func (h *Handler) Drained(c *poller.Conn) {
	if s := sessionOf(c); s != nil {
		s.resume()
	}
}

func sessionOf(c *poller.Conn) *session {
	s, _ := c.Value().(*session)
	return s
}

// subscribeContext bounds one subscribe's broker calls.
func (h *Handler) subscribeContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
}
