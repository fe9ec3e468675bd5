package presence

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/fanout"
)

// Defaults for zero Config fields.
const (
	DefaultHeartbeat = 5 * time.Second
	DefaultFlush     = 100 * time.Millisecond
	DefaultEventRate = 100
	DefaultMaxGrace  = 100_000
	// DefaultPageSize and MaxPageSize bound a Members page.
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// maxBatch bounds the users one Store call carries.
	maxBatch = 1000
)

// Kind is a presence event's kind.
type Kind uint8

const (
	// KindJoin: the user's first connection in the channel (cluster-wide).
	KindJoin Kind = iota + 1
	// KindLeave: the user's last connection left (after the grace period),
	// or the user's node died.
	KindLeave
)

// String returns "join" or "leave".
func (k Kind) String() string {
	switch k {
	case KindJoin:
		return "join"
	case KindLeave:
		return "leave"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Event is a join or leave of a user in a channel.
type Event struct {
	Kind    Kind
	Channel string
	User    string
}

// Page is one page of a channel's members.
type Page struct {
	// Users are user ids (each at most once per page; a user may appear
	// on two pages when the set changes between them, never be skipped
	// when present throughout).
	Users []string
	// Cursor continues the listing; 0 means this was the last page.
	Cursor uint64
}

// Stats counts a channel's presence: cheap at any size.
type Stats struct {
	Conns int64 // connections subscribed, anonymous ones included
	Users int64 // distinct users
}

// Update is one channel's batched change on this node.
type Update struct {
	// Conns is the node's connections in the channel after the change.
	Conns int
	// Add are users newly present on this node; Remove users gone from it.
	Add, Remove []string
}

// Store is where presence lives: MemoryStore in one process,
// cluster.RedisPresence across nodes. Methods are safe for concurrent
// use and bounded by ctx.
type Store interface {
	// Update applies a node's change and reports the cluster-wide
	// transitions: users that were absent everywhere (joined) and users
	// now absent everywhere (left).
	Update(ctx context.Context, ch string, u Update) (joined, left []string, err error)
	// Heartbeat refreshes the node's membership of ch (users: all of
	// them, in batches; reset: drop the node's earlier list first) and
	// reports users that expired (their node stopped heartbeating).
	Heartbeat(ctx context.Context, ch string, conns int, users []string, reset bool) (left []string, err error)
	// Members lists a page of about limit users from cursor (0: start).
	Members(ctx context.Context, ch string, cursor uint64, limit int) (Page, error)
	// Stats counts connections and users.
	Stats(ctx context.Context, ch string) (Stats, error)
}

// Config configures a Tracker.
type Config struct {
	// Store holds the presence state. Required.
	Store Store
	// Heartbeat is how often the node refreshes its members in the Store
	// (a dead node's members expire within two of them).
	Heartbeat time.Duration
	// Flush is how often changed channels are written to the Store.
	Flush time.Duration
	// Grace is how long a user whose last connection left stays present
	// (a reconnect within it emits nothing). Zero: none.
	Grace time.Duration
	// MaxGrace bounds the users held in grace on this node; past it a
	// leave takes effect at once.
	MaxGrace int
	// EventChannels are the channel patterns whose joins and leaves are
	// emitted (fanout.MatchPattern globs); nil: none.
	EventChannels []string
	// EventRate bounds emitted events per second on this node (burst:
	// twice as many, at least 1); the excess is dropped and counted.
	EventRate float64
	// Emit receives events on the Tracker's goroutine; it must not block.
	Emit func(Event)
	// Logger receives store failures (rate-limited); nil discards them.
	Logger *slog.Logger
}

// Tracker is one node's presence: see the package doc.
type Tracker struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	chans    map[string]*pchan
	dirty    map[string]struct{}
	graced   map[string]struct{} // channels with users in grace
	inGrace  int
	tokens   float64
	lastFill time.Time
	lastLog  time.Time

	emitted, dropped, storeErrs atomic.Uint64

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	running  atomic.Bool
}

// pchan is the node's presence in one channel. Guarded by Tracker.mu.
type pchan struct {
	conns int
	users map[string]int       // connections per user
	grace map[string]time.Time // users whose last connection left, until
	add   map[string]struct{}  // not yet written
	rem   map[string]struct{}  // not yet written
	reset bool                 // a Store call failed: rewrite the node's list
}

func newPChan() *pchan {
	return &pchan{users: map[string]int{}, grace: map[string]time.Time{}, add: map[string]struct{}{}, rem: map[string]struct{}{}}
}

// TrackerStats are the Tracker's counters.
type TrackerStats struct {
	Channels    int    // channels with local members or pending changes
	InGrace     int    // users held in grace
	Emitted     uint64 // events emitted
	Dropped     uint64 // events dropped by EventRate
	StoreErrors uint64 // failed Store calls
}

// NewTracker validates cfg.
func NewTracker(cfg Config) (*Tracker, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Store is required", ErrConfig)
	}
	if cfg.Heartbeat < 0 || cfg.Flush < 0 || cfg.Grace < 0 || cfg.MaxGrace < 0 || cfg.EventRate < 0 {
		return nil, fmt.Errorf("%w: durations and limits must not be negative", ErrConfig)
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Flush == 0 {
		cfg.Flush = min(DefaultFlush, cfg.Heartbeat)
	}
	if cfg.MaxGrace == 0 {
		cfg.MaxGrace = DefaultMaxGrace
	}
	if cfg.EventRate == 0 {
		cfg.EventRate = DefaultEventRate
	}
	if cfg.Emit == nil {
		cfg.Emit = func(Event) {}
	}
	t := &Tracker{cfg: cfg, log: cfg.Logger, chans: map[string]*pchan{}, dirty: map[string]struct{}{}, graced: map[string]struct{}{},
		tokens: max(1, 2*cfg.EventRate), lastFill: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if t.log == nil {
		t.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return t, nil
}

// Join records a connection of user ("": anonymous) subscribing to ch.
// It never blocks on I/O.
func (t *Tracker) Join(ch, user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.chans[ch]
	if c == nil {
		c = newPChan()
		t.chans[ch] = c
	}
	c.conns++
	t.dirty[ch] = struct{}{}
	if user == "" {
		return
	}
	c.users[user]++
	if c.users[user] > 1 {
		return
	}
	if _, ok := c.grace[user]; ok {
		// A reconnect within the grace period: the Store still has the
		// user; nothing to write, nothing to emit.
		delete(c.grace, user)
		t.inGrace--
		return
	}
	if _, ok := c.rem[user]; ok {
		delete(c.rem, user) // the removal was not written yet
		return
	}
	c.add[user] = struct{}{}
}

// Leave records the end of a subscription Join recorded.
func (t *Tracker) Leave(ch, user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.chans[ch]
	if c == nil || c.conns == 0 {
		return // unbalanced: ignore rather than go negative
	}
	c.conns--
	t.dirty[ch] = struct{}{}
	if user == "" || c.users[user] == 0 {
		return
	}
	if c.users[user]--; c.users[user] > 0 {
		return
	}
	delete(c.users, user)
	if t.cfg.Grace > 0 && t.inGrace < t.cfg.MaxGrace {
		c.grace[user] = time.Now().Add(t.cfg.Grace)
		t.inGrace++
		t.graced[ch] = struct{}{}
		return
	}
	t.goneLocked(c, user)
}

// goneLocked makes user absent from c on this node. Lock t.mu must be
// held.
func (t *Tracker) goneLocked(c *pchan, user string) {
	if _, ok := c.add[user]; ok {
		delete(c.add, user) // never written: nothing to undo
		return
	}
	c.rem[user] = struct{}{}
}

// Members lists a page of ch's members (limit 0: DefaultPageSize; capped
// at MaxPageSize).
func (t *Tracker) Members(ctx context.Context, ch string, cursor uint64, limit int) (Page, error) {
	if limit <= 0 {
		limit = DefaultPageSize
	}
	return t.cfg.Store.Members(ctx, ch, cursor, min(limit, MaxPageSize))
}

// Stats counts ch's connections and users.
func (t *Tracker) Stats(ctx context.Context, ch string) (Stats, error) {
	return t.cfg.Store.Stats(ctx, ch)
}

// Counters returns the Tracker's counters.
func (t *Tracker) Counters() TrackerStats {
	t.mu.Lock()
	n, g := len(t.chans), t.inGrace
	t.mu.Unlock()
	return TrackerStats{Channels: n, InGrace: g, Emitted: t.emitted.Load(), Dropped: t.dropped.Load(), StoreErrors: t.storeErrs.Load()}
}

// Run writes changes every Flush and heartbeats every Heartbeat until ctx
// ends or Shutdown; then it removes this node's members from the Store
// (bounded by Flush + 2 s) and returns.
func (t *Tracker) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: Run called twice", ErrConfig)
	}
	defer close(t.done)
	flush := time.NewTicker(t.cfg.Flush)
	defer flush.Stop()
	beat := time.NewTicker(t.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			t.leaveAll()
			return nil
		case <-t.stop:
			t.leaveAll()
			return nil
		case now := <-flush.C:
			t.flush(ctx, now, false)
		case <-beat.C:
			t.heartbeat(ctx)
		}
	}
}

