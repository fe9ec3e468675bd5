package cluster

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/fanout"
)

// Defaults for zero MemoryConfig fields.
const (
	DefaultHistorySize = 100
	DefaultHistoryTTL  = 5 * time.Minute
)

const memShards = 64

// MemoryConfig configures the memory broker.
type MemoryConfig struct {
	// HistorySize bounds the publications kept per channel (0: the
	// default; negative: keep none).
	HistorySize int
	// HistoryTTL bounds how long a publication is kept (0: the default).
	HistoryTTL time.Duration
	// Now returns the current time (nil: time.Now). Tests inject a clock.
	Now func() time.Time
	// NewEpoch makes a channel's epoch (nil: NewEpoch, random). Tests
	// inject fixed ones.
	NewEpoch func() string
}

// Memory is the embedded single-node broker. Create it with NewMemory,
// attach the hub with Attach before the first Publish, run Run for the
// history sweep.
type Memory struct {
	size  int
	ttl   time.Duration
	now   func() time.Time
	epoch func() string
	seed  maphash.Seed

	handler atomic.Pointer[handlerBox]
	closed  atomic.Bool
	stop    chan struct{}
	once    sync.Once

	shards [memShards]memShard
}

type handlerBox struct{ h fanout.PublicationHandler }

type memShard struct {
	mu       sync.Mutex
	channels map[string]*memChannel
}

// memChannel is one channel's sequence counter and history ring.
type memChannel struct {
	mu    sync.Mutex
	epoch string // made when the channel is created in this process
	top   uint64
	ring  []entry // ring[(head+i)%len(ring)] for i < n, oldest first; grows up to size
	head  int
	n     int
	last  time.Time // time of the last publish
	subs  bool      // a hub subscribed: never forget the counter
	gone  bool      // removed from its shard by the sweep
}

type entry struct {
	pub fanout.Publication
	at  time.Time
}

// NewMemory builds a memory broker.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	if cfg.HistoryTTL < 0 {
		return nil, fmt.Errorf("%w: HistoryTTL must not be negative", ErrConfig)
	}
	m := &Memory{
		size:  cfg.HistorySize,
		ttl:   cfg.HistoryTTL,
		now:   cfg.Now,
		epoch: cfg.NewEpoch,
		seed:  maphash.MakeSeed(),
		stop:  make(chan struct{}),
	}
	if m.size == 0 {
		m.size = DefaultHistorySize
	}
	if m.size < 0 {
		m.size = 0
	}
	if m.ttl == 0 {
		m.ttl = DefaultHistoryTTL
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.epoch == nil {
		m.epoch = NewEpoch
	}
	for i := range m.shards {
		m.shards[i].channels = make(map[string]*memChannel)
	}
	return m, nil
}

// Attach sets the handler that receives every publication (the hub).
func (m *Memory) Attach(h fanout.PublicationHandler) { m.handler.Store(&handlerBox{h}) }

func (m *Memory) shard(ch string) *memShard {
	return &m.shards[maphash.String(m.seed, ch)%memShards]
}

func (m *Memory) channel(name string, create bool) *memChannel {
	sh := m.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.channels[name]
	if c == nil && create {
		c = &memChannel{epoch: m.epoch(), last: m.now()}
		sh.channels[name] = c
	}
	return c
}

// Publish assigns the channel's next sequence number, keeps the
// publication in the history and hands it to the attached handler, in
// order. data is retained: the caller must not modify it afterwards.
func (m *Memory) Publish(_ context.Context, channel string, data []byte) (uint64, error) {
	if m.closed.Load() {
		return 0, ErrClosed
	}
	hb := m.handler.Load()
	if hb == nil {
		return 0, ErrNoHandler
	}
	if a, ok := hb.h.(fanout.Admitter); ok && !a.Admit(channel, len(data)) {
		return 0, ErrOverloaded
	}
	now := m.now()
	c := m.channel(channel, true)
	c.mu.Lock()
	for c.gone {
		// The sweep forgot it between the lookup and the lock.
		c.mu.Unlock()
		c = m.channel(channel, true)
		c.mu.Lock()
	}
	defer c.mu.Unlock()
	c.top++
	pub := fanout.Publication{Channel: channel, Epoch: c.epoch, Seq: c.top, Data: data}
	c.last = now
	if m.size > 0 {
		c.pruneLocked(now, m.ttl)
		c.appendLocked(entry{pub: pub, at: now}, m.size)
	}
	// Under c.mu: the hub sees this channel's publications in sequence
	// order, and History never returns a top the hub has not been handed.
	hb.h.HandlePublication(pub)
	return pub.Seq, nil
}

