package fanout

import "sync"

// Subscription is one subscriber's membership of one channel, returned by
// Hub.Subscribe and given back to Hub.Unsubscribe and Hub.Resume. It holds
// the per-(subscriber, channel) slow-consumer state.
//
// Every frame queued for a Subscription is queued under its mu, by the one
// delivery task of its channel that is in flight, by Resume, or (before it
// is linked) by Subscribe. So frames of one channel reach the subscriber in
// order, a held (dropped or conflated) frame is never overtaken, and once
// Unsubscribe returns no further frame of the channel is queued.
type Subscription struct {
	ch     *channel
	sub    Subscriber
	format Format
	// deflate: the subscriber negotiated permessage-deflate (immutable).
	deflate bool
	idx     int32 // position in ch.subs; guarded by ch.mu (-1: not linked)

	// minSeq filters the live path: publications of epoch with 0 < Seq <=
	// minSeq were recovered from history or predate the subscription. A
	// publication of another epoch is never filtered: its stream was
	// recreated and counts from 1 again. Written before the Subscription
	// is linked, read-only afterwards.
	minSeq uint64
	epoch  string

	// Guarded by mu. The fields are ordered to keep a Subscription in
	// the 80-byte size class (one per subscriber: issue 18's budget);
	// what only an overloaded subscription needs is behind hold.
	mu      sync.Mutex
	removed bool // unsubscribed: queue nothing more
	dead    bool // the subscriber closed or was disconnected
	held    bool // a gap notice or a conflated frame waits in hold (then non-nil)
	kick    bool // PolicyDisconnect fired: close the subscriber once s.mu is released
	// hold is allocated when something is first held back and kept
	// (emptied) once it was queued: a subscriber slow once tends to be
	// slow again, and reusing it keeps an overloaded delivery from
	// allocating. Unsubscribe drops it.
	hold *holdState
}

// holdState is what a Subscription holds back under overload (s.held).
// Guarded by the Subscription's mu.
type holdState struct {
	gapEpoch string // PolicyDrop: the epoch of gapFrom..gapTo
	gapFrom  uint64 // PolicyDrop: first missing seq
	gapTo    uint64 // PolicyDrop: last missing seq
	latest   []byte // PolicyConflate: the newest frame not yet queued
}

// holdStateLocked returns s.hold, allocating it the first time something is
// held. Lock s.mu must be held.
func (s *Subscription) holdStateLocked() *holdState {
	if s.hold == nil {
		s.hold = &holdState{}
	}
	return s.hold
}

// Channel returns the channel name.
func (s *Subscription) Channel() string { return s.ch.name }

// Subscriber returns the subscriber.
func (s *Subscription) Subscriber() Subscriber { return s.sub }

// deliverLocked queues frame (publication seq) after anything held back,
// under the channel's policy, and reports whether it was queued. unflushed
// counts the frames this caller queued since its last Flush: when the
// queue is full but holds some of them, the budget was used up by this
// very burst, not by a slow reader, so deliverLocked releases s.mu,
// flushes, retakes s.mu and tries once more before applying the policy.
// Lock s.mu must be held (it may be released and retaken).
func (s *Subscription) deliverLocked(frame []byte, pub *Publication, unflushed *int) bool {
	r := s.tryLocked(frame, unflushed)
	if r == resultFull && *unflushed > 0 {
		// Flush may close the connection, whose close hook unsubscribes
		// (takes s.mu): never flush with s.mu held.
		s.mu.Unlock()
		s.sub.Flush()
		s.mu.Lock()
		*unflushed = 0
		r = s.tryLocked(frame, unflushed)
	}
	switch r {
	case resultQueued:
		return true
	case resultFull:
		s.overflowLocked(frame, pub)
	}
	return false
}

// queueResult is what one Queue attempt did.
type queueResult uint8

const (
	resultQueued queueResult = iota
	resultFull
	resultGone // unsubscribed, dead or closed
)

// tryLocked queues the held frame (if any) and then frame. Lock s.mu must
// be held.
func (s *Subscription) tryLocked(frame []byte, unflushed *int) queueResult {
	if s.dead || s.removed {
		return resultGone
	}
	if s.held {
		if !s.flushHeldLocked() {
			if s.dead {
				return resultGone
			}
			return resultFull
		}
		*unflushed++
	}
	switch err := s.sub.Queue(frame); err {
	case nil:
		*unflushed++
		return resultQueued
	case ErrQueueFull:
		return resultFull
	default:
		s.dead = true
		return resultGone
	}
}

