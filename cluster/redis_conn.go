package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// subscribeBatch bounds the pub/sub channel names sent in one
// SUBSCRIBE/UNSUBSCRIBE command.
const subscribeBatch = 1000

// psConn owns one pub/sub connection (one of PubSubConns to Redis, or to
// a primary in cluster mode). The channels it must carry are not kept
// here: they are the broker's subscribed channels whose rchan.conn is this
// psConn (Redis.carried); psConn keeps only what changed since the last
// send and what awaits confirmation. Its run loop is the only reader; a
// sender goroutine per session batches SUBSCRIBE and UNSUBSCRIBE
// commands; a canary goroutine per session proves the path.
//
// mu is innermost: rShard.mu → psConn.mu (Subscribe adds a channel under
// its shard's lock) and rchan.mu → psConn.mu (rehome moves a channel under
// its lock); nothing is locked under mu.
type psConn struct {
	b       *Redis
	addr    string
	index   int // among the PubSubConns connections to addr
	client  *redis.Client
	sharded bool
	canary  string // this connection's canary pub/sub channel

	mu       sync.Mutex
	pend     map[string]bool          // channels added (true) or removed (false) since the last send
	inflight map[string]int           // SUBSCRIBEs sent this session, not confirmed yet
	waiters  map[string]chan struct{} // Subscribe calls waiting for a confirmation
	ps       *redis.PubSub            // current session (nil while down)
	sessions int
	closed   bool

	kick       chan struct{}
	up         atomic.Bool  // subscribed (canary confirmed) in the current session
	resharding atomic.Bool  // a reshard pass is running
	lastCanary atomic.Int64 // unix nanoseconds of the last canary received
}

func newPSConn(b *Redis, addr string, index int, c *redis.Client) *psConn {
	pc := &psConn{
		b:        b,
		addr:     addr,
		index:    index,
		client:   c,
		sharded:  b.cluster != nil,
		pend:     map[string]bool{},
		inflight: map[string]int{},
		waiters:  map[string]chan struct{}{},
		kick:     make(chan struct{}, 1),
	}
	pc.canary = "pushd:canary:{" + b.cfg.NodeID + "." + strconv.Itoa(index) + "}"
	if pc.sharded {
		pc.canary = pc.ownCanary()
	}
	return pc
}

// ownCanary finds a canary channel name whose slot this primary owns.
func (pc *psConn) ownCanary() string {
	ctx, cancel := context.WithTimeout(pc.b.ctx, 5*time.Second)
	defer cancel()
	for i := 0; i < 1000; i++ {
		name := "pushd:canary:{" + pc.b.cfg.NodeID + "." + strconv.Itoa(pc.index) + "-" + strconv.Itoa(i) + "}"
		c, err := pc.b.cluster.MasterForKey(ctx, name)
		if err != nil {
			break
		}
		if c.Options().Addr == pc.addr {
			return name
		}
	}
	return "pushd:canary:{" + pc.b.cfg.NodeID + "." + strconv.Itoa(pc.index) + "@" + pc.addr + "}"
}

// sessionCount returns how many sessions the connection started.
func (pc *psConn) sessionCount() int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.sessions
}

func (pc *psConn) healthy(now time.Time) bool {
	return pc.up.Load() && pc.canaryAge(now) < pc.b.cfg.CanaryTimeout
}

func (pc *psConn) canaryAge(now time.Time) time.Duration {
	last := pc.lastCanary.Load()
	if last == 0 {
		return time.Duration(1<<63 - 1)
	}
	return now.Sub(time.Unix(0, last))
}

// add records that channel became carried by pc (its rchan is in its
// shard and names pc) and returns a channel closed once Redis confirmed the
// subscription (never closed while no session is up: the next session
// subscribes every carried channel and Subscribe's caller times out
// meanwhile). The caller makes the channel carried and calls add in one
// critical section (SubscribeTop under the shard's lock, rehome through
// moveIn under pc.mu): moved relies on a carried channel being pending,
// in flight or confirmed.
func (pc *psConn) add(channel string) <-chan struct{} {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.addLocked(channel)
}

