package fanout

import (
	"context"
	"errors"
)

// Defaults of the node-local window (Config.WindowSize, WindowBytes,
// WindowNodeBytes).
const (
	DefaultWindowSize      = 16
	DefaultWindowBytes     = 16 << 10
	DefaultWindowNodeBytes = 64 << 20
)

// winEntry is one publication kept in a channel's window. The channel
// name and the epoch are the channel's, so an entry is 32 bytes plus a
// reference to the payload the hub was handed anyway.
type winEntry struct {
	seq  uint64
	data []byte
}

// window is the ring of a channel's window: the publications
// (c.winBase, c.lastSeq], oldest at head. A channel allocates it when it
// first keeps a publication (an idle channel, or a held one that was never
// published to, has none: its window is empty). Guarded by channel.mu.
type window struct {
	ring  []winEntry
	head  int
	n     int
	bytes int // payload bytes in ring
}

// The node-local window of a channel.
//
// While a channel is held (c.held: it is subscribed at the broker and
// c.lastSeq/c.epoch started from the broker's top read after the
// subscription was confirmed), every publication after (c.epoch,
// c.lastSeq) reaches the hub. The window keeps the latest of them:
// (c.winBase, c.lastSeq] of c.epoch, contiguous, at most WindowSize
// entries and WindowBytes of payload (and all windows of the hub together
// at most WindowNodeBytes). A subscribe to a held channel without since,
// or with a since inside the window, is answered from it with no broker
// round trip (localLocked). Anything the window cannot prove (a since
// before it or beyond the top, another epoch with a partial window, a
// mailbox spanning two epochs) goes to the broker as before.

// windowAddLocked records a sequenced publication handed to the hub. It
// keeps the window contiguous: a publication that does not follow
// c.lastSeq in c.epoch (a gap, or another epoch) restarts it just below
// itself. Lock c.mu must be held; pub.Seq != 0.
func (c *channel) windowAddLocked(pub *Publication) {
	switch {
	case pub.Epoch != c.epoch:
		// The stream was recreated: it counts from 1 again.
		c.epoch, c.lastSeq = pub.Epoch, pub.Seq
		c.windowResetLocked(pub.Seq - 1)
	case pub.Seq <= c.lastSeq:
		return // already handled (a broker duplicate)
	case pub.Seq == c.lastSeq+1:
		c.lastSeq = pub.Seq
	default:
		c.lastSeq = pub.Seq
		c.windowResetLocked(pub.Seq - 1)
	}
	h := c.hub
	if h.cfg.WindowSize <= 0 || len(pub.Data) > h.cfg.WindowBytes {
		c.windowResetLocked(pub.Seq)
		return
	}
	w := c.win
	for w != nil && w.n > 0 && (w.n >= h.cfg.WindowSize || w.bytes+len(pub.Data) > h.cfg.WindowBytes) {
		c.windowEvictLocked()
	}
	if h.winBytes.Add(int64(len(pub.Data))) > h.cfg.WindowNodeBytes {
		// The node's windows are full: keep nothing for this channel
		// (its subscribes read the broker, as without a window).
		h.winBytes.Add(-int64(len(pub.Data)))
		c.windowResetLocked(pub.Seq)
		return
	}
	if w == nil {
		w = &window{}
		c.win = w
	}
	if w.n == len(w.ring) {
		// Grow by doubling up to WindowSize: a channel that published
		// once costs one entry, a busy one stops allocating.
		grown := make([]winEntry, min(max(2*len(w.ring), 2), h.cfg.WindowSize))
		for i := 0; i < w.n; i++ {
			grown[i] = w.ring[(w.head+i)%len(w.ring)]
		}
		w.ring, w.head = grown, 0
	}
	w.ring[(w.head+w.n)%len(w.ring)] = winEntry{seq: pub.Seq, data: pub.Data}
	w.n++
	w.bytes += len(pub.Data)
}

// windowEvictLocked drops the oldest entry; the window must not be
// empty. Lock c.mu must be held.
func (c *channel) windowEvictLocked() {
	w := c.win
	e := &w.ring[w.head]
	c.winBase = e.seq
	w.bytes -= len(e.data)
	c.hub.winBytes.Add(-int64(len(e.data)))
	*e = winEntry{}
	w.head = (w.head + 1) % len(w.ring)
	w.n--
}

