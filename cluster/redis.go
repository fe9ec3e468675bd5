package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"iter"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/internal/deadline"
)

// Defaults for zero RedisConfig fields.
const (
	DefaultCanaryInterval   = time.Second
	DefaultCanaryTimeout    = 3 * time.Second
	DefaultPublishTimeout   = 2 * time.Second
	DefaultSubscribeTimeout = 5 * time.Second
	DefaultBackoffMin       = 50 * time.Millisecond
	DefaultBackoffMax       = 2 * time.Second
	DefaultRecoverPage      = 1000
)

// RedisConfig configures the Redis broker.
type RedisConfig struct {
	// Client is a *redis.Client (standalone Redis: SUBSCRIBE/PUBLISH) or a
	// *redis.ClusterClient (Redis Cluster: SSUBSCRIBE/SPUBLISH, one
	// pub/sub connection per primary). The caller builds it and closes it
	// after Shutdown. Set MaxRetries to -1: a retried FCALL could publish
	// twice.
	Client redis.UniversalClient
	// HistorySize and HistoryTTL are what Publish asks pushd_publish to
	// keep (0: the defaults; HistorySize < 0 keeps none). They are also the
	// library's defaults for backends that omit them.
	HistorySize int
	HistoryTTL  time.Duration
	// NodeID names this node's canary channels (empty: random).
	NodeID string
	// Logger receives connection state changes (nil: discard).
	Logger *slog.Logger
	// CanaryInterval is how often each pub/sub connection publishes its
	// canary; the broker is unhealthy when a connection's last canary is
	// older than CanaryTimeout.
	CanaryInterval time.Duration
	CanaryTimeout  time.Duration
	// PublishTimeout bounds one Publish (FCALL) and SubscribeTimeout one
	// Subscribe (baseline read + confirmation).
	PublishTimeout   time.Duration
	SubscribeTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered reconnect backoff.
	BackoffMin, BackoffMax time.Duration
	// RecoverPage is how many stream entries one recovery read returns.
	RecoverPage int
	// PubSubConns is how many pub/sub connections carry the channels (per
	// primary in cluster mode); channels are spread over them by hash, so
	// a broken connection touches 1/PubSubConns of them (0:
	// DefaultPubSubConns).
	PubSubConns int
	// IngestWorkers is how many goroutines hand received publications to
	// the hub (0: GOMAXPROCS). Each channel belongs to one of them.
	IngestWorkers int
	// IngestChannelBytes and IngestNodeBytes bound what the ingest queues
	// hold for one channel and for the node (payload plus a small overhead
	// per publication; 0: the defaults). Past either, a channel sheds: its
	// queued publications are conflated (PolicyConflate channels) or the
	// new one is dropped with a gap notice; both are counted.
	IngestChannelBytes int
	IngestNodeBytes    int64
}

// Redis is the broker for a Redis deployment shared by every pushd node.
// Create it with NewRedis, Attach the hub, then Run it. All methods are
// goroutine-safe.
type Redis struct {
	cfg     RedisConfig
	log     *slog.Logger
	client  redis.UniversalClient
	cluster *redis.ClusterClient // nil: standalone
	hist    int                  // history size passed to pushd_publish
	ttlSec  int64
	lib     string

	handler atomic.Pointer[handlerBox]
	seed    maphash.Seed
	chans   [memShards]rShard
	subDL   *deadline.Shared // SubscribeTop's bound when its caller sets none (subscribeContext)

	connMu sync.Mutex
	conns  map[string]*psConn // by node address ("" standalone)

	ctx    context.Context // canceled by Shutdown; parent of every goroutine
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	recSem chan struct{} // bounds concurrent recoveries
	ing    *ingest

	stats redisCounters
}

type rShard struct {
	mu       sync.RWMutex
	channels map[string]*rchan
}