// moveIn makes rc carried by pc (rc.conn) and adds it, under pc.mu (see
// moved); it returns add's confirmation channel. The caller holds rc.mu.
func (pc *psConn) moveIn(rc *rchan) <-chan struct{} {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	rc.conn.Store(pc)
	return pc.addLocked(rc.name)
}

// addLocked is add under pc.mu.
func (pc *psConn) addLocked(channel string) <-chan struct{} {
	w := pc.waiters[channel]
	if w == nil {
		w = make(chan struct{})
		pc.waiters[channel] = w
	}
	pc.pend[channel] = true
	pc.poke()
	return w
}

// unwant records that channel is no longer carried by pc (its rchan left
// its shard or names another connection); UNSUBSCRIBE follows in the next
// batch.
func (pc *psConn) unwant(channel string) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	delete(pc.waiters, channel)
	pc.pend[channel] = false
	pc.poke()
}

func (pc *psConn) poke() {
	select {
	case pc.kick <- struct{}{}:
	default:
	}
}

func (pc *psConn) close() {
	pc.mu.Lock()
	pc.closed = true
	ps := pc.ps
	pc.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
}

// run keeps a session up until ctx ends, reconnecting with capped,
// jittered exponential backoff (reset after a session that lasted).
func (pc *psConn) run(ctx context.Context) {
	backoff := pc.b.cfg.BackoffMin
	for ctx.Err() == nil {
		start := time.Now()
		err := pc.session(ctx)
		wasUp := pc.up.Swap(false)
		if ctx.Err() != nil {
			return
		}
		if wasUp {
			affected := 0
			for range pc.b.carried(pc) {
				affected++
			}
			pc.b.stats.affected.Add(uint64(affected))
			pc.b.log.Warn("redis: pub/sub connection lost", "addr", pc.addr, "conn", pc.index, "channels", affected, "err", err)
		}
		wait := jitter(backoff)
		if wasUp && time.Since(start) > pc.b.cfg.BackoffMax {
			// A session that lasted: try again almost at once (full
			// jitter below BackoffMin spreads the nodes out).
			backoff = pc.b.cfg.BackoffMin
			wait = rand.N(backoff)
		}
		if !sleepCtx(ctx, wait) {
			return
		}
		backoff = min(2*backoff, pc.b.cfg.BackoffMax)
	}
}

// session opens a pub/sub connection, subscribes every wanted channel and
// the canary, and reads until an error.
func (pc *psConn) session(ctx context.Context) error {
	var ps *redis.PubSub
	if pc.sharded {
		ps = pc.client.SSubscribe(ctx)
	} else {
		ps = pc.client.Subscribe(ctx)
	}
	defer ps.Close()
	pc.mu.Lock()
	if pc.closed {
		pc.mu.Unlock()
		return net.ErrClosed
	}
	pc.ps = ps
	pc.sessions++
	first := pc.sessions == 1
	// Every channel carried now is collected below, outside mu, and
	// subscribed first. A channel added or removed from here on is
	// pending again: the sender, started after that first batch, sends it
	// (a channel both collected and added is subscribed twice, which is
	// harmless; one collected and then removed is unsubscribed after it).
	// mu is held for O(1) only: SubscribeTop takes it under a shard's
	// lock, which the pub/sub readers' dispatch needs.
	pc.pend = map[string]bool{}
	pc.mu.Unlock()
	chans := slices.Collect(pc.b.carried(pc))
	names := make([]string, 0, 2*len(chans)+1)
	inflight := make(map[string]int, len(chans))
	for _, ch := range chans {
		raw, durable := pubsubNames(ch)
		names = append(names, raw, durable)
		inflight[ch]++
	}
	// Only this session's reader and sender, not started yet, use
	// inflight.
	pc.mu.Lock()
	pc.inflight = inflight
	pc.mu.Unlock()
	defer func() {
		pc.mu.Lock()
		pc.ps = nil
		pc.mu.Unlock()
	}()
	if !first {
		pc.b.stats.reconnects.Add(1)
		// A restarted Redis without persistence lost the library.
		if err := pc.client.FunctionLoadReplace(ctx, pc.b.lib).Err(); err != nil {
			return err
		}
	}
	names = append(names, pc.canary) // confirmed last: everything before it is subscribed
	if err := pc.send(ctx, ps, true, names); err != nil {
		return err
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errc <- pc.sender(sctx, ps)
		_ = ps.Close()
	}()
	go func() {
		defer wg.Done()
		errc <- pc.canaryLoop(sctx, ps)
		_ = ps.Close()
	}()
	return pc.receive(sctx, ps, first, errc)
}

