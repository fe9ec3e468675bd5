package fanout

import (
	"sync"
	"sync/atomic"
	"time"
)

// channel is the hub's state for one channel name.
//
// Ordering: publications enter mailbox in sequence order (brokers call
// HandlePublication in order, never concurrently for one channel). At most
// one delivery task per channel runs at a time (running): it takes the
// whole mailbox as a batch together with the subscriber list, both under
// mu, delivers the batch (in parallel chunks of subscribers when the list
// is long) and only then takes the next batch. So every subscriber gets
// every batch in order, and within a batch every publication in order.
// A subscriber linked under mu receives exactly the publications still in
// the mailbox and all later ones.
type channel struct {
	name string
	hub  *Hub

	// The flags, grouped into one word (and the counters below made
	// int32) to keep a channel in the 192-byte size class: an idle
	// personal channel is one per connection (issue 18's budget). State
	// only a channel in use needs lives behind pointers allocated on
	// first use: dl (the mailbox and the delivery scratch) and win (the
	// window's publications).
	policy     Policy
	shared     bool // a delivery task holds a snapshot of subs
	deflate    bool // DeflateConfig selects this channel (fixed at creation)
	running    bool // a delivery task owns the channel
	held       bool // the node-local window follows the broker's top (below)
	subscribed bool // the broker subscription is up (guarded by brokerMu)

	mu       sync.Mutex
	subs     []*Subscription   // live list; never modified while shared
	nFormat  [numFormats]int32 // subscribers per format in subs
	nDeflate [numFormats]int32 // of nFormat: subscribers that negotiated permessage-deflate
	refs     int32             // linked plus joining subscribers
	paused   int32             // joining subscribers fetching history: hold deliveries
	lastSeq  uint64            // highest Seq handled in epoch
	epoch    string            // the epoch of lastSeq
	idle     int64             // when refs dropped to 0, unix nanoseconds (for the debounced unsubscribe)

	// The node-local window (window.go): held reports that lastSeq and
	// epoch follow the broker's top, the window covers (winBase,
	// lastSeq]; win holds its publications, nil until the first one is
	// kept (an empty window needs only winBase).
	win     *window
	winBase uint64

	// brokerMu serialises broker.Subscribe for this channel; subscribed,
	// subErr and the end of an attempt (subGen) are guarded by it.
	brokerMu sync.Mutex
	subGen   atomic.Uint64 // broker subscribe attempts that failed
	subErr   error         // the last failed attempt's error

	// dl is the mailbox and the delivery scratch, allocated under mu
	// when the channel is first handed a publication (or a gap notice)
	// to deliver (mailLocked): a channel that never receives one (an
	// idle personal channel) does not carry it. Once set it never
	// changes, so the goroutine that claimed running reads it unlocked.
	dl *delivery
}

// delivery is a channel's mailbox and delivery scratch. The mailbox side
// (mailbox, mailBytes, gaps, spare) is guarded by channel.mu; the rest is
// owned by the running delivery task.
type delivery struct {
	mailbox   []Publication // received, not yet taken by a delivery task
	mailBytes int           // payload bytes in mailbox
	gaps      []gapMark     // HandleGap notices due before mailbox[at]
	spare     []Publication // the previous batch's array, reused

	batch   []Publication
	bgaps   []gapMark        // the gap notices of batch
	need    [numFormats]bool // formats present in the batch's subscriber snapshot
	frames  [numFormats][][]byte
	needZ   [numFormats]bool     // compressed frames wanted per format (deflate.go)
	zframes [numFormats][][]byte // compressed frames of batch, per format (deflate.go)
	tasks   []*chunkTask
	wg      sync.WaitGroup
	drainFn func()
}

// gapMark is a gap notice (HandleGap) due before the publication at index
// at of the mailbox or batch (at == len: after all of them).
type gapMark struct {
	at       int
	epoch    string // the epoch from..to count in ("" when both are 0)
	from, to uint64
}

// chunkTask delivers the current batch to subs[lo:hi] on a pool worker.
// Tasks live as long as their channel, so submitting one allocates nothing.
type chunkTask struct {
	c         *channel
	subs      []*Subscription
	delivered uint64
	fn        func()
}

func newChannel(h *Hub, name string) *channel {
	return &channel{name: name, hub: h, policy: h.policyFor(name), deflate: h.deflateFor(name)}
}

