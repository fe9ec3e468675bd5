package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/internal/deadline"
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
	StatusPolicyViolation ws.StatusCode = 1008 // too many refused requests, message rate exceeded
	StatusInternalError   ws.StatusCode = 1011
	StatusTokenExpired    ws.StatusCode = 4003 // the connection's token expired (DESIGN §3)
)

// Authenticator decides an upgrade request's credentials and Origin
// (*auth.Authenticator, or a wrapper that swaps it on reload). A refusal
// is an *auth.Error carrying the HTTP status (401, 403).
type Authenticator interface {
	Check(r auth.Request) (auth.Grant, error)
}

// Verifier is an optional Authenticator capability: it verifies a bare
// token (*auth.Authenticator.Verify). With it, connections whose token
// expires are sent {"op":"expiring"} before exp and may answer with
// {"op":"refresh","token":..}; without it they are closed at exp.
type Verifier interface {
	Verify(token string) (auth.Grant, error)
}

// DefaultRefreshLead is how long before a token's exp the expiring hint
// is sent (at most half the token's remaining life).
const DefaultRefreshLead = 30 * time.Second

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
	// Auth, when set, checks every upgrade request (Origin 403, token 401)
	// and widens what a connection may subscribe to: Public, plus the
	// token's channels patterns, plus its personal channel user:<sub>,
	// which is subscribed at once. A token is closed with 4003 when it
	// expires. nil: no checks, Public alone decides.
	Auth Authenticator
	// MaxMessageRate caps inbound messages per second per connection
	// (token bucket MaxMessageBurst deep); above it the connection is
	// closed with 1008. Zero: no cap.
	MaxMessageRate float64
	// MaxMessageBurst is the message bucket's depth (zero: twice the
	// rate, at least 1).
	MaxMessageBurst int
	// RefreshLead is how long before exp the expiring hint goes out (zero:
	// DefaultRefreshLead; capped at half the token's remaining life).
	RefreshLead time.Duration
	// Ready, when set, gates new connections on the broker path: while it
	// reports false (Redis not reached yet, or lost), upgrades are refused
	// with 503 and Retry-After, before any subscription is attempted, so a
	// client retries (perhaps on another node) instead of getting a
	// connection that cannot receive. nil: always ready.
	Ready func() bool
	// Presence, when set, tracks who is subscribed to the channels that
	// match PresenceChannels (package presence) and serves the presence
	// and presence_stats ops on them. nil: presence ops get err 404.
	Presence         Presence
	PresenceChannels []string
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
	// The message bucket (session.take), in nanoseconds: one message per
	// msgInterval, msgTolerance of credit (MaxMessageBurst-1 intervals).
	msgInterval, msgTolerance int64
	start                     time.Time // monotonic base of the message buckets

	rateCloses atomic.Uint64
	authFails  atomic.Uint64
	forbidden  atomic.Uint64
	notReady   atomic.Uint64
	refreshes  atomic.Uint64
	refreshBad atomic.Uint64
	eventDrops atomic.Uint64

	pidx presenceIndex // subscribers of presence channels (join/leave events)

	users userIndex // authenticated sessions by sub (server API)

	subDeadline *deadline.Shared // subscribeContext's shared contexts
}

// Stats are the handler's security counters.
type Stats struct {
	RateLimitCloses uint64 // connections closed for exceeding MaxMessageRate
	AuthRefusals    uint64 // upgrades refused by Auth (401/403)
	Forbidden       uint64 // subscribe requests refused with 403
	NotReady        uint64 // upgrades refused with 503 while Config.Ready was false
	Refreshes       uint64 // in-band token refreshes accepted
	RefreshRefused  uint64 // refresh ops refused (bad token, other sub)
	EventDrops      uint64 // join/leave events not queued: the subscriber's queue was full
}

// Stats returns a snapshot of the counters.
func (h *Handler) Stats() Stats {
	return Stats{RateLimitCloses: h.rateCloses.Load(), AuthRefusals: h.authFails.Load(), Forbidden: h.forbidden.Load(), NotReady: h.notReady.Load(), Refreshes: h.refreshes.Load(), RefreshRefused: h.refreshBad.Load(), EventDrops: h.eventDrops.Load()}
}

var (
	_ poller.Handler = (*Handler)(nil)
	_ poller.Drainer = (*Handler)(nil)
	_ poller.Expirer = (*Handler)(nil)
)