// Shutdown stops Run (which removes this node's members) and waits for it
// until ctx ends. Idempotent.
func (t *Tracker) Shutdown(ctx context.Context) error {
	t.stopOnce.Do(func() { close(t.stop) })
	if !t.running.Load() {
		return nil
	}
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leaveAll removes the node's members from the Store: every grace period
// ends and every user still connected leaves (the node is going away).
func (t *Tracker) leaveAll() {
	t.mu.Lock()
	for ch, c := range t.chans {
		for u := range c.users {
			t.goneLocked(c, u)
		}
		clear(c.users)
		c.conns = 0
		t.dirty[ch] = struct{}{}
	}
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.Flush+2*time.Second)
	defer cancel()
	t.flush(ctx, time.Now(), true)
}

type pending struct {
	ch string
	u  Update
}

// flush writes the changed channels; all ends every grace period.
func (t *Tracker) flush(ctx context.Context, now time.Time, all bool) {
	t.mu.Lock()
	for ch := range t.graced {
		c := t.chans[ch]
		for user, until := range c.grace {
			if all || !now.Before(until) {
				delete(c.grace, user)
				t.inGrace--
				t.goneLocked(c, user)
				t.dirty[ch] = struct{}{}
			}
		}
		if len(c.grace) == 0 {
			delete(t.graced, ch)
		}
	}
	work := make([]pending, 0, len(t.dirty))
	for ch := range t.dirty {
		c := t.chans[ch]
		p := pending{ch: ch, u: Update{Conns: c.conns, Add: keys(c.add), Remove: keys(c.rem)}}
		clear(c.add)
		clear(c.rem)
		work = append(work, p)
		if c.conns == 0 && len(c.users) == 0 && len(c.grace) == 0 && !c.reset {
			delete(t.chans, ch)
		}
	}
	clear(t.dirty)
	t.mu.Unlock()
	for i, p := range work {
		err := t.updateAll(ctx, p)
		if err != nil {
			// The Store is unreachable: do not wait a timeout per channel.
			// Every channel of this round is rewritten in full by the next
			// heartbeat that succeeds (its joins are not emitted; its
			// leaves are, when the entries expire).
			for _, q := range work[i:] {
				t.failed(q.ch, err)
			}
			return
		}
	}
}

