package protocol

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/presence"
)

// Presence is the node's presence (*presence.Tracker). Join and Leave
// must not block; Members and Stats are bounded by ctx.
type Presence interface {
	Join(ch, user string)
	Leave(ch, user string)
	Members(ctx context.Context, ch string, cursor uint64, limit int) (presence.Page, error)
	Stats(ctx context.Context, ch string) (presence.Stats, error)
}

// presenceIndex is the node's subscribers of presence channels, for join
// and leave events. Bounded by the subscriptions.
type presenceIndex struct {
	mu   sync.Mutex
	subs map[string]map[*session]struct{}
}

// presenceOn reports whether ch is a presence channel.
func (h *Handler) presenceOn(ch string) bool {
	return h.cfg.Presence != nil && fanout.MatchAny(h.cfg.PresenceChannels, ch)
}

// presenceLocked records that s subscribed to (join) or left ch, when ch
// is a presence channel. Called with s.mu held, at the moment the
// subscription enters or leaves s.subs, so each is counted exactly once.
func (s *session) presenceLocked(ch string, join bool) {
	h := s.h
	if !h.presenceOn(ch) {
		return
	}
	x := &h.pidx
	x.mu.Lock()
	if join {
		if x.subs == nil {
			x.subs = map[string]map[*session]struct{}{}
		}
		m := x.subs[ch]
		if m == nil {
			m = map[*session]struct{}{}
			x.subs[ch] = m
		}
		m[s] = struct{}{}
	} else if m := x.subs[ch]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(x.subs, ch)
		}
	}
	x.mu.Unlock()
	if join {
		h.cfg.Presence.Join(ch, s.subject)
	} else {
		h.cfg.Presence.Leave(ch, s.subject)
	}
}

// PresenceEvent delivers a join or leave to this node's JSON subscribers
// of ev.Channel: {"op":"join"|"leave","ch":..,"user":..}, encoded once.
// Events are best effort: a subscriber whose queue is full misses it
// (counted), never blocks others. It returns how many got it. Safe from
// any goroutine.
func (h *Handler) PresenceEvent(ev presence.Event) int {
	h.pidx.mu.Lock()
	m := h.pidx.subs[ev.Channel]
	ss := make([]*session, 0, len(m))
	for s := range m {
		ss = append(ss, s)
	}
	h.pidx.mu.Unlock()
	if len(ss) == 0 {
		return 0
	}
	frame := presenceEventFrame(ev)
	n := 0
	for _, s := range ss {
		if s.format == fanout.FormatRaw {
			continue
		}
		if s.w.Queue(frame) != nil {
			h.eventDrops.Add(1)
			continue
		}
		s.w.Flush()
		n++
	}
	return n
}

// presenceOp runs a presence or presence_stats op: the channel must be a
// presence channel (404) the connection may subscribe to (403).
func (s *session) presenceOp(req Request) {
	h := s.h
	switch {
	case !h.presenceOn(req.Ch):
		s.refuse(&RequestError{Code: CodeNotFound, Ch: req.Ch, Reason: "presence is not enabled for this channel"})
		return
	case !s.allowed(req.Ch):
		h.forbidden.Add(1)
		s.refuse(&RequestError{Code: CodeForbidden, Ch: req.Ch, Reason: "channel not allowed"})
		return
	}
	ctx, cancel := h.subscribeContext()
	defer cancel()
	var frame []byte
	if req.Op == OpPresence {
		p, err := h.cfg.Presence.Members(ctx, req.Ch, req.Cursor, req.Limit)
		if err == nil {
			frame = presenceFrame(req.Ch, p)
		} else {
			s.presenceFailed(req.Ch, err)
			return
		}
	} else {
		st, err := h.cfg.Presence.Stats(ctx, req.Ch)
		if err != nil {
			s.presenceFailed(req.Ch, err)
			return
		}
		frame = presenceStatsFrame(req.Ch, st)
	}
	s.send(frame)
}

func (s *session) presenceFailed(ch string, err error) {
	if !errors.Is(err, context.Canceled) {
		s.h.log.Warn("presence read failed", "channel", ch, "err", err)
	}
	s.refuse(&RequestError{Code: CodeInternal, Ch: ch, Reason: "presence unavailable"})
}

// presenceFrame: {"op":"presence","ch":..,"users":[..],"cursor":N}
// (cursor 0: the last page).
func presenceFrame(ch string, p presence.Page) []byte {
	n := 64 + len(ch)
	for _, u := range p.Users {
		n += len(u) + 3
	}
	b := append(make([]byte, 0, n), `{"op":"presence","ch":`...)
	b = fanout.AppendJSONString(b, ch)
	b = append(b, `,"users":[`...)
	for i, u := range p.Users {
		if i > 0 {
			b = append(b, ',')
		}
		b = fanout.AppendJSONString(b, u)
	}
	b = append(b, `],"cursor":`...)
	b = strconv.AppendUint(b, p.Cursor, 10)
	return textFrame(append(b, '}'))
}

// presenceStatsFrame: {"op":"presence_stats","ch":..,"conns":N,"users":N}.
func presenceStatsFrame(ch string, st presence.Stats) []byte {
	b := append(make([]byte, 0, 80+len(ch)), `{"op":"presence_stats","ch":`...)
	b = fanout.AppendJSONString(b, ch)
	b = append(b, `,"conns":`...)
	b = strconv.AppendInt(b, st.Conns, 10)
	b = append(b, `,"users":`...)
	b = strconv.AppendInt(b, st.Users, 10)
	return textFrame(append(b, '}'))
}

// presenceEventFrame: {"op":"join"|"leave","ch":..,"user":..}.
func presenceEventFrame(ev presence.Event) []byte {
	b := append(make([]byte, 0, 40+len(ev.Channel)+len(ev.User)), `{"op":"`...)
	b = append(b, ev.Kind.String()...)
	b = append(b, `","ch":`...)
	b = fanout.AppendJSONString(b, ev.Channel)
	b = append(b, `,"user":`...)
	b = fanout.AppendJSONString(b, ev.User)
	return textFrame(append(b, '}'))
}