// overflowLocked applies the channel's policy to a frame the subscriber's
// queue refused. Lock s.mu must be held.
func (s *Subscription) overflowLocked(frame []byte, pub *Publication) {
	switch s.ch.policy {
	case PolicyDisconnect:
		// Closing may run the connection's close hook synchronously, which
		// unsubscribes (takes s.mu): kickUnlocked closes after the unlock.
		s.dead = true
		s.kick = true
	default:
		s.holdLocked(frame, pub)
	}
}

// holdLocked records a frame the subscriber could not take under PolicyDrop
// or PolicyConflate. A gap names one epoch's range: when the epoch
// changes while a gap is held, the range restarts in the new epoch (the
// client learns of the old epoch's loss from the epoch change itself).
// Lock s.mu must be held.
func (s *Subscription) holdLocked(frame []byte, pub *Publication) {
	st := &s.ch.hub.stats
	if s.ch.policy == PolicyConflate {
		s.holdStateLocked().latest = frame
		s.held = true
		st.conflated.Add(1)
		return
	}
	st.dropped.Add(1)
	if pub.Seq == 0 {
		return // unsequenced: nothing a gap notice could name
	}
	hs := s.holdStateLocked()
	if hs.gapFrom == 0 || hs.gapEpoch != pub.Epoch {
		hs.gapFrom, hs.gapEpoch = pub.Seq, pub.Epoch
	}
	hs.gapTo = pub.Seq
	s.held = true
}

// gapLocked records publications the broker dropped before the hub
// (HandleGap) and tries to queue the notice at once, so it keeps its place
// among the channel's pushes. from == to == 0: unsequenced ones; epoch is
// the epoch from..to count in. Lock s.mu
// must be held.
func (s *Subscription) gapLocked(epoch string, from, to uint64) {
	if s.dead || s.removed || s.ch.policy == PolicyConflate {
		return
	}
	hs := s.holdStateLocked()
	if from != 0 {
		switch {
		case hs.gapFrom == 0 || hs.gapEpoch != epoch:
			// Like holdLocked: a range names one epoch; a new epoch
			// restarts it.
			hs.gapFrom, hs.gapTo, hs.gapEpoch = from, 0, epoch
		case from < hs.gapFrom:
			hs.gapFrom = from
		}
	}
	hs.gapTo = max(hs.gapTo, to)
	s.held = true
	s.flushHeldLocked()
}

// flushHeldLocked tries to queue what was held back: the gap notice, or the
// latest conflated frame. It reports whether the subscriber took it. Lock
// s.mu must be held and s.held set (so s.hold is allocated).
func (s *Subscription) flushHeldLocked() bool {
	hs := s.hold
	var frame []byte
	if s.ch.policy == PolicyConflate {
		frame = hs.latest
	} else {
		frame = encodeGapFor(s.format, s.ch.name, hs.gapEpoch, hs.gapFrom, hs.gapTo)
	}
	switch err := s.sub.Queue(frame); err {
	case nil:
	case ErrQueueFull:
		return false
	default:
		s.dead = true
		return false
	}
	if s.ch.policy == PolicyConflate {
		s.ch.hub.stats.delivered.Add(1)
	} else {
		s.ch.hub.stats.gapNotices.Add(1)
	}
	s.held = false
	*hs = holdState{}
	return true
}

// takeKickLocked reports (once) whether the subscriber must be closed as a
// slow consumer. Lock s.mu must be held.
func (s *Subscription) takeKickLocked() bool {
	k := s.kick
	s.kick = false
	return k
}

// kick closes a slow subscriber with 4001. No hub lock may be held: the
// subscriber's close hook may run synchronously and unsubscribe.
func (h *Hub) kick(sub Subscriber) {
	// Close fails when the subscriber is already closing: count each slow
	// consumer once.
	if sub.Close(StatusSlowConsumer, "slow consumer") == nil {
		h.stats.slowDisconnects.Add(1)
	}
}