func (pc *psConn) receive(ctx context.Context, ps *redis.PubSub, first bool, errc <-chan error) error {
	for {
		msg, err := ps.ReceiveTimeout(ctx, time.Second)
		if err != nil {
			var nerr net.Error
			if errors.As(err, &nerr) && nerr.Timeout() && ctx.Err() == nil {
				continue
			}
			var rerr redis.Error
			if errors.As(err, &rerr) && ctx.Err() == nil {
				// An error reply (MOVED: a slot changed owner before we
				// subscribed); the connection itself is fine.
				pc.b.log.Warn("redis: pub/sub error reply", "addr", pc.addr, "err", err)
				if pc.sharded {
					pc.reshard()
				}
				continue
			}
			select {
			case e := <-errc:
				if e != nil {
					return e
				}
			default:
			}
			return err
		}
		switch m := msg.(type) {
		case *redis.Message:
			if m.Channel == pc.canary {
				pc.lastCanary.Store(time.Now().UnixNano())
				continue
			}
			pc.b.dispatch(pc, m.Channel, m.Payload)
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe", "ssubscribe":
				if m.Channel == pc.canary {
					if !first {
						// Before any live message of the new session
						// is read: gaps become recoveries, a counter
						// that went backwards is followed.
						pc.resync(ctx)
					}
					pc.up.Store(true)
					continue
				}
				pc.confirmed(m.Channel)
			case "sunsubscribe":
				pc.moved(m.Channel)
			}
		}
	}
}

// confirmed handles a subscribe confirmation. The durable name is sent
// after the raw one, so its confirmation means both are live.
func (pc *psConn) confirmed(name string) {
	ch, durable, ok := parseName(name)
	if !ok || !durable {
		return
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if n := pc.inflight[ch] - 1; n > 0 {
		pc.inflight[ch] = n
		return
	}
	delete(pc.inflight, ch)
	// A waiter exists only between add and unwant.
	if w := pc.waiters[ch]; w != nil {
		close(w)
		delete(pc.waiters, ch)
	}
}

// moved handles an SUNSUBSCRIBE the server sent on its own: the slot moved
// to another primary (resharding). The channel is subscribed again on the
// new owner.
func (pc *psConn) moved(name string) {
	ch, durable, ok := parseName(name)
	if !ok || !durable {
		return
	}
	rc := pc.b.lookup(ch)
	if rc == nil {
		return
	}
	// A channel becomes carried by pc and pc.add runs in one critical
	// section (the shard's lock in SubscribeTop; pc.mu in rehome, which
	// stores rc.conn under it), so a channel that lookup found and that
	// names pc under pc.mu is pending, in flight or confirmed on pc: if
	// neither pending nor in flight, this SUNSUBSCRIBE is the server's,
	// not the reply to one of ours (replies come in order, before the
	// confirmation of a later SUBSCRIBE).
	pc.mu.Lock()
	_, pending := pc.pend[ch]
	unsolicited := rc.conn.Load() == pc && !pending && pc.inflight[ch] == 0
	pc.mu.Unlock()
	if !unsolicited {
		return
	}
	pc.b.wg.Add(1)
	go func() {
		defer pc.b.wg.Done()
		pc.b.rehome(rc)
	}()
}

// reshard moves every channel whose slot this primary no longer owns to
// its new owner (at most one pass at a time).
func (pc *psConn) reshard() {
	if !pc.resharding.CompareAndSwap(false, true) {
		return
	}
	b := pc.b
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer pc.resharding.Store(false)
		b.cluster.ReloadState(b.ctx)
		for _, ch := range slices.Collect(b.carried(pc)) {
			owner, err := b.connFor(b.ctx, ch)
			if err != nil || owner == pc {
				continue
			}
			if rc := b.lookup(ch); rc != nil {
				b.rehome(rc)
			}
		}
	}()
}