// mailLocked returns c.dl, allocating it on the channel's first
// publication or gap notice to deliver. Lock c.mu must be held.
func (c *channel) mailLocked() *delivery {
	if c.dl == nil {
		c.dl = &delivery{}
		c.dl.drainFn = c.drainPooled
	}
	return c.dl
}

// pendingLocked reports whether publications or gap notices wait in the
// mailbox. Lock c.mu must be held.
func (c *channel) pendingLocked() bool {
	return c.dl != nil && (len(c.dl.mailbox) > 0 || len(c.dl.gaps) > 0)
}

// mailboxLocked returns the mailbox (nil before the first publication).
// Lock c.mu must be held.
func (c *channel) mailboxLocked() []Publication {
	if c.dl == nil {
		return nil
	}
	return c.dl.mailbox
}

// enqueueLocked appends pub and reports whether the caller must start a
// delivery task. Lock c.mu must be held.
func (c *channel) enqueueLocked(pub Publication) (start bool) {
	if pub.Seq != 0 {
		c.windowAddLocked(&pub)
	}
	if len(c.subs) == 0 && c.paused == 0 {
		return false // nobody to deliver to, nobody joining
	}
	d := c.mailLocked()
	if len(d.mailbox) >= c.hub.cfg.MaxMailbox {
		// The channel's fan-out cannot keep up with its publishers. Never
		// block them: drop the oldest (subscribers see a seq gap).
		d.mailBytes -= len(d.mailbox[0].Data)
		copy(d.mailbox, d.mailbox[1:])
		d.mailbox[len(d.mailbox)-1] = pub
		for i := range d.gaps {
			d.gaps[i].at = max(d.gaps[i].at-1, 0)
		}
		c.hub.stats.overflowed.Add(1)
	} else {
		d.mailbox = append(d.mailbox, pub)
	}
	d.mailBytes += len(pub.Data)
	return c.startLocked()
}

// startLocked claims the delivery task when work is waiting and nobody
// holds it. Lock c.mu must be held.
func (c *channel) startLocked() bool {
	if c.running || c.paused > 0 || !c.pendingLocked() {
		return false
	}
	c.running = true
	return true
}

// takeLocked moves the mailbox into c.dl.batch and returns the subscriber
// snapshot, or false (and gives up the delivery task) when there is
// nothing to do. Lock c.mu must be held.
func (c *channel) takeLocked() ([]*Subscription, bool) {
	if !c.pendingLocked() || c.paused > 0 {
		c.running = false
		return nil, false
	}
	d := c.dl
	d.batch, d.mailbox, d.spare = d.mailbox, d.spare[:0], nil
	d.bgaps, d.gaps = d.gaps, d.bgaps[:0]
	d.mailBytes = 0
	for f, n := range c.nFormat {
		d.need[f] = n > 0
		d.needZ[f] = c.deflate && c.nDeflate[f] > 0
	}
	c.shared = true
	return c.subs, true
}

// drainInline is run by the publishing goroutine for a small channel: it
// delivers one batch and hands any further work to the pool, so a
// publisher never loops on other publishers' messages.
func (c *channel) drainInline() {
	c.mu.Lock()
	subs, ok := c.takeLocked()
	c.mu.Unlock()
	if !ok {
		return
	}
	c.deliver(subs)
	c.mu.Lock()
	c.finishLocked()
	more := c.pendingLocked() && c.paused == 0
	if !more {
		c.running = false
	}
	c.mu.Unlock()
	if more {
		c.hub.submit(c.dl.drainFn)
	}
}

// drainPooled is the pool task: it delivers batches until the mailbox is
// empty.
func (c *channel) drainPooled() {
	for {
		c.mu.Lock()
		subs, ok := c.takeLocked()
		c.mu.Unlock()
		if !ok {
			return
		}
		c.deliver(subs)
		c.mu.Lock()
		c.finishLocked()
		c.mu.Unlock()
	}
}

// finishLocked recycles the batch array. Lock c.mu must be held.
func (c *channel) finishLocked() {
	c.shared = false // the snapshot is no longer read
	clear(c.dl.batch)
	c.dl.spare = c.dl.batch[:0]
	c.dl.batch = nil
	c.dl.bgaps = c.dl.bgaps[:0]
}