// updateAll writes one channel's change, in calls of at most maxBatch
// users.
func (t *Tracker) updateAll(ctx context.Context, p pending) error {
	for {
		part := p.u
		part.Add = p.u.Add[:min(len(p.u.Add), maxBatch)]
		part.Remove = p.u.Remove[:min(len(p.u.Remove), maxBatch-len(part.Add))]
		p.u.Add, p.u.Remove = p.u.Add[len(part.Add):], p.u.Remove[len(part.Remove):]
		joined, left, err := t.cfg.Store.Update(ctx, p.ch, part)
		if err != nil {
			return err
		}
		t.emit(p.ch, KindJoin, joined)
		t.emit(p.ch, KindLeave, left)
		if len(p.u.Add)+len(p.u.Remove) == 0 {
			return nil
		}
	}
}

// failed counts a Store failure and marks ch for a full rewrite at the
// next heartbeat (what the failed call meant to write is then implied:
// the node's list is replaced, and stale users expire).
func (t *Tracker) failed(ch string, err error) {
	t.storeErrs.Add(1)
	t.mu.Lock()
	c := t.chans[ch]
	if c == nil {
		// Forgotten after the snapshot: keep it until a heartbeat has
		// unregistered the node from it.
		c = newPChan()
		t.chans[ch] = c
	}
	c.reset = true
	logNow := time.Since(t.lastLog) > 5*time.Second
	if logNow {
		t.lastLog = time.Now()
	}
	t.mu.Unlock()
	if logNow {
		t.log.Warn("presence: store call failed", "channel", ch, "err", err)
	}
}

// heartbeat refreshes every channel the node has members or connections
// in.
func (t *Tracker) heartbeat(ctx context.Context) {
	type beat struct {
		ch    string
		conns int
		users []string
		reset bool
	}
	t.mu.Lock()
	work := make([]beat, 0, len(t.chans))
	for ch, c := range t.chans {
		b := beat{ch: ch, conns: c.conns, reset: c.reset, users: make([]string, 0, len(c.users)+len(c.grace))}
		for u := range c.users {
			b.users = append(b.users, u)
		}
		for u := range c.grace {
			b.users = append(b.users, u)
		}
		c.reset = false
		work = append(work, b)
		if c.conns == 0 && len(c.users) == 0 && len(c.grace) == 0 {
			if _, d := t.dirty[ch]; !d {
				delete(t.chans, ch) // this beat unregisters the node
			}
		}
	}
	t.mu.Unlock()
	for _, b := range work {
		users, reset := b.users, b.reset
		for first := true; first || len(users) > 0; first = false {
			n := min(len(users), maxBatch)
			left, err := t.cfg.Store.Heartbeat(ctx, b.ch, b.conns, users[:n], reset)
			users, reset = users[n:], false
			if err != nil {
				// Unreachable: stop this round (the next one retries).
				t.failed(b.ch, err)
				return
			}
			t.emit(b.ch, KindLeave, left)
		}
	}
}

// emit hands events of users to Emit, within EventRate.
func (t *Tracker) emit(ch string, k Kind, users []string) {
	if len(users) == 0 || !fanout.MatchAny(t.cfg.EventChannels, ch) {
		return
	}
	for _, u := range users {
		if !t.take() {
			t.dropped.Add(1)
			continue
		}
		t.emitted.Add(1)
		t.cfg.Emit(Event{Kind: k, Channel: ch, User: u})
	}
}

// take spends one event token.
func (t *Tracker) take() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	burst := max(1, 2*t.cfg.EventRate)
	t.tokens = min(burst, t.tokens+now.Sub(t.lastFill).Seconds()*t.cfg.EventRate)
	t.lastFill = now
	if t.tokens < 1 {
		return false
	}
	t.tokens--
	return true
}

func keys(m map[string]struct{}) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