// appendLocked adds e to the history, evicting the oldest entry at size.
// The ring grows by doubling, so a channel that published once costs one
// small entry, not size. Lock c.mu must be held.
func (c *memChannel) appendLocked(e entry, size int) {
	if c.n == len(c.ring) && len(c.ring) < size {
		grown := make([]entry, min(max(2*len(c.ring), 4), size))
		for i := 0; i < c.n; i++ {
			grown[i] = c.ring[(c.head+i)%len(c.ring)]
		}
		c.ring, c.head = grown, 0
	}
	if c.n == len(c.ring) {
		c.ring[c.head] = e
		c.head = (c.head + 1) % len(c.ring)
		return
	}
	c.ring[(c.head+c.n)%len(c.ring)] = e
	c.n++
}

// pruneLocked drops history entries older than ttl. Lock c.mu must be held.
func (c *memChannel) pruneLocked(now time.Time, ttl time.Duration) {
	for c.n > 0 && now.Sub(c.ring[c.head].at) >= ttl {
		c.ring[c.head] = entry{}
		c.head = (c.head + 1) % len(c.ring)
		c.n--
	}
}

// Subscribe implements fanout.Broker. One node needs no bus subscription,
// but a channel with local subscribers keeps its sequence counter: the
// sweep never forgets it (the hub filters by sequence number).
func (m *Memory) Subscribe(_ context.Context, channel string) error {
	m.setSubscribed(channel, true)
	return nil
}

// Unsubscribe implements fanout.Broker: the channel may be forgotten again
// once its history expired.
func (m *Memory) Unsubscribe(_ context.Context, channel string) error {
	m.setSubscribed(channel, false)
	return nil
}

func (m *Memory) setSubscribed(channel string, on bool) {
	for {
		c := m.channel(channel, on)
		if c == nil {
			return
		}
		c.mu.Lock()
		if !c.gone {
			c.subs = on
			if !on {
				c.last = m.now()
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// History implements fanout.Broker: the retained publications after
// *since (oldest first), the channel's top sequence and its epoch (made
// when this process first published to or subscribed the channel, and
// anew after the sweep forgot it). Recovered is true
// when nothing after *since was lost to the size or TTL bounds; a since
// beyond the top (the channel was forgotten, or the client came from
// another server) is not recovered.
func (m *Memory) History(_ context.Context, channel string, since *uint64) (fanout.HistoryResult, error) {
	c := m.channel(channel, false)
	if c == nil {
		return fanout.HistoryResult{Recovered: since == nil || *since == 0}, nil
	}
	now := m.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	res := fanout.HistoryResult{Top: c.top, Epoch: c.epoch}
	if since == nil {
		res.Recovered = true
		return res, nil
	}
	s := *since
	if s > c.top {
		return res, nil
	}
	c.pruneLocked(now, m.ttl)
	oldest := c.top + 1 // the seq of the oldest retained publication
	if c.n > 0 {
		oldest = c.ring[c.head].pub.Seq
	}
	res.Recovered = s+1 >= oldest
	for i := 0; i < c.n; i++ {
		e := &c.ring[(c.head+i)%len(c.ring)]
		if e.pub.Seq > s {
			res.Pubs = append(res.Pubs, e.pub)
		}
	}
	return res, nil
}

// Run forgets channels whose history is empty and whose last publish is
// older than HistoryTTL, every HistoryTTL/2 (at least every second). A
// forgotten channel starts again at sequence 1; clients resuming with a
// since beyond the top are told recovered:false. Run returns nil when ctx
// ends or Shutdown is called.
func (m *Memory) Run(ctx context.Context) error {
	every := max(m.ttl/2, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.stop:
			return nil
		case <-t.C:
			m.sweep()
		}
	}
}

func (m *Memory) sweep() {
	now := m.now()
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for name, c := range sh.channels {
			c.mu.Lock()
			c.pruneLocked(now, m.ttl)
			if c.n == 0 && !c.subs && now.Sub(c.last) >= m.ttl {
				c.gone = true
				delete(sh.channels, name)
			}
			c.mu.Unlock()
		}
		sh.mu.Unlock()
	}
}

// Channels returns the number of channels with broker state.
func (m *Memory) Channels() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.channels)
		sh.mu.Unlock()
	}
	return n
}

// Shutdown makes Publish fail with ErrClosed and stops Run. It is
// idempotent.
func (m *Memory) Shutdown(ctx context.Context) error {
	m.closed.Store(true)
	m.once.Do(func() { close(m.stop) })
	return ctx.Err()
}

var _ fanout.Broker = (*Memory)(nil)
