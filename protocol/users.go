package protocol

import (
	"sync"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/fanout"
)

// userIndex maps a token's sub to the node's open sessions of that user,
// for the server API (disconnect, subscribe, unsubscribe a user). Only
// authenticated sessions are indexed, between Open and Close.
type userIndex struct {
	mu    sync.Mutex
	users map[string]map[*session]struct{}
}

func (x *userIndex) add(s *session) {
	x.mu.Lock()
	if x.users == nil {
		x.users = make(map[string]map[*session]struct{})
	}
	m := x.users[s.subject]
	if m == nil {
		m = make(map[*session]struct{}, 1)
		x.users[s.subject] = m
	}
	m[s] = struct{}{}
	x.mu.Unlock()
}

func (x *userIndex) remove(s *session) {
	x.mu.Lock()
	if m := x.users[s.subject]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(x.users, s.subject)
		}
	}
	x.mu.Unlock()
}

// sessions returns a snapshot of user's sessions.
func (x *userIndex) sessions(user string) []*session {
	x.mu.Lock()
	defer x.mu.Unlock()
	m := x.users[user]
	out := make([]*session, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	return out
}

// Users is the number of distinct users with an open connection on this
// node.
func (h *Handler) Users() int {
	h.users.mu.Lock()
	defer h.users.mu.Unlock()
	return len(h.users.users)
}

// DisconnectUser closes every connection of user on this node with code
// and reason; with afterMs >= 0 a {"op":"reconnect","after_ms":N} hint is
// sent first (JSON connections). It returns how many were closed. Safe
// from any goroutine.
func (h *Handler) DisconnectUser(user string, code ws.StatusCode, reason string, afterMs int64) int {
	ss := h.users.sessions(user)
	for _, s := range ss {
		if afterMs >= 0 {
			if hint := s.reconnectHint(afterMs); hint != nil {
				_ = s.w.Send(hint)
			}
		}
		_ = s.w.Close(code, reason)
	}
	return len(ss)
}

// SubscribeUser subscribes every connection of user on this node to ch,
// server-side: the backend decides, so the token's patterns are not
// consulted (MaxSubscriptions still is). Each connection gets a subok.
// It returns how many connections were subscribed. Safe from any
// goroutine; it may wait on the broker (history) for SubscribeTimeout.
func (h *Handler) SubscribeUser(user, ch string) int {
	n := 0
	for _, s := range h.users.sessions(user) {
		if s.serverSubscribe(ch) {
			n++
		}
	}
	return n
}

// UnsubscribeUser ends ch's subscription on every connection of user on
// this node, each with {"op":"unsubscribed","ch":..,"reason":..} after its
// last push. It returns how many had it. Safe from any goroutine.
func (h *Handler) UnsubscribeUser(user, ch, reason string) int {
	n := 0
	for _, s := range h.users.sessions(user) {
		if s.serverUnsubscribe(ch, reason) {
			n++
		}
	}
	return n
}

// serverSubscribe links ch for a server API call; false when the
// connection is gone, already has ch, or is at MaxSubscriptions.
func (s *session) serverSubscribe(ch string) bool {
	s.mu.Lock()
	_, dup := s.findLocked(ch)
	full := len(s.subs) >= s.h.cfg.MaxSubscriptions
	closed := s.closed
	s.mu.Unlock()
	if closed || dup != nil || full {
		return false
	}
	opts := fanout.SubscribeOptions{Format: s.format, Deflate: s.deflate}
	if s.format != fanout.FormatRaw {
		opts.Ack = func(res fanout.SubscribeResult) []byte { return subokFrame(ch, res) }
	}
	ctx, cancel := s.h.subscribeContext()
	sub, _, err := s.h.hub.Subscribe(ctx, s, ch, opts)
	cancel()
	if err != nil {
		s.h.log.Warn("server subscribe failed", "channel", ch, "err", err)
		return false
	}
	s.mu.Lock()
	if _, again := s.findLocked(ch); s.closed || again != nil {
		// Closed, or the client subscribed ch meanwhile: undo ours.
		s.mu.Unlock()
		s.h.hub.Unsubscribe(sub)
		return false
	}
	s.subs = append(s.subs[:len(s.subs):len(s.subs)], sub)
	s.presenceLocked(ch, true)
	s.mu.Unlock()
	return true
}

// serverUnsubscribe removes ch for a server API call.
func (s *session) serverUnsubscribe(ch, reason string) bool {
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
		return false
	}
	s.h.hub.Unsubscribe(sub)
	if s.format != fanout.FormatRaw {
		s.send(unsubscribedFrame(ch, reason))
	}
	return true
}