// sender sends the batched SUBSCRIBE/UNSUBSCRIBE commands of the session.
func (pc *psConn) sender(ctx context.Context, ps *redis.PubSub) error {
	spare := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-pc.kick:
		}
		// Take the pending changes under mu (map operations only: see
		// session); the names are built outside it. A SUBSCRIBE is in
		// flight from the moment it leaves pend (see moved).
		pc.mu.Lock()
		pend := pc.pend
		pc.pend = spare
		for ch, on := range pend {
			if on { // the last change was add (the channel is carried)
				pc.inflight[ch]++
			}
		}
		pc.mu.Unlock()
		var subs, unsubs []string
		for ch, on := range pend {
			raw, durable := pubsubNames(ch)
			if on {
				subs = append(subs, raw, durable)
			} else {
				unsubs = append(unsubs, raw, durable)
			}
		}
		if len(pend) <= subscribeBatch {
			clear(pend)
			spare = pend
		} else {
			spare = map[string]bool{} // a storm's big map is not kept
		}
		if err := pc.send(ctx, ps, true, subs); err != nil {
			return err
		}
		if err := pc.send(ctx, ps, false, unsubs); err != nil {
			return err
		}
	}
}

// send writes (UN)SUBSCRIBE commands of at most subscribeBatch names. It
// never sends an empty UNSUBSCRIBE (that would drop every channel). In
// sharded mode every command carries one channel's pair of names: the
// names of one SSUBSCRIBE must share a slot (CROSSSLOT otherwise).
func (pc *psConn) send(ctx context.Context, ps *redis.PubSub, sub bool, names []string) error {
	for len(names) > 0 {
		n := min(len(names), subscribeBatch)
		if pc.sharded {
			n = 1
			if _, durable, ok := parseName(names[0]); ok && !durable && len(names) > 1 {
				n = 2 // raw + durable of one channel
			}
		}
		var err error
		switch {
		case sub && pc.sharded:
			err = ps.SSubscribe(ctx, names[:n]...)
		case sub:
			err = ps.Subscribe(ctx, names[:n]...)
		case pc.sharded:
			err = ps.SUnsubscribe(ctx, names[:n]...)
		default:
			err = ps.Unsubscribe(ctx, names[:n]...)
		}
		if err != nil {
			return err
		}
		names = names[n:]
	}
	return nil
}

// canaryLoop publishes the canary every CanaryInterval and ends the
// session when the canary stays away for three CanaryTimeouts (a
// half-open connection).
func (pc *psConn) canaryLoop(ctx context.Context, ps *redis.PubSub) error {
	t := time.NewTicker(pc.b.cfg.CanaryInterval)
	defer t.Stop()
	started := time.Now()
	for {
		if pc.up.Load() {
			cctx, cancel := context.WithTimeout(ctx, pc.b.cfg.CanaryInterval)
			var err error
			if pc.sharded {
				err = pc.client.SPublish(cctx, pc.canary, "1").Err()
			} else {
				err = pc.client.Publish(cctx, pc.canary, "1").Err()
			}
			cancel()
			if err != nil && ctx.Err() == nil {
				pc.b.log.Debug("redis: canary publish failed", "addr", pc.addr, "err", err)
			}
		}
		now := time.Now()
		if now.Sub(started) > 3*pc.b.cfg.CanaryTimeout && pc.canaryAge(now) > 3*pc.b.cfg.CanaryTimeout {
			return errors.New("cluster: canary lost, reconnecting")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// resync runs after a reconnect, on the reader goroutine before it reads
// the session's first live message: every channel whose counter moved
// while the connection was down starts a recovery from its stream.
func (pc *psConn) resync(ctx context.Context) {
	pc.b.resync(ctx, slices.Collect(pc.b.carried(pc)))
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// sleepCtx sleeps d or until ctx ends; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