// rchan is one subscribed channel's delivery state: the last sequence
// number handed to the hub and, while a gap is being filled from the
// stream, the publications that arrived meanwhile.
type rchan struct {
	name   string
	worker *ingestWorker // owns iq
	// iq is the channel's ingest queue (guarded by worker.mu), allocated
	// by the first publication received and dropped when the worker finds
	// it empty: an idle channel carries only the pointer.
	iq *iqueue

	// conn is the connection that carries it. It is set before rc is in
	// its shard, then only by rehome (resharding: psConn.moveIn, under
	// rc.mu and the new connection's mu); Redis.carried and psConn.moved
	// read it without rc.mu.
	conn atomic.Pointer[psConn]

	mu      sync.Mutex
	last    uint64       // last durable seq handed to the hub (or the baseline)
	epoch   string       // the epoch last counts in ("": unknown or none yet)
	pending *pendingPubs // what a recovery holds back (nil: nothing)

	// Flags in one word (an rchan is one per subscribed channel: 96 B).
	conflate   bool // the hub's policy for it is PolicyConflate (fixed at creation)
	recovering bool // guarded by mu
	overflow   bool // guarded by mu: pending was full: durable ones were dropped (they are in the stream)
	gone       bool // guarded by mu: unsubscribed
}

// pendingPubs is what a recovering channel holds back, allocated on the
// first message it must hold.
type pendingPubs struct{ pubs []fanout.Publication }

// holdLocked appends pub to rc's pending list. Lock rc.mu must be held.
func (rc *rchan) holdLocked(pub fanout.Publication) {
	if rc.pending == nil {
		rc.pending = &pendingPubs{}
	}
	rc.pending.pubs = append(rc.pending.pubs, pub)
}

// pendingLen returns how many messages rc holds back. Lock rc.mu must be
// held.
func (rc *rchan) pendingLen() int {
	if rc.pending == nil {
		return 0
	}
	return len(rc.pending.pubs)
}

// maxHistoryRead bounds the publications one History call returns.
const maxHistoryRead = 100_000

// maxPending bounds what a recovering channel buffers.
const maxPending = 4096

type redisCounters struct {
	reconnects, publishUnavailable, publishFailed, published         atomic.Uint64
	recoveries, recoveredPubs, lost, duplicates, malformed, unwanted atomic.Uint64
	rawIn, durableIn, resets, affected                               atomic.Uint64
}

// RedisStats is a snapshot of the broker's health and counters.
type RedisStats struct {
	Healthy            bool
	CanaryAge          time.Duration // age of the oldest connection's last canary
	Conns              int           // pub/sub connections (one per primary)
	Channels           int           // subscribed channels
	Reconnects         uint64        // pub/sub sessions started after the first
	Published          uint64        // successful Publish calls
	PublishUnavailable uint64        // Publish calls failed fast while unhealthy
	PublishFailed      uint64        // Publish calls failed by Redis
	RawIn, DurableIn   uint64        // messages received
	Recoveries         uint64        // gap recoveries run
	RecoveredPubs      uint64        // publications delivered from streams by recoveries
	Lost               uint64        // sequence numbers skipped because the stream no longer had them
	Duplicates         uint64        // durable messages dropped as already delivered
	Malformed          uint64        // durable messages that failed DecodeEnvelope
	Unwanted           uint64        // messages for channels no longer subscribed
	Resets             uint64        // channels whose counter went backwards (Redis lost its data)
	// AffectedChannels counts channels whose subscription broke: the
	// channels a pub/sub connection carried when its session ended (each
	// is resynced, and recovered or reported recovered:false).
	AffectedChannels uint64
	// The ingest (received, not yet handed to the hub).
	IngestQueuedBytes int64  // bytes queued on the node now
	ShedChannel       uint64 // publications dropped (gap notice): the channel's queue was over IngestChannelBytes
	ShedNode          uint64 // publications dropped (gap notice): the node's queues were over IngestNodeBytes
	Conflated         uint64 // publications replaced by a newer one of a PolicyConflate channel
	// Overloaded is true while the ingest shed within the last 10 s.
	Overloaded bool
}

