package protocol

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/poller"
)

// wire is what a session needs of its connection (*poller.Conn); tests
// drive sessions over a recorder.
type wire interface {
	Send(b []byte) error
	Queue(b []byte) error
	Flush()
	Close(code ws.StatusCode, reason string) error
}

// session is one connection's protocol state. It is the connection's
// fanout.Subscriber. Requests run on the connection's processing
// goroutine; Drained and a slow-consumer close may run elsewhere, so subs
// is guarded by mu and replaced, never modified (copy on write).
type session struct {
	h      *Handler
	w      wire
	url    *urlRequest // URL subscriptions, consumed (set to nil) by Open
	format fanout.Format
	// deflate: the connection negotiated permessage-deflate, so the hub may
	// queue it shared compressed frames (immutable after Upgrade).
	deflate bool
	indexed bool  // in h.users; set in Open, read in Close
	closed  bool  // guarded by mu
	errors  int32 // refused requests; processing goroutine only
	// What the session keeps of its auth.Grant. subject is immutable after
	// newSession (refresh keeps it: a new token must carry the same sub),
	// so the user index (its key) and presence read it from any
	// goroutine; channels (the token's patterns) belong to the processing
	// goroutine; the token's exp is expires below. The fields are ordered
	// to keep a session in the 128-byte size class (one per connection).
	subject  string
	channels []string
	// tat is the message bucket as a GCRA theoretical arrival time, in
	// nanos since h.start (take); processing goroutine only.
	tat int64

	expires atomic.Int64 // token exp in Unix nanos (0: none); read by Expiring on the wheel

	mu   sync.Mutex
	subs []*fanout.Subscription
}

func newSession(h *Handler, w wire, u urlRequest, g auth.Grant) *session {
	s := &session{h: h, w: w, format: u.format, subject: g.Subject, channels: g.Channels}
	if len(u.channels) > 0 {
		s.url = &u
	}
	return s
}

// Queue implements fanout.Subscriber.
func (s *session) Queue(b []byte) error {
	switch err := s.w.Queue(b); err {
	case nil:
		return nil
	case poller.ErrQueueFull:
		return fanout.ErrQueueFull
	default:
		return fanout.ErrClosed
	}
}

// Flush implements fanout.Subscriber.
func (s *session) Flush() { s.w.Flush() }

// Close implements fanout.Subscriber.
func (s *session) Close(code ws.StatusCode, reason string) error { return s.w.Close(code, reason) }

// send queues a reply and flushes; a client that does not read its
// replies is a slow consumer.
func (s *session) send(b []byte) {
	if s.w.Send(s.frame(b)) == poller.ErrQueueFull {
		_ = s.w.Close(fanout.StatusSlowConsumer, "slow consumer")
	}
}

// refuse answers a request with an err reply and closes the connection
// with 1008 after MaxErrors of them.
func (s *session) refuse(e *RequestError) {
	if s.errors < math.MaxInt32 {
		s.errors++
	}
	if int(s.errors) > s.h.cfg.MaxErrors {
		_ = s.w.Close(StatusPolicyViolation, "too many refused requests")
		return
	}
	s.send(errFrame(e))
}

// allowed reports whether the connection may subscribe to ch: a public
// channel, its personal channel, or one its token's patterns match.
func (s *session) allowed(ch string) bool {
	if s.h.public(ch) {
		return true
	}
	if s.subject == "" {
		return false
	}
	return ch == s.personalChannel() || fanout.MatchAny(s.channels, ch)
}

// personalChannel is auth.Grant.PersonalChannel of the session's grant.
func (s *session) personalChannel() string {
	g := auth.Grant{Subject: s.subject}
	return g.PersonalChannel()
}

// expiryWire is what a refresh needs of the connection (*poller.Conn).
type expiryWire interface {
	ExtendExpiry(t time.Time)
	SetExpiryHint(t time.Time)
}

// setExpires records the token's exp and, when tokens can be refreshed
// in band, schedules the expiring hint on w.
func (s *session) setExpires(w expiryWire, exp time.Time) {
	s.expires.Store(exp.UnixNano())
	if s.h.verifier() != nil && s.format != fanout.FormatRaw {
		w.SetExpiryHint(s.h.hintAt(exp))
	}
}

// refresh runs a refresh op: the new token must verify with the same keys
// and carry the same sub; then the expiry moves to its exp and every
// subscription it no longer allows ends with {"op":"unsubscribed"}. A
// refused refresh changes nothing. Processing goroutine only.
func (s *session) refresh(token string) {
	v := s.h.verifier()
	if v == nil || s.subject == "" {
		s.h.refreshBad.Add(1)
		s.refuse(&RequestError{Code: CodeBadRequest, Reason: "refresh needs a connection opened with a token"})
		return
	}
	g, err := v.Verify(token)
	if err != nil {
		s.h.refreshBad.Add(1)
		reason := "invalid token"
		var ae *auth.Error
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		s.refuse(&RequestError{Code: CodeUnauthorized, Reason: reason})
		return
	}
	if g.Subject != s.subject {
		s.h.refreshBad.Add(1)
		s.refuse(&RequestError{Code: CodeForbidden, Reason: "token sub differs from the connection's"})
		return
	}
	// Field by field: Subject is equal and never written after
	// newSession (see session.subject); Source is the first token's;
	// Expires goes to expires below.
	s.channels = g.Channels
	if !g.Expires.IsZero() {
		if w, ok := s.w.(expiryWire); ok {
			w.ExtendExpiry(g.Expires)
			s.setExpires(w, g.Expires)
		} else {
			s.expires.Store(g.Expires.UnixNano())
		}
	}
	s.h.refreshes.Add(1)
	s.send(refreshokFrame(g.Expires))
	s.dropDisallowed("not allowed by the refreshed token")
}

