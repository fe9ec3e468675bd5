package fanout

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/ants/v2"

	"github.com/pushd/pushd/codec"
)

// numShards is the number of independently locked channel maps.
const numShards = 64

// Defaults for zero Config fields.
const (
	DefaultChunkSize        = 512
	DefaultMaxMailbox       = 1 << 16
	DefaultMaxMailboxBytes  = 8 << 20
	DefaultUnsubscribeDelay = 5 * time.Second
)

// Config configures a Hub. Zero fields select defaults.
type Config struct {
	// Broker serves history and is told about first/last local
	// subscribers. Required.
	Broker Broker
	// Pool runs fan-out for channels with more than ChunkSize subscribers,
	// in chunks of ChunkSize. Build it with ants.WithNonblocking(true) and
	// a panic handler; on ants.ErrPoolOverload (or a released pool) the
	// work runs inline, never dropped. nil runs everything inline.
	Pool *ants.Pool
	// ChunkSize is the smallest number of subscribers one fan-out task
	// serves: channels up to ChunkSize are delivered inline.
	ChunkSize int
	// MaxChunks bounds the parallel tasks of one delivery; large channels
	// get bigger chunks instead of more. Default: 2 × GOMAXPROCS.
	MaxChunks int
	// Policies map channel patterns to slow-consumer policies; the first
	// match wins, PolicyDisconnect when none matches.
	Policies []PolicyRule
	// MaxMailbox bounds the publications waiting for one channel's
	// delivery task; past it the oldest is dropped and counted.
	MaxMailbox int
	// MaxMailboxBytes is the payload bytes a channel's mailbox may hold
	// before Admit refuses new publications (brokers then fail the publish
	// fast: backpressure instead of unbounded memory or loss).
	MaxMailboxBytes int
	// UnsubscribeDelay is how long a channel stays subscribed at the
	// broker after its last local subscriber left.
	UnsubscribeDelay time.Duration
	// Logger receives the hub's logs; nil discards them.
	Logger *slog.Logger
	// WindowSize and WindowBytes bound each channel's node-local window:
	// the latest publications the hub was handed, from which a subscribe
	// with a since inside it is answered without a broker round trip
	// (window.go). WindowNodeBytes bounds the payload bytes all windows
	// keep alive together. 0 selects the defaults; WindowSize < 0 keeps
	// no publications (subscribes without since, or with since at the
	// top, are still answered locally).
	WindowSize      int
	WindowBytes     int
	WindowNodeBytes int64
	// ObserveDelivery, when set, is called once per delivered batch with
	// the time the delivery task took to encode it and queue it to the
	// channel's local subscribers (all chunks), and their number. It runs
	// on the delivering goroutine, so it must be quick and must not block
	// or allocate (a histogram's Observe). nil costs nothing: no clock is
	// read.
	ObserveDelivery func(d time.Duration, subscribers int)
	// Deflate selects the publications compressed (once, for every
	// subscriber that negotiated permessage-deflate); zero: none.
	Deflate DeflateConfig
}

// Hub is the channel → subscribers index of one node and its fan-out.
// All methods are safe for concurrent use. HandlePublication never blocks
// on a subscriber.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	seed   maphash.Seed
	shards [numShards]shard
	stats  counters
	// deflaters compress publications for permessage-deflate (deflate.go).
	deflaters deflaters

	winBytes atomic.Int64 // payload bytes in every channel's window
	closed   atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	running  atomic.Bool
}

type shard struct {
	mu       sync.RWMutex
	channels map[string]*channel
}

type counters struct {
	subscriptions   atomic.Int64
	channels        atomic.Int64
	published       atomic.Uint64
	delivered       atomic.Uint64
	slowDisconnects atomic.Uint64
	dropped         atomic.Uint64
	gapNotices      atomic.Uint64
	conflated       atomic.Uint64
	overflowed      atomic.Uint64
	refused         atomic.Uint64
	poolFallbacks   atomic.Uint64
	localSubscribes atomic.Uint64
	brokerReads     atomic.Uint64
	deflated        atomic.Uint64
	deflateSkipped  atomic.Uint64
	deflateSaved    atomic.Uint64
}