// New validates cfg and builds a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Hub == nil {
		return nil, fmt.Errorf("%w: Hub is required", ErrConfig)
	}
	if cfg.MaxSubscriptions < 0 || cfg.MaxErrors < 0 || cfg.SubscribeTimeout < 0 || cfg.MaxMessageRate < 0 || cfg.MaxMessageBurst < 0 || cfg.RefreshLead < 0 {
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
	if cfg.RefreshLead == 0 {
		cfg.RefreshLead = DefaultRefreshLead
	}
	h := &Handler{cfg: cfg, hub: cfg.Hub, log: cfg.Logger, pong: textFrame([]byte(`{"op":"pong"}`)), start: time.Now(), subDeadline: deadline.New(cfg.SubscribeTimeout)}
	if cfg.MaxMessageRate > 0 {
		burst := float64(cfg.MaxMessageBurst)
		if burst == 0 {
			burst = max(1, 2*cfg.MaxMessageRate)
		}
		// session.take's GCRA: one message per interval, burst at once.
		h.msgInterval = int64(1e9 / cfg.MaxMessageRate)
		h.msgTolerance = int64((burst - 1) * 1e9 / cfg.MaxMessageRate)
	}
	if h.log == nil {
		h.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return h, nil
}

// Upgrade implements poller.Handler: only GET /ws (404 other paths), then
// Auth (403 Origin, 401 token), then URL subscriptions checked before the
// 101 (400 malformed, 403 not allowed, 429 too many channels). pushd.v1 is
// selected when offered; with no offer, none is echoed (RFC 6455 §4.2.2:
// a server must not pick one the client did not offer), and pushd.v1 is
// still what is spoken. A bearer.<token> entry is never selected: a client
// that sends one must offer pushd.v1 too (400 otherwise).
func (h *Handler) Upgrade(c *poller.Conn, r *poller.Request) (string, error) {
	if h.cfg.Ready != nil && !h.cfg.Ready() {
		h.notReady.Add(1)
		return "", &poller.RejectError{Status: 503, Reason: "broker not ready", RetryAfter: 1}
	}
	u, status, err := parseURL(r.URI, h.cfg.MaxSubscriptions)
	if err != nil {
		return "", &poller.RejectError{Status: status, Reason: err.Error()}
	}
	var g auth.Grant
	if h.cfg.Auth != nil {
		g, err = h.cfg.Auth.Check(auth.Request{URI: r.URI, Origin: r.Origin, Authorization: r.Authorization, Protocols: r.Protocols})
		if err != nil {
			h.authFails.Add(1)
			var ae *auth.Error
			if errors.As(err, &ae) {
				return "", &poller.RejectError{Status: ae.Status, Reason: ae.Reason}
			}
			return "", &poller.RejectError{Status: 401, Reason: "unauthorized"}
		}
		if pc := g.PersonalChannel(); pc != "" && ValidChannel(pc) != nil {
			h.authFails.Add(1)
			return "", &poller.RejectError{Status: 401, Reason: "token sub is not usable in a channel name"}
		}
	}
	s := newSession(h, c, u, g)
	s.deflate = c.Deflate()
	for _, ch := range u.channels {
		if !s.allowed(ch) {
			h.forbidden.Add(1)
			return "", &poller.RejectError{Status: 403, Reason: "channel " + quoteShort(ch) + " is not allowed"}
		}
	}
	offered := slices.Contains(r.Protocols, Subprotocol)
	if g.Source == auth.SourceSubprotocol && !offered {
		return "", &poller.RejectError{Status: 400, Reason: "offer " + Subprotocol + " next to bearer.<token>"}
	}
	if !g.Expires.IsZero() {
		c.SetExpiry(g.Expires, StatusTokenExpired, "token expired")
		s.setExpires(c, g.Expires)
	}
	c.SetValue(s)
	if offered {
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
	if s.subject != "" {
		s.indexed = true
		h.users.add(s)
	}
	// A stream gets a subok event per subscription (its only way to learn
	// positions and whether a resume recovered); a WebSocket's URL
	// subscriptions get none (see the package doc).
	ack := streaming(s.format)
	if pc := s.personalChannel(); pc != "" {
		if !s.subscribe(Request{Op: OpSub, Ch: pc}, ack) {
			return
		}
	}
	u := s.url
	s.url = nil
	if u == nil {
		return
	}
	for _, ch := range u.channels {
		if ch == s.personalChannel() {
			continue
		}
		req := Request{Op: OpSub, Ch: ch, Since: u.since, Epoch: u.epoch}
		if p, ok := u.pos[ch]; ok {
			since := p.since
			req.Since, req.Epoch = &since, p.epoch
		}
		if !s.subscribe(req, ack) {
			return
		}
	}
}

// Message implements poller.Handler: one JSON op per text message, each
// answered. Binary messages are refused with an err reply.
func (h *Handler) Message(c *poller.Conn, op ws.OpCode, data []byte) {
	if s := sessionOf(c); s != nil {
		if h.cfg.MaxMessageRate > 0 && !s.take() {
			h.rateCloses.Add(1)
			_ = s.w.Close(StatusPolicyViolation, "message rate exceeded")
			return
		}
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
	case OpRefresh:
		s.refresh(req.Token)
	case OpPresence, OpPresenceStats:
		s.presenceOp(req)
	}
}

// Expiring implements poller.Expirer: the connection's token expires
// soon; ask the client for a new one ({"op":"expiring","in_ms":N}).
func (h *Handler) Expiring(c *poller.Conn) {
	if s := sessionOf(c); s != nil && s.format == fanout.FormatJSON {
		s.send(expiringFrame(time.Until(time.Unix(0, s.expires.Load()))))
	}
}

// verifier returns the Authenticator's Verifier, nil without one.
func (h *Handler) verifier() Verifier {
	v, _ := h.cfg.Auth.(Verifier)
	return v
}

// hintAt is when the expiring hint for a token expiring at exp goes out.
func (h *Handler) hintAt(exp time.Time) time.Time {
	lead := min(h.cfg.RefreshLead, time.Until(exp)/2)
	return exp.Add(-lead)
}

// Close implements poller.Handler: every subscription of the connection
// is removed.
func (h *Handler) Close(c *poller.Conn, _ ws.StatusCode) {
	if s := sessionOf(c); s != nil {
		if s.indexed {
			h.users.remove(s)
		}
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

// JSON reports whether c speaks pushd.v1 JSON over a WebSocket (it did
// not ask for format=raw and is no HTTP stream).
func (h *Handler) JSON(c *poller.Conn) bool {
	s := sessionOf(c)
	return s != nil && s.format == fanout.FormatJSON
}

func sessionOf(c *poller.Conn) *session {
	s, _ := c.Value().(*session)
	return s
}

// subscribeContext bounds one subscribe's broker calls by
// SubscribeTimeout (up to 1/16 more: the context is shared, see
// deadline.Shared). The CancelFunc is a no-op kept for the callers' shape.
func (h *Handler) subscribeContext() (context.Context, context.CancelFunc) {
	return h.subDeadline.Get(), noCancel
}

func noCancel() {}