// NewRedis builds a Redis broker. It does no I/O: Run loads the function
// library and connects.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: RedisConfig.Client is required", ErrConfig)
	}
	if cfg.HistoryTTL < 0 {
		return nil, fmt.Errorf("%w: HistoryTTL must not be negative", ErrConfig)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.CanaryInterval, DefaultCanaryInterval)
	def(&cfg.CanaryTimeout, DefaultCanaryTimeout)
	def(&cfg.PublishTimeout, DefaultPublishTimeout)
	def(&cfg.SubscribeTimeout, DefaultSubscribeTimeout)
	def(&cfg.BackoffMin, DefaultBackoffMin)
	def(&cfg.BackoffMax, DefaultBackoffMax)
	def(&cfg.HistoryTTL, DefaultHistoryTTL)
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	if cfg.RecoverPage <= 0 {
		cfg.RecoverPage = DefaultRecoverPage
	}
	if cfg.PubSubConns < 0 || cfg.IngestWorkers < 0 || cfg.IngestChannelBytes < 0 || cfg.IngestNodeBytes < 0 {
		return nil, fmt.Errorf("%w: PubSubConns, IngestWorkers, IngestChannelBytes and IngestNodeBytes must not be negative", ErrConfig)
	}
	if cfg.PubSubConns == 0 {
		cfg.PubSubConns = DefaultPubSubConns
	}
	if cfg.IngestWorkers == 0 {
		cfg.IngestWorkers = runtime.GOMAXPROCS(0)
	}
	if cfg.IngestChannelBytes == 0 {
		cfg.IngestChannelBytes = DefaultIngestChannelBytes
	}
	if cfg.IngestNodeBytes == 0 {
		cfg.IngestNodeBytes = DefaultIngestNodeBytes
	}
	if cfg.NodeID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		cfg.NodeID = hex.EncodeToString(b[:])
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hist := cfg.HistorySize
	if hist == 0 {
		hist = DefaultHistorySize
	}
	hist = max(hist, 0)
	b := &Redis{
		cfg:    cfg,
		log:    log,
		client: cfg.Client,
		hist:   hist,
		ttlSec: max(int64(cfg.HistoryTTL/time.Second), 1),
		seed:   maphash.MakeSeed(),
		conns:  map[string]*psConn{},
		recSem: make(chan struct{}, 32),
		subDL:  deadline.New(cfg.SubscribeTimeout),
	}
	b.ing = newIngest(b, cfg.IngestWorkers, cfg.IngestChannelBytes, cfg.IngestNodeBytes)
	b.cluster, _ = cfg.Client.(*redis.ClusterClient)
	b.lib = library(DefaultHistoryTTL, DefaultHistorySize, b.cluster != nil)
	for i := range b.chans {
		b.chans[i].channels = map[string]*rchan{}
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// Attach sets the handler that receives every publication (the hub).
func (b *Redis) Attach(h fanout.PublicationHandler) { b.handler.Store(&handlerBox{h}) }

func (b *Redis) shard(ch string) *rShard { return &b.chans[maphash.String(b.seed, ch)%memShards] }

func (b *Redis) lookup(ch string) *rchan {
	sh := b.shard(ch)
	sh.mu.RLock()
	rc := sh.channels[ch]
	sh.mu.RUnlock()
	return rc
}

func (b *Redis) checkName(ch string) error {
	if ch == "" {
		return fmt.Errorf("%w: empty channel name", ErrChannel)
	}
	if b.cluster != nil && strings.HasPrefix(ch, "}") {
		// pushd:{}...: an empty hash tag, so the channel's keys would
		// spread over several slots.
		return fmt.Errorf("%w: %q starts with '}'", ErrChannel, ch)
	}
	return nil
}

// Run loads the function library on every primary, starts one pub/sub
// connection per primary (each reconnects with capped, jittered backoff and
// resubscribes), keeps the sequence counters of subscribed channels alive,
// and returns nil when ctx ends or Shutdown is called. It fails only when
// the library cannot be loaded before ctx ends.
func (b *Redis) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, b.cancel)
	defer stop()
	for _, w := range b.ing.workers {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.ing.run(b.ctx, w)
		}()
	}
	backoff := b.cfg.BackoffMin
	for {
		err := b.loadLibrary(b.ctx)
		if err == nil {
			break
		}
		var rerr redis.Error
		if errors.As(err, &rerr) && !strings.Contains(err.Error(), "LOADING") {
			return fmt.Errorf("cluster: load function library: %w", err)
		}
		b.log.Warn("redis: cannot load the pushd function library yet", "err", err)
		if !sleepCtx(b.ctx, jitter(backoff)) {
			return nil
		}
		backoff = min(2*backoff, b.cfg.BackoffMax)
	}
	if err := b.startConns(b.ctx); err != nil {
		b.log.Warn("redis: cluster topology", "err", err)
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.keepAlive(b.ctx)
	}()
	<-b.ctx.Done()
	return nil
}