// New validates cfg and builds a Hub.
func New(cfg Config) (*Hub, error) {
	var errs []error
	if cfg.Broker == nil {
		errs = append(errs, errors.New("Broker is required"))
	}
	if cfg.ChunkSize < 0 || cfg.MaxMailbox < 0 || cfg.MaxMailboxBytes < 0 || cfg.UnsubscribeDelay < 0 {
		errs = append(errs, errors.New("ChunkSize, MaxMailbox, MaxMailboxBytes and UnsubscribeDelay must not be negative"))
	}
	if err := cfg.Deflate.validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.MaxChunks <= 0 {
		cfg.MaxChunks = 2 * runtime.GOMAXPROCS(0)
	}
	if cfg.MaxMailbox == 0 {
		cfg.MaxMailbox = DefaultMaxMailbox
	}
	if cfg.MaxMailboxBytes == 0 {
		cfg.MaxMailboxBytes = DefaultMaxMailboxBytes
	}
	if cfg.UnsubscribeDelay == 0 {
		cfg.UnsubscribeDelay = DefaultUnsubscribeDelay
	}
	if cfg.WindowSize == 0 {
		cfg.WindowSize = DefaultWindowSize
	}
	if cfg.WindowBytes <= 0 {
		cfg.WindowBytes = DefaultWindowBytes
	}
	if cfg.WindowNodeBytes <= 0 {
		cfg.WindowNodeBytes = DefaultWindowNodeBytes
	}
	if cfg.Deflate.MinSize == 0 {
		cfg.Deflate.MinSize = DefaultDeflateMinSize
	}
	h := &Hub{
		deflaters: deflaters{level: cfg.Deflate.Level, free: make(chan *codec.Compressor, cfg.MaxChunks)},
		cfg:       cfg,
		log:       cfg.Logger,
		seed:      maphash.MakeSeed(),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if h.log == nil {
		h.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for i := range h.shards {
		h.shards[i].channels = make(map[string]*channel)
	}
	return h, nil
}

func (h *Hub) shard(name string) *shard {
	return &h.shards[maphash.String(h.seed, name)%numShards]
}

func (h *Hub) policyFor(name string) Policy {
	for _, r := range h.cfg.Policies {
		if MatchPattern(r.Pattern, name) {
			return r.Policy
		}
	}
	return PolicyDisconnect
}

// PolicyFor returns the slow-consumer policy of channel name.
func (h *Hub) PolicyFor(name string) Policy { return h.policyFor(name) }

// submit runs fn on the pool, or inline when the pool refuses it.
func (h *Hub) submit(fn func()) {
	if h.cfg.Pool != nil {
		if err := h.cfg.Pool.Submit(fn); err == nil {
			return
		}
	}
	h.stats.poolFallbacks.Add(1)
	fn()
}

// HandlePublication delivers pub to the channel's local subscribers. It
// implements PublicationHandler: brokers call it in sequence order per
// channel. It never waits on a subscriber: a channel with at most
// ChunkSize subscribers is served by the calling goroutine (queue + one
// non-blocking write per subscriber, no handoff), a larger one by a pool
// task while the caller returns at once.
func (h *Hub) HandlePublication(pub Publication) {
	h.stats.published.Add(1)
	sh := h.shard(pub.Channel)
	sh.mu.RLock()
	c := sh.channels[pub.Channel]
	sh.mu.RUnlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	start := c.enqueueLocked(pub)
	small := len(c.subs) <= h.cfg.ChunkSize
	c.mu.Unlock()
	if !start {
		return
	}
	if small {
		c.drainInline()
		return
	}
	h.submit(c.dl.drainFn)
}

// HandleBatch is HandlePublication for several publications of one
// channel (pubs[i].Channel all equal), in order: they enter the channel's
// mailbox together, so a subscriber gets them in one flush (one writev)
// instead of one write each. Brokers that read faster than they deliver
// (the Redis ingest) call it with what queued up for a channel.
func (h *Hub) HandleBatch(pubs []Publication) {
	if len(pubs) == 0 {
		return
	}
	h.stats.published.Add(uint64(len(pubs)))
	sh := h.shard(pubs[0].Channel)
	sh.mu.RLock()
	c := sh.channels[pubs[0].Channel]
	sh.mu.RUnlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	start := false
	for _, pub := range pubs {
		start = c.enqueueLocked(pub) || start
	}
	small := len(c.subs) <= h.cfg.ChunkSize
	c.mu.Unlock()
	if !start {
		return
	}
	if small {
		c.drainInline()
		return
	}
	h.submit(c.dl.drainFn)
}

// HandleGap tells every subscriber of channel that publications were
// dropped before they reached the hub (a broker shedding load): each gets
// {"op":"gap","ch":..,"epoch":E,"from":A,"to":B} in order, after the publications
// handed before the call and before those handed after it. from and to
// name the dropped sequence range of epoch; both are 0 when only unsequenced
// (Seq 0) publications were dropped. A channel whose policy is
// PolicyConflate gets no notice (conflation is not a gap). Like
// HandlePublication it never blocks: a subscriber whose queue is full
// holds the notice and gets it before its next push or on Resume.
func (h *Hub) HandleGap(channel, epoch string, from, to uint64) {
	sh := h.shard(channel)
	sh.mu.RLock()
	c := sh.channels[channel]
	sh.mu.RUnlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	if to != 0 {
		if epoch != c.epoch && epoch != "" {
			c.epoch, c.lastSeq = epoch, to // the stream was recreated
			c.windowResetLocked(to)
		} else if to > c.lastSeq {
			c.lastSeq = to
			c.windowResetLocked(to) // the window must stay contiguous
		}
	}
	if c.policy == PolicyConflate || len(c.subs) == 0 && c.paused == 0 {
		c.mu.Unlock()
		return
	}
	if c.running || c.paused > 0 || len(c.mailboxLocked()) > 0 {
		// Publications before the gap are still on their way: the
		// delivery task sends the notice after them.
		d := c.mailLocked()
		d.gaps = append(d.gaps, gapMark{at: len(d.mailbox), epoch: epoch, from: from, to: to})
		start := c.startLocked()
		small := len(c.subs) <= h.cfg.ChunkSize
		c.mu.Unlock()
		if start {
			if small {
				c.drainInline()
			} else {
				h.submit(c.dl.drainFn)
			}
		}
		return
	}
	c.shared = true
	subs := c.subs
	c.running = true // no delivery task may start while we queue
	c.mu.Unlock()
	for _, s := range subs {
		s.mu.Lock()
		s.gapLocked(epoch, from, to)
		s.mu.Unlock()
		s.sub.Flush()
	}
	c.mu.Lock()
	c.shared = false
	c.running = false
	start := c.startLocked()
	small := len(c.subs) <= h.cfg.ChunkSize
	c.mu.Unlock()
	if start {
		if small {
			c.drainInline()
		} else {
			h.submit(c.dl.drainFn)
		}
	}
}

// Admit implements Admitter: it refuses a publication of size bytes to a
// channel whose mailbox already holds MaxMailboxBytes (its fan-out is
// behind its publishers). An empty mailbox always admits. The check is
// advisory (publishers racing past it overshoot by at most one
// publication each); it never blocks.
func (h *Hub) Admit(channel string, size int) bool {
	sh := h.shard(channel)
	sh.mu.RLock()
	c := sh.channels[channel]
	sh.mu.RUnlock()
	if c == nil {
		return true
	}
	c.mu.Lock()
	ok := len(c.mailboxLocked()) == 0 || c.dl.mailBytes+size <= h.cfg.MaxMailboxBytes
	c.mu.Unlock()
	if !ok {
		h.stats.refused.Add(1)
	}
	return ok
}

// acquire returns the channel, creating it, and counts a joining
// subscriber on it.
func (h *Hub) acquire(name string) *channel {
	sh := h.shard(name)
	sh.mu.Lock()
	c := sh.channels[name]
	if c == nil {
		c = newChannel(h, name)
		sh.channels[name] = c
		h.stats.channels.Add(1)
	}
	c.mu.Lock()
	c.refs++
	c.mu.Unlock()
	sh.mu.Unlock()
	return c
}

// releaseLocked drops one reference. Lock c.mu must be held.
func (c *channel) releaseLocked() {
	c.refs--
	if c.refs == 0 {
		c.idle = time.Now().UnixNano()
	}
}

// Subscribe links sub to channel and returns the subscription. With
// opts.Since it first queues the retained publications after *Since. The
// reply frame built by opts.Ack is queued before any push of the channel:
// the subscription is linked to the live path only after it.
//
// How no publication is lost or duplicated: a live-only subscription of a
// channel the hub has already seen publications of is linked under the
// channel lock with minSeq = the last sequence handled before the
// mailbox; otherwise the channel's deliveries are paused (publishers keep
// appending to the mailbox, never blocked), the broker's history (or only
// its top) is read, the reply and the history after Since are queued, and
// the subscription is linked with minSeq = top; then deliveries resume.
// Every publication after top is then either in the mailbox or not yet
// handled, and the live path skips those at or below minSeq of the same
// epoch (a publication of another epoch belongs to a recreated stream and
// is always delivered).
func (h *Hub) Subscribe(ctx context.Context, sub Subscriber, name string, opts SubscribeOptions) (*Subscription, SubscribeResult, error) {
	if h.closed.Load() {
		return nil, SubscribeResult{}, ErrHubClosed
	}
	if opts.Format >= numFormats {
		return nil, SubscribeResult{}, fmt.Errorf("%w: unknown format %d", ErrConfig, opts.Format)
	}
	c := h.acquire(name)
	s := &Subscription{ch: c, sub: sub, format: opts.Format, deflate: opts.Deflate, idx: -1}
	if err := c.brokerSubscribe(ctx); err != nil {
		c.mu.Lock()
		c.releaseLocked()
		c.mu.Unlock()
		return nil, SubscribeResult{}, err
	}

	c.mu.Lock()
	res, pubs, local := c.localLocked(opts)
	if local && len(pubs) == 0 {
		// The channel is held and nothing needs recovering: no broker
		// round trip, no pause.
		h.stats.localSubscribes.Add(1)
		s.minSeq, s.epoch = res.Seq, res.Epoch
		err := h.ackLocked(s, opts, res)
		if err == nil {
			c.linkLocked(s)
		} else {
			c.releaseLocked()
		}
		c.mu.Unlock()
		if err != nil {
			if errors.Is(err, ErrSlowConsumer) && c.policy == PolicyDisconnect {
				h.kick(sub)
			}
			return nil, res, err
		}
		sub.Flush()
		return s, res, nil
	}
	c.paused++
	c.mu.Unlock()

	var err error
	if local {
		// Served from the window: queued while deliveries are paused, so
		// the mailbox's publications follow them.
		h.stats.localSubscribes.Add(1)
		err = h.queueHistory(s, opts, res, pubs)
	} else {
		res, err = h.recover(ctx, s, opts)
	}

	c.mu.Lock()
	c.paused--
	if err == nil {
		c.linkLocked(s)
	} else {
		c.releaseLocked()
	}
	start := c.startLocked()
	c.mu.Unlock()
	if start {
		h.submit(c.dl.drainFn)
	}
	if err != nil {
		if errors.Is(err, ErrSlowConsumer) && c.policy == PolicyDisconnect {
			h.kick(sub)
		}
		return nil, res, err
	}
	sub.Flush()
	return s, res, nil
}

// recover reads the broker's history (or top) while the channel's
// deliveries are paused and queues the reply and the recovered frames.
// When the client's epoch is not the channel's, its since means nothing
// here: the reply says recovered:false and the history of the current
// epoch follows from its start.
func (h *Hub) recover(ctx context.Context, s *Subscription, opts SubscribeOptions) (SubscribeResult, error) {
	since := opts.Since
	h.stats.brokerReads.Add(1)
	hr, err := h.cfg.Broker.History(ctx, s.ch.name, since)
	if err != nil {
		return SubscribeResult{}, fmt.Errorf("fanout: history of %q: %w", s.ch.name, err)
	}
	recovered := since == nil || hr.Recovered
	if since != nil && opts.Epoch != "" && opts.Epoch != hr.Epoch {
		recovered = false
		if *since != 0 {
			zero := uint64(0)
			since = &zero
			h.stats.brokerReads.Add(1)
			if hr, err = h.cfg.Broker.History(ctx, s.ch.name, since); err != nil {
				return SubscribeResult{}, fmt.Errorf("fanout: history of %q: %w", s.ch.name, err)
			}
		}
	}
	res := SubscribeResult{Seq: hr.Top, Epoch: hr.Epoch, Recovered: recovered}
	pubs := hr.Pubs[:0:0]
	for _, pub := range hr.Pubs {
		if (since == nil || pub.Seq > *since) && pub.Seq <= hr.Top {
			pubs = append(pubs, pub)
		}
	}
	return res, h.queueHistory(s, opts, res, pubs)
}

// queueHistory sets s's live filter to (res.Epoch, res.Seq) and queues
// the reply and pubs (oldest first). The subscription is not linked yet
// and the channel's deliveries are paused.
func (h *Hub) queueHistory(s *Subscription, opts SubscribeOptions, res SubscribeResult, pubs []Publication) error {
	s.minSeq, s.epoch = res.Seq, res.Epoch
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := h.ackLocked(s, opts, res); err != nil {
		return err
	}
	var n uint64
	unflushed := 1 // the reply
	for i := range pubs {
		pub := &pubs[i]
		if s.deliverLocked(encodePush(s.format, pub, payloadIsJSON(pub.Data)), pub, &unflushed) {
			n++
		}
	}
	h.stats.delivered.Add(n)
	if s.takeKickLocked() {
		return ErrSlowConsumer
	}
	if s.dead {
		return ErrClosed
	}
	return nil
}

// ackLocked queues the reply frame. Lock c.mu or s.mu is held (the
// subscription is not linked yet).
func (h *Hub) ackLocked(s *Subscription, opts SubscribeOptions, res SubscribeResult) error {
	if opts.Ack == nil {
		return nil
	}
	switch err := s.sub.Queue(opts.Ack(res)); err {
	case nil:
		return nil
	case ErrQueueFull:
		// The caller closes the subscriber (PolicyDisconnect) once no hub
		// lock is held.
		return ErrSlowConsumer
	default:
		return fmt.Errorf("fanout: subscribe reply: %w", err)
	}
}

// brokerSubscribe tells the broker this node wants the channel, once,
// and makes the channel held (window.go) from the broker's top. Concurrent
// first subscribers coalesce: one waits on brokerMu while another calls
// the broker, then finds the channel subscribed; when that attempt failed,
// the ones that waited for it share its error instead of each calling the
// broker again. The attempt is not canceled with its caller: one client
// giving up never fails the others waiting on it (the broker bounds it).
func (c *channel) brokerSubscribe(ctx context.Context) error {
	gen := c.subGen.Load()
	c.brokerMu.Lock()
	defer c.brokerMu.Unlock()
	if c.subscribed {
		return nil
	}
	if c.subGen.Load() != gen {
		return c.subErr
	}
	c.mu.Lock()
	c.windowClearLocked()
	c.mu.Unlock()
	top, epoch, err := c.hub.subscribeTop(context.WithoutCancel(ctx), c.name)
	if err != nil && !errors.Is(err, errNoTop) {
		c.subErr = fmt.Errorf("fanout: broker subscribe %q: %w", c.name, err)
		c.subGen.Add(1)
		return c.subErr
	}
	c.subscribed = true
	if err == nil {
		c.mu.Lock()
		c.holdLocked(top, epoch)
		c.mu.Unlock()
	}
	return nil
}

// linkLocked adds s to the live list. The list is copied only while a
// delivery task holds a snapshot of it (c.shared); otherwise it is
// appended in place, so N subscribers joining cost O(N), not O(N²). Lock
// c.mu must be held.
func (c *channel) linkLocked(s *Subscription) {
	if c.shared {
		c.subs = append(make([]*Subscription, 0, len(c.subs)+len(c.subs)/4+1), c.subs...)
		c.shared = false
	}
	s.idx = int32(len(c.subs))
	c.subs = append(c.subs, s)
	c.nFormat[s.format]++
	if s.deflate {
		c.nDeflate[s.format]++
	}
	c.hub.stats.subscriptions.Add(1)
}

// unlinkLocked removes s from the live list (swap with the last; order
// among subscribers does not matter). Lock c.mu must be held.
func (c *channel) unlinkLocked(s *Subscription) {
	i := int(s.idx)
	if i < 0 || i >= len(c.subs) || c.subs[i] != s {
		return
	}
	if c.shared {
		c.subs = append(make([]*Subscription, 0, len(c.subs)), c.subs...)
		c.shared = false
	}
	last := len(c.subs) - 1
	c.subs[i] = c.subs[last]
	c.subs[i].idx = int32(i)
	c.subs[last] = nil
	c.subs = c.subs[:last]
	s.idx = -1
	c.nFormat[s.format]--
	if s.deflate {
		c.nDeflate[s.format]--
	}
	c.hub.stats.subscriptions.Add(-1)
}

// Unsubscribe removes s. Once it returns, no further frame of the channel
// is queued to the subscriber. Calling it twice is harmless.
func (h *Hub) Unsubscribe(s *Subscription) {
	if s == nil {
		return
	}
	c := s.ch
	s.mu.Lock()
	was := s.removed
	s.removed = true
	s.held, s.hold = false, nil // nothing held is queued any more
	s.mu.Unlock()
	if was {
		return
	}
	c.mu.Lock()
	c.unlinkLocked(s)
	c.releaseLocked()
	c.mu.Unlock()
}

// Resume queues what a PolicyDrop or PolicyConflate subscription held back
// (gap notice, latest conflated frame) if the subscriber accepts it now. It
// reports whether something was queued; the caller flushes. Call it when
// the subscriber's queue drained.
func (h *Hub) Resume(s *Subscription) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.held || s.dead || s.removed {
		return false
	}
	return s.flushHeldLocked()
}

// Stats returns a snapshot of the counters.
func (h *Hub) Stats() Stats {
	k := &h.stats
	return Stats{
		Subscriptions:   k.subscriptions.Load(),
		Channels:        k.channels.Load(),
		Published:       k.published.Load(),
		Delivered:       k.delivered.Load(),
		SlowDisconnects: k.slowDisconnects.Load(),
		Dropped:         k.dropped.Load(),
		GapNotices:      k.gapNotices.Load(),
		Conflated:       k.conflated.Load(),
		Overflowed:      k.overflowed.Load(),
		Refused:         k.refused.Load(),
		PoolFallbacks:   k.poolFallbacks.Load(),
		LocalSubscribes: k.localSubscribes.Load(),
		BrokerReads:     k.brokerReads.Load(),
		WindowBytes:     h.winBytes.Load(),
		Deflated:        k.deflated.Load(),
		DeflateSkipped:  k.deflateSkipped.Load(),
		DeflateSaved:    k.deflateSaved.Load(),
	}
}

// Run sweeps idle channels every UnsubscribeDelay/2: a channel without
// subscribers for UnsubscribeDelay is forgotten and unsubscribed at the
// broker. It returns nil when ctx ends or Shutdown is called.
func (h *Hub) Run(ctx context.Context) error {
	if !h.running.CompareAndSwap(false, true) {
		return errors.New("fanout: Run called twice")
	}
	defer close(h.done)
	t := time.NewTicker(h.cfg.UnsubscribeDelay / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.stop:
			return nil
		case now := <-t.C:
			h.sweep(ctx, now)
		}
	}
}