// deliver encodes c.dl.batch once per format that has subscribers and queues
// it to subs, in chunks on the pool when subs is long. Run only by the
// task that holds running.
func (c *channel) deliver(subs []*Subscription) {
	if len(subs) == 0 {
		return
	}
	h := c.hub
	var start time.Time
	if h.cfg.ObserveDelivery != nil {
		start = time.Now()
	}
	c.encode()
	// Chunks of at least ChunkSize, and at most MaxChunks of them: more
	// tasks than cores only add hand-offs (bench fanout at 19,000
	// subscribers on 2 cores: 38 chunks of 512 reached 1.2x the raw write
	// loop, 4-5 chunks 1.8-2.1x).
	size := max(h.cfg.ChunkSize, (len(subs)+h.cfg.MaxChunks-1)/h.cfg.MaxChunks)
	var delivered uint64
	if len(subs) <= size || h.cfg.Pool == nil {
		delivered = c.deliverTo(subs)
	} else {
		n := (len(subs) + size - 1) / size
		for len(c.dl.tasks) < n-1 {
			t := &chunkTask{c: c}
			t.fn = t.run
			c.dl.tasks = append(c.dl.tasks, t)
		}
		c.dl.wg.Add(n - 1)
		for i := 1; i < n; i++ {
			t := c.dl.tasks[i-1]
			t.subs = subs[i*size : min((i+1)*size, len(subs))]
			t.delivered = 0
			if err := h.cfg.Pool.Submit(t.fn); err != nil {
				h.stats.poolFallbacks.Add(1)
				t.fn()
			}
		}
		delivered = c.deliverTo(subs[:size])
		c.dl.wg.Wait()
		for _, t := range c.dl.tasks[:n-1] {
			delivered += t.delivered
			t.subs = nil
		}
	}
	h.stats.delivered.Add(delivered)
	for f := range c.dl.frames {
		clear(c.dl.frames[f])
		c.dl.frames[f] = c.dl.frames[f][:0]
		clear(c.dl.zframes[f])
		c.dl.zframes[f] = c.dl.zframes[f][:0]
	}
	if obs := h.cfg.ObserveDelivery; obs != nil {
		obs(time.Since(start), len(subs))
	}
}

func (t *chunkTask) run() {
	t.delivered = t.c.deliverTo(t.subs)
	t.c.dl.wg.Done()
}

// encode fills c.dl.frames for the formats present in the snapshot.
func (c *channel) encode() {
	need := c.dl.need
	for i := range c.dl.batch {
		pub := &c.dl.batch[i]
		isJSON := (need[FormatJSON] || need[FormatNDJSON]) && payloadIsJSON(pub.Data)
		for f := range numFormats {
			var fr []byte
			if need[f] {
				fr = encodePush(f, pub, isJSON)
			}
			c.dl.frames[f] = append(c.dl.frames[f], fr)
		}
	}
	c.compressBatch()
}

// deliverTo queues the batch to every subscription of subs and flushes each
// subscriber once: a burst leaves in one writev. It returns the number of
// frames queued.
func (c *channel) deliverTo(subs []*Subscription) uint64 {
	var n uint64
	for _, s := range subs {
		frames := c.dl.frames[s.format]
		unflushed := 0
		queued := false
		s.mu.Lock()
		g := 0
		for i := range c.dl.batch {
			for ; g < len(c.dl.bgaps) && c.dl.bgaps[g].at <= i; g++ {
				s.gapLocked(c.dl.bgaps[g].epoch, c.dl.bgaps[g].from, c.dl.bgaps[g].to)
				unflushed++
			}
			pub := &c.dl.batch[i]
			if pub.Seq != 0 && pub.Seq <= s.minSeq && pub.Epoch == s.epoch {
				continue // recovered or predates the subscription
			}
			fr := c.frameFor(s, frames, i)
			if fr == nil {
				// The format appeared after the counts were read: encode
				// for this subscriber only (rare, correct).
				fr = encodePush(s.format, pub, payloadIsJSON(pub.Data))
			}
			if s.deliverLocked(fr, pub, &unflushed) {
				queued = true
				n++
			}
		}
		for ; g < len(c.dl.bgaps); g++ {
			s.gapLocked(c.dl.bgaps[g].epoch, c.dl.bgaps[g].from, c.dl.bgaps[g].to)
			unflushed++
		}
		kick := s.takeKickLocked()
		s.mu.Unlock()
		if kick {
			c.hub.kick(s.sub)
		} else if queued || unflushed > 0 {
			s.sub.Flush()
		}
	}
	return n
}