// loadLibrary runs FUNCTION LOAD REPLACE on every primary (idempotent).
func (b *Redis) loadLibrary(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if b.cluster != nil {
		return b.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.FunctionLoadReplace(ctx, b.lib).Err()
		})
	}
	return b.client.FunctionLoadReplace(ctx, b.lib).Err()
}

// startConns starts the pub/sub connections: PubSubConns of them in
// standalone mode, PubSubConns per primary in cluster mode (each carries
// its own canary).
func (b *Redis) startConns(ctx context.Context) error {
	if b.cluster == nil {
		c, ok := b.client.(*redis.Client)
		if !ok {
			return fmt.Errorf("%w: unsupported client %T", ErrConfig, b.client)
		}
		for i := range b.cfg.PubSubConns {
			b.conn("", i, c)
		}
		return nil
	}
	return b.cluster.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		for i := range b.cfg.PubSubConns {
			b.conn(c.Options().Addr, i, c)
		}
		return nil
	})
}

// conn returns the pub/sub connection number i for addr, starting it if
// needed.
func (b *Redis) conn(addr string, i int, c *redis.Client) *psConn {
	key := addr + "#" + strconv.Itoa(i)
	b.connMu.Lock()
	defer b.connMu.Unlock()
	if pc := b.conns[key]; pc != nil {
		return pc
	}
	pc := newPSConn(b, addr, i, c)
	b.conns[key] = pc
	if b.ctx.Err() == nil {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			pc.run(b.ctx)
		}()
	}
	return pc
}

// connIndex spreads channels over the PubSubConns connections of a
// primary.
func (b *Redis) connIndex(ch string) int {
	return int(maphash.String(b.seed, ch) % uint64(b.cfg.PubSubConns))
}

// connFor returns the pub/sub connection that carries ch.
func (b *Redis) connFor(ctx context.Context, ch string) (*psConn, error) {
	if b.cluster == nil {
		c, _ := b.client.(*redis.Client)
		if c == nil {
			return nil, fmt.Errorf("%w: unsupported client %T", ErrConfig, b.client)
		}
		return b.conn("", b.connIndex(ch), c), nil
	}
	c, err := b.cluster.MasterForKey(ctx, rawName(ch))
	if err != nil {
		return nil, fmt.Errorf("%w: slot owner of %q: %w", ErrUnavailable, ch, err)
	}
	return b.conn(c.Options().Addr, b.connIndex(ch), c), nil
}