// Shutdown stops Run and refuses further subscriptions. It is idempotent
// and returns ctx.Err() if Run did not stop in time.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.closed.Store(true)
	h.stopOnce.Do(func() { close(h.stop) })
	if !h.running.Load() {
		return nil
	}
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sweep forgets channels idle for UnsubscribeDelay. A channel stays in its
// shard while the broker unsubscribes it: a subscriber arriving meanwhile
// finds it, waits on brokerMu and subscribes again after the unsubscribe,
// never before it. Lock order: brokerMu → shard.mu → channel.mu.
func (h *Hub) sweep(ctx context.Context, now time.Time) {
	var idle []*channel
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, c := range sh.channels {
			if c.idleFor(now, h.cfg.UnsubscribeDelay) {
				idle = append(idle, c)
			}
		}
		sh.mu.RUnlock()
	}
	for _, c := range idle {
		h.retire(ctx, c, now)
	}
}

// idleFor reports whether c had no subscriber and no work for d.
func (c *channel) idleFor(now time.Time, d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refs == 0 && !c.running && len(c.mailboxLocked()) == 0 && now.UnixNano()-c.idle >= int64(d)
}

// retire unsubscribes an idle channel at the broker and forgets it unless
// a subscriber came back meanwhile.
func (h *Hub) retire(ctx context.Context, c *channel, now time.Time) {
	c.brokerMu.Lock()
	defer c.brokerMu.Unlock()
	if !c.idleFor(now, h.cfg.UnsubscribeDelay) {
		return
	}
	if c.subscribed {
		uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := h.cfg.Broker.Unsubscribe(uctx, c.name)
		cancel()
		if err != nil {
			if h.log.Enabled(ctx, slog.LevelWarn) {
				h.log.Warn("broker unsubscribe failed", "channel", c.name, "err", err)
			}
			return // try again on the next sweep
		}
		c.subscribed = false
	}
	sh := h.shard(c.name)
	sh.mu.Lock()
	c.mu.Lock()
	c.windowClearLocked() // no longer held; subscribing again reads the top
	if c.refs == 0 && sh.channels[c.name] == c {
		delete(sh.channels, c.name)
		h.stats.channels.Add(-1)
	}
	c.mu.Unlock()
	sh.mu.Unlock()
}

var _ BatchHandler = (*Hub)(nil)