// refresh copies auth.Grant field by field: a new field must be decided
// there (this conversion stops compiling when Grant changes).
var _ = struct {
	Subject  string
	Expires  time.Time
	Channels []string
	Source   auth.Source
}(auth.Grant{})

// dropDisallowed ends every subscription the grant no longer allows, each
// with {"op":"unsubscribed","ch":..,"reason":..} after its last push.
func (s *session) dropDisallowed(reason string) {
	s.mu.Lock()
	var gone []*fanout.Subscription
	keep := make([]*fanout.Subscription, 0, len(s.subs))
	for _, sub := range s.subs {
		if s.allowed(sub.Channel()) {
			keep = append(keep, sub)
		} else {
			gone = append(gone, sub)
			s.presenceLocked(sub.Channel(), false)
		}
	}
	if len(gone) > 0 {
		s.subs = keep
	}
	s.mu.Unlock()
	for _, sub := range gone {
		s.h.hub.Unsubscribe(sub)
		s.send(unsubscribedFrame(sub.Channel(), reason))
	}
}

// take spends one token of the message bucket (MaxMessageRate per
// second, MaxMessageBurst deep); false when it is empty. The bucket is
// kept as GCRA's one timestamp: a message is allowed while the
// theoretical arrival time is at most (burst-1) intervals ahead of now,
// and each allowed one moves it one interval on; a new session starts
// with a full bucket. Processing goroutine only.
func (s *session) take() bool {
	now := int64(time.Since(s.h.start))
	tat := max(s.tat, now)
	if tat-now > s.h.msgTolerance {
		return false
	}
	s.tat = tat + s.h.msgInterval
	return true
}

// find returns the subscription of ch. Lock s.mu must be held.
func (s *session) findLocked(ch string) (int, *fanout.Subscription) {
	for i, sub := range s.subs {
		if sub.Channel() == ch {
			return i, sub
		}
	}
	return -1, nil
}

// subscribe runs a sub request; ack selects the subok reply (the hub
// queues it before any push). It reports false when the connection is
// gone.
func (s *session) subscribe(req Request, ack bool) bool {
	s.mu.Lock()
	closed := s.closed
	_, dup := s.findLocked(req.Ch)
	n := len(s.subs)
	s.mu.Unlock()
	switch {
	case closed:
		return false
	case dup != nil:
		s.refuse(&RequestError{Code: CodeBadRequest, Ch: req.Ch, Reason: "already subscribed"})
		return true
	case !s.allowed(req.Ch):
		s.h.forbidden.Add(1)
		reason := "channel is not public"
		if s.subject != "" {
			reason = "channel not allowed by the token"
		}
		s.refuse(&RequestError{Code: CodeForbidden, Ch: req.Ch, Reason: reason})
		return true
	case n >= s.h.cfg.MaxSubscriptions:
		s.refuse(&RequestError{Code: CodeTooManyRequests, Ch: req.Ch, Reason: "too many subscriptions"})
		return true
	}
	opts := fanout.SubscribeOptions{Format: s.format, Since: req.Since, Epoch: req.Epoch, Deflate: s.deflate}
	if ack {
		ch := req.Ch
		opts.Ack = func(res fanout.SubscribeResult) []byte { return s.frame(subokFrame(ch, res)) }
	}
	ctx, cancel := s.h.subscribeContext()
	sub, _, err := s.h.hub.Subscribe(ctx, s, req.Ch, opts)
	cancel()
	switch {
	case errors.Is(err, fanout.ErrSlowConsumer), errors.Is(err, fanout.ErrClosed):
		return false
	case err != nil:
		s.h.log.Warn("subscribe failed", "channel", req.Ch, "err", err)
		s.refuse(&RequestError{Code: CodeInternal, Ch: req.Ch, Reason: "subscribe failed"})
		return true
	}
	s.mu.Lock()
	if s.closed {
		// The connection closed while the hub linked us: undo.
		s.mu.Unlock()
		s.h.hub.Unsubscribe(sub)
		return false
	}
	s.subs = append(s.subs[:len(s.subs):len(s.subs)], sub)
	s.presenceLocked(req.Ch, true)
	s.mu.Unlock()
	return true
}

// unsubscribe runs an unsub request: once the hub returns, no push of the
// channel is queued any more, so unsubok is the channel's last frame.
func (s *session) unsubscribe(ch string) {
	s.mu.Lock()
	i, sub := s.findLocked(ch)
	if sub != nil {
		subs := make([]*fanout.Subscription, 0, len(s.subs)-1)
		subs = append(subs, s.subs[:i]...)
		s.subs = append(subs, s.subs[i+1:]...)
		s.presenceLocked(ch, false)
	}
	s.mu.Unlock()
	if sub == nil {
		s.refuse(&RequestError{Code: CodeNotFound, Ch: ch, Reason: "not subscribed"})
		return
	}
	s.h.hub.Unsubscribe(sub)
	s.send(unsubokFrame(ch))
}

// closeAll removes every subscription; later subscribes undo themselves.
func (s *session) closeAll() {
	s.mu.Lock()
	subs := s.subs
	s.subs, s.closed = nil, true
	for _, sub := range subs {
		s.presenceLocked(sub.Channel(), false)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		s.h.hub.Unsubscribe(sub)
	}
}

// resume hands held-back frames to the connection after its queue
// drained.
func (s *session) resume() {
	s.mu.Lock()
	subs := s.subs
	s.mu.Unlock()
	queued := false
	for _, sub := range subs {
		if s.h.hub.Resume(sub) {
			queued = true
		}
	}
	if queued {
		s.w.Flush()
	}
}