// keepAlive extends the sequence counters of subscribed channels so that a
// channel with subscribers anywhere never restarts at seq 1 (the hub
// filters by sequence number); idle channels expire with their history.
// Only channels with a counter are touched (countedNames): a channel never
// published to durably, such as a personal channel waiting for its one
// push, has none to keep, and costs no command and no garbage per round.
func (b *Redis) keepAlive(ctx context.Context) {
	t := time.NewTicker(max(b.cfg.HistoryTTL/3, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		names := b.countedNames()
		for len(names) > 0 {
			n := min(len(names), 500)
			pipe := b.client.Pipeline()
			for _, ch := range names[:n] {
				pipe.ExpireGT(ctx, keyPrefix+ch+seqSuffix, time.Duration(b.ttlSec)*time.Second)
				pipe.ExpireGT(ctx, keyPrefix+ch+epochSuffix, time.Duration(b.ttlSec)*time.Second)
			}
			_, _ = pipe.Exec(ctx)
			names = names[n:]
		}
	}
}

// carried yields the channels pc carries: the subscribed ones whose rchan
// names pc. It is the set a session of pc subscribes and resyncs (the
// broker's shards are its only record: issue 18). It never holds pc.mu,
// and holds one shard's read lock at a time only to copy that shard's
// rchan pointers: rc.conn is read (and yield called) outside it, because
// those reads miss the cache (BenchmarkRedisCarried) and a held shard
// stalls Subscribe on it and, behind a waiting Subscribe, dispatch. So a
// channel unsubscribed or moved away meanwhile may be yielded: callers
// tolerate that (its unwant, pending after the walk began, follows).
func (b *Redis) carried(pc *psConn) iter.Seq[string] {
	return func(yield func(string) bool) {
		for rc := range b.rchans() {
			if rc.conn.Load() == pc && !yield(rc.name) {
				return
			}
		}
	}
}

// rchans yields every subscribed channel's rchan, holding one shard's read
// lock at a time only to copy that shard's pointers: callers read each
// rchan (and yield runs) outside it, so a walk never stalls Subscribe on
// a shard. A channel unsubscribed meanwhile may still be yielded.
func (b *Redis) rchans() iter.Seq[*rchan] {
	return func(yield func(*rchan) bool) {
		var rcs []*rchan
		for i := range b.chans {
			sh := &b.chans[i]
			sh.mu.RLock()
			rcs = rcs[:0]
			for _, rc := range sh.channels {
				rcs = append(rcs, rc)
			}
			sh.mu.RUnlock()
			for _, rc := range rcs {
				if !yield(rc) {
					return
				}
			}
		}
	}
}

// countedNames returns the subscribed channels that have a sequence
// counter in Redis as far as this node knows: a baseline or a durable
// publication gave them a seq or an epoch. Every durable publication
// reaches this node (it is subscribed), and pushd_publish itself sets the
// counter's TTL, so a counter created since is kept from the next round
// on. Each rchan is read under its own lock, outside the shard's (rchans).
func (b *Redis) countedNames() []string {
	var out []string
	for rc := range b.rchans() {
		rc.mu.Lock()
		counted := !rc.gone && (rc.last > 0 || rc.epoch != "")
		rc.mu.Unlock()
		if counted {
			out = append(out, rc.name)
		}
	}
	return out
}

// Ready reports whether the broker path works: the library is loaded and
// every pub/sub connection is subscribed and received its canary within
// CanaryTimeout. /readyz serves it.
func (b *Redis) Ready() bool {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	if len(b.conns) == 0 {
		return false
	}
	now := time.Now()
	for _, pc := range b.conns {
		if !pc.healthy(now) {
			return false
		}
	}
	return true
}

// Stats returns a snapshot of the broker's health and counters.
func (b *Redis) Stats() RedisStats {
	s := RedisStats{
		Healthy:            b.Ready(),
		Reconnects:         b.stats.reconnects.Load(),
		Published:          b.stats.published.Load(),
		PublishUnavailable: b.stats.publishUnavailable.Load(),
		PublishFailed:      b.stats.publishFailed.Load(),
		RawIn:              b.stats.rawIn.Load(),
		DurableIn:          b.stats.durableIn.Load(),
		Recoveries:         b.stats.recoveries.Load(),
		RecoveredPubs:      b.stats.recoveredPubs.Load(),
		Lost:               b.stats.lost.Load(),
		Duplicates:         b.stats.duplicates.Load(),
		Malformed:          b.stats.malformed.Load(),
		Unwanted:           b.stats.unwanted.Load(),
		Resets:             b.stats.resets.Load(),
		AffectedChannels:   b.stats.affected.Load(),
		IngestQueuedBytes:  b.ing.queuedBytes(),
		ShedChannel:        b.ing.shedChannel.Load(),
		ShedNode:           b.ing.shedNode.Load(),
		Conflated:          b.ing.conflated.Load(),
		Overloaded:         b.ing.overloaded(time.Now()),
	}
	now := time.Now()
	b.connMu.Lock()
	s.Conns = len(b.conns)
	for _, pc := range b.conns {
		s.CanaryAge = max(s.CanaryAge, pc.canaryAge(now))
	}
	b.connMu.Unlock()
	for i := range b.chans {
		sh := &b.chans[i]
		sh.mu.RLock()
		s.Channels += len(sh.channels)
		sh.mu.RUnlock()
	}
	return s
}

// Channels returns the number of subscribed channels.
func (b *Redis) Channels() int { return b.Stats().Channels }

// Publish runs FCALL pushd_publish: Redis assigns the sequence number,
// appends to the channel's stream and publishes the envelope; this node's
// hub gets the publication back through its subscription like every other
// node's (one delivery path, in sequence order). While the broker is
// unhealthy it fails at once with ErrUnavailable; it never waits longer
// than PublishTimeout. data is not retained.
func (b *Redis) Publish(ctx context.Context, channel string, data []byte) (uint64, error) {
	if b.closed.Load() {
		return 0, ErrClosed
	}
	hb := b.handler.Load()
	if hb == nil {
		return 0, ErrNoHandler
	}
	if err := b.checkName(channel); err != nil {
		return 0, err
	}
	if !b.Ready() {
		b.stats.publishUnavailable.Add(1)
		return 0, ErrUnavailable
	}
	if a, ok := hb.h.(fanout.Admitter); ok && !a.Admit(channel, len(data)) {
		return 0, ErrOverloaded
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	seq, err := b.fcallPublish(ctx, channel, data)
	if err != nil && strings.Contains(err.Error(), "Function not found") {
		// Redis restarted without persistence: load the library again.
		if lerr := b.loadLibrary(ctx); lerr == nil {
			seq, err = b.fcallPublish(ctx, channel, data)
		}
	}
	if err != nil {
		b.stats.publishFailed.Add(1)
		var rerr redis.Error
		if errors.As(err, &rerr) {
			return 0, fmt.Errorf("cluster: pushd_publish %q: %w", channel, err)
		}
		return 0, fmt.Errorf("%w: pushd_publish %q: %w", ErrUnavailable, channel, err)
	}
	b.stats.published.Add(1)
	return seq, nil
}

func (b *Redis) fcallPublish(ctx context.Context, channel string, data []byte) (uint64, error) {
	seq, err := b.client.FCall(ctx, "pushd_publish", []string{rawName(channel)}, data, b.ttlSec, b.hist).Int64()
	if err != nil {
		return 0, err
	}
	return uint64(seq), nil
}

// Subscribe implements fanout.Broker: SubscribeTop without the top.
func (b *Redis) Subscribe(ctx context.Context, channel string) error {
	_, _, err := b.SubscribeTop(ctx, channel)
	return err
}

// SubscribeTop implements fanout.TopSubscriber: it subscribes
// pushd:{channel} and pushd:{channel}:d (batched with other subscribes on
// the connection), waits until Redis confirmed both, then reads the
// channel's top and epoch (one FCALL_RO pushd_history) and returns them:
// every durable publication after that top reaches the hub, in order. It
// is the only Redis read of a first subscribe; the hub answers later
// subscribes to the channel from its node-local window. Messages that
// arrive between the confirmation and the read wait in the channel's
// pending list and are sequenced against the top (those at or below it
// are duplicates).
func (b *Redis) SubscribeTop(ctx context.Context, channel string) (uint64, string, error) {
	if b.closed.Load() {
		return 0, "", ErrClosed
	}
	if err := b.checkName(channel); err != nil {
		return 0, "", err
	}
	if !b.Ready() {
		return 0, "", ErrUnavailable
	}
	ctx, cancel := b.subscribeContext(ctx)
	defer cancel()
	pc, err := b.connFor(ctx, channel)
	if err != nil {
		return 0, "", err
	}
	// recovering: no baseline yet, so live messages wait in pending.
	rc := &rchan{name: channel, recovering: true, worker: b.ing.workerFor(maphash.String(b.seed, channel))}
	rc.conn.Store(pc)
	if hb := b.handler.Load(); hb != nil {
		if p, ok := hb.h.(interface{ PolicyFor(string) fanout.Policy }); ok {
			rc.conflate = p.PolicyFor(channel) == fanout.PolicyConflate
		}
	}
	sh := b.shard(channel)
	sh.mu.Lock()
	if old := sh.channels[channel]; old != nil {
		sh.mu.Unlock()
		// Already subscribed (the hub subscribes once per channel).
		st, err := b.readStream(ctx, channel, nil, 0)
		return st.top, st.epoch, err
	}
	sh.channels[channel] = rc
	confirmed := pc.add(channel) // under sh.mu: see psConn.moved
	sh.mu.Unlock()
	select {
	case <-confirmed:
	case <-ctx.Done():
		b.drop(rc)
		return 0, "", fmt.Errorf("%w: subscribe %q: %w", ErrUnavailable, channel, ctx.Err())
	}
	sessions := pc.sessionCount()
	st, err := b.readStream(ctx, channel, nil, 0)
	if err != nil {
		b.drop(rc)
		return 0, "", err
	}
	rc.mu.Lock()
	rc.last, rc.epoch = st.top, st.epoch
	again := b.deliverPendingLocked(rc)
	// A session that ended between the confirmation and the read skipped
	// this channel in its resync (it was recovering): recover it now.
	again = again || rc.overflow || pc.sessionCount() != sessions
	rc.overflow = false
	rc.recovering = again
	rc.mu.Unlock()
	if again {
		b.startRecovery(rc)
	}
	return st.top, st.epoch, nil
}

// subscribeContext bounds SubscribeTop by SubscribeTimeout. The hub calls
// it with a context that is never cancelled and has no deadline
// (coalesced first subscribes must not fail with one caller): that one
// gets a shared bounded context (internal/deadline), so a subscribe storm
// does not cost a context and a timer per channel; a caller's own earlier
// deadline is kept as it is.
func (b *Redis) subscribeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Done() == nil {
		return b.subDL.Get(), func() {}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= b.cfg.SubscribeTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.cfg.SubscribeTimeout)
}

// Unsubscribe implements fanout.Broker: the channel's messages stop being
// handed to the hub at once; UNSUBSCRIBE is batched on the connection.
func (b *Redis) Unsubscribe(_ context.Context, channel string) error {
	sh := b.shard(channel)
	sh.mu.Lock()
	rc := sh.channels[channel]
	if rc != nil {
		delete(sh.channels, channel)
	}
	sh.mu.Unlock()
	if rc != nil {
		b.forget(rc)
	}
	return nil
}

// drop undoes a Subscribe that did not complete.
func (b *Redis) drop(rc *rchan) {
	sh := b.shard(rc.name)
	sh.mu.Lock()
	if sh.channels[rc.name] == rc {
		delete(sh.channels, rc.name)
	}
	sh.mu.Unlock()
	b.forget(rc)
}

func (b *Redis) forget(rc *rchan) {
	rc.mu.Lock()
	rc.gone = true
	rc.pending = nil
	pc := rc.conn.Load()
	rc.mu.Unlock()
	pc.unwant(rc.name)
}

// History implements fanout.Broker through FCALL_RO pushd_history: the
// channel's top sequence and epoch and, with since, the stream entries
// after it, read atomically.
func (b *Redis) History(ctx context.Context, channel string, since *uint64) (fanout.HistoryResult, error) {
	if err := b.checkName(channel); err != nil {
		return fanout.HistoryResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	st, err := b.readStream(ctx, channel, since, b.cfg.RecoverPage)
	if err != nil {
		return fanout.HistoryResult{}, err
	}
	if since == nil {
		return fanout.HistoryResult{Top: st.top, Epoch: st.epoch, Recovered: true}, nil
	}
	s := *since
	// The stream keeps what the publisher asked for (pushd_publish's
	// history argument), which may exceed this node's HistorySize: read it
	// page by page up to the top, bounded by maxHistoryRead. A later page
	// of another epoch (the stream was recreated meanwhile) ends the read.
	pubs := st.pubs
	for len(pubs) > 0 && len(pubs) < maxHistoryRead && pubs[len(pubs)-1].Seq < st.top {
		last := pubs[len(pubs)-1].Seq
		more, err := b.readStream(ctx, channel, &last, min(b.cfg.RecoverPage, maxHistoryRead-len(pubs)))
		if err != nil {
			return fanout.HistoryResult{}, err
		}
		if len(more.pubs) == 0 || more.epoch != st.epoch {
			break
		}
		pubs = append(pubs, more.pubs...)
	}
	top := st.top
	res := fanout.HistoryResult{Top: top, Epoch: st.epoch, Pubs: pubs}
	switch {
	case s > top:
		// The counter expired (or the client came from elsewhere).
	case s == top:
		res.Recovered = true
	default:
		res.Recovered = len(pubs) > 0 && pubs[0].Seq == s+1 && pubs[len(pubs)-1].Seq >= top
	}
	return res, nil
}

// streamRead is one pushd_history reply.
type streamRead struct {
	top   uint64
	epoch string
	pubs  []fanout.Publication
}

// readStream returns the channel's top and epoch and, with since, up to
// count stream entries with seq > *since, oldest first, read atomically.
func (b *Redis) readStream(ctx context.Context, channel string, since *uint64, count int) (streamRead, error) {
	args := []any{}
	if since != nil {
		args = append(args, *since, count)
	}
	v, err := b.client.FCallRO(ctx, "pushd_history", []string{rawName(channel)}, args...).Slice()
	if err != nil {
		return streamRead{}, fmt.Errorf("%w: history of %q: %w", ErrUnavailable, channel, err)
	}
	return parseHistory(channel, v)
}

// parseHistory decodes pushd_history's reply {top, epoch, id1, payload1,
// ...}. It is a parser of what Redis returns: it refuses a malformed reply
// with an error and never panics (FuzzParseHistory).
func parseHistory(channel string, v []any) (streamRead, error) {
	var st streamRead
	if len(v) < 2 || len(v)%2 != 0 {
		return st, fmt.Errorf("cluster: history of %q: malformed reply of %d items", channel, len(v))
	}
	top, ok := v[0].(int64)
	if !ok || top < 0 {
		return st, fmt.Errorf("cluster: history of %q: malformed top %v", channel, v[0])
	}
	epoch, ok := v[1].(string)
	if !ok || epoch != "" && !fanout.ValidEpoch(epoch) {
		return st, fmt.Errorf("cluster: history of %q: malformed epoch %v", channel, v[1])
	}
	st.top, st.epoch = uint64(top), epoch
	if len(v) > 2 {
		st.pubs = make([]fanout.Publication, 0, len(v)/2-1)
	}
	for i := 2; i+1 < len(v); i += 2 {
		id, _ := v[i].(string)
		data, _ := v[i+1].(string)
		ms, _, _ := strings.Cut(id, "-")
		seq, err := strconv.ParseUint(ms, 10, 64)
		if err != nil || seq == 0 {
			return streamRead{}, fmt.Errorf("cluster: history of %q: malformed stream ID %q", channel, id)
		}
		st.pubs = append(st.pubs, fanout.Publication{Channel: channel, Epoch: epoch, Seq: seq, Data: []byte(data)})
	}
	return st, nil
}

// Shutdown stops Run, every connection and recovery, and makes Publish and
// Subscribe fail with ErrClosed. It is idempotent and returns ctx.Err() if
// the goroutines did not stop before ctx ended. It does not close Client.
func (b *Redis) Shutdown(ctx context.Context) error {
	b.closed.Store(true)
	b.cancel()
	b.connMu.Lock()
	for _, pc := range b.conns {
		pc.close()
	}
	b.connMu.Unlock()
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var (
	_ fanout.Broker        = (*Redis)(nil)
	_ fanout.TopSubscriber = (*Redis)(nil)
)