// windowResetLocked empties the window; it then covers (base, base].
// Lock c.mu must be held.
func (c *channel) windowResetLocked(base uint64) {
	if w := c.win; w != nil {
		for w.n > 0 {
			c.windowEvictLocked()
		}
		if len(w.ring) > 2 {
			w.ring, w.head = nil, 0 // give a large ring back
		}
	}
	c.winBase = base
}

// localLocked answers a subscribe from the node-local window when it can
// prove the answer: it returns the reply, the publications to queue before
// the live ones (seq > the since, oldest first) and the live filter
// (publications of res.Epoch at or below res.Seq are not delivered live).
// ok is false when the broker must be asked. Lock c.mu must be held.
func (c *channel) localLocked(opts SubscribeOptions) (res SubscribeResult, pubs []Publication, ok bool) {
	// m: the last seq the delivery task will not deliver to a subscriber
	// linked now (the first sequenced publication still in the mailbox
	// will be).
	m := c.lastSeq
	mailbox := c.mailboxLocked()
	for i := range mailbox {
		if p := &mailbox[i]; p.Seq > 0 {
			if p.Epoch != c.epoch {
				return res, nil, false // the mailbox spans two epochs
			}
			m = p.Seq - 1
			break
		}
	}
	if opts.Since == nil {
		if !c.held && c.lastSeq == 0 {
			return res, nil, false
		}
		return SubscribeResult{Seq: m, Epoch: c.epoch, Recovered: true}, nil, true
	}
	if !c.held {
		return res, nil, false
	}
	since, recovered := *opts.Since, true
	if opts.Epoch != "" && opts.Epoch != c.epoch {
		// The client's since counts in another epoch: like the broker,
		// answer recovered:false with the current epoch from its start,
		// which the window has only if it never evicted.
		if c.winBase != 0 {
			return res, nil, false
		}
		since, recovered = 0, false
	}
	if since < c.winBase || since > c.lastSeq {
		return res, nil, false
	}
	if since >= m {
		// Everything after since is still in the mailbox: it goes out
		// live; the filter skips what the client already has.
		return SubscribeResult{Seq: since, Epoch: c.epoch, Recovered: recovered}, nil, true
	}
	for w, i := c.win, 0; w != nil && i < w.n; i++ {
		e := &w.ring[(w.head+i)%len(w.ring)]
		if e.seq > since && e.seq <= m {
			pubs = append(pubs, Publication{Channel: c.name, Epoch: c.epoch, Seq: e.seq, Data: e.data})
		}
	}
	return SubscribeResult{Seq: m, Epoch: c.epoch, Recovered: recovered}, pubs, true
}

// holdLocked makes the channel held from the broker's top (top, epoch),
// read after the subscription was confirmed. Publications handed since
// the subscribe started (windowClearLocked) are kept when they are of
// that epoch; when they are of another one the channel stays unheld and
// its subscribes ask the broker. Lock c.mu must be held.
func (c *channel) holdLocked(top uint64, epoch string) {
	switch {
	case c.epoch == "" && c.lastSeq == 0:
		c.epoch, c.lastSeq = epoch, top
		c.windowResetLocked(top)
	case c.epoch == epoch:
		if top > c.lastSeq {
			c.lastSeq = top
			c.windowResetLocked(top)
		}
	default:
		return
	}
	c.held = true
}

// windowClearLocked forgets the channel's window and top before it is
// subscribed at the broker again. Lock c.mu must be held.
func (c *channel) windowClearLocked() {
	c.held = false
	c.windowResetLocked(0)
	c.win = nil // empty: the next publication kept allocates it again
	c.lastSeq, c.epoch = 0, ""
}

// subscribeTop subscribes the channel at the broker and returns its top
// read once the subscription is confirmed: through TopSubscriber in one
// step, or Subscribe then History.
func (h *Hub) subscribeTop(ctx context.Context, name string) (top uint64, epoch string, err error) {
	if ts, ok := h.cfg.Broker.(TopSubscriber); ok {
		h.stats.brokerReads.Add(1)
		return ts.SubscribeTop(ctx, name)
	}
	if err := h.cfg.Broker.Subscribe(ctx, name); err != nil {
		return 0, "", err
	}
	h.stats.brokerReads.Add(1)
	hr, err := h.cfg.Broker.History(ctx, name, nil)
	if err != nil {
		// Subscribed, but without a top: the channel stays unheld and its
		// subscribes ask the broker.
		return 0, "", errNoTop
	}
	return hr.Top, hr.Epoch, nil
}

// errNoTop reports a History failure right after a successful Subscribe.
var errNoTop = errors.New("fanout: no top")
