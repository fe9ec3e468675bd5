// Package cluster implements the fanout.Broker seen by the hub: Memory,
// the embedded single-node default, and Redis, the broker that lets many
// pushd nodes share channels through a standalone Redis or a Redis Cluster
// (sharded pub/sub). Only this package imports go-redis.
//
// # Memory
//
// Memory assigns per-channel sequence numbers, keeps a bounded history per
// channel (size and TTL) for since-recovery and publish-before-subscribe,
// gives each channel an epoch (NewEpoch, or MemoryConfig.NewEpoch) when it
// first appears in the process (first publish or subscribe; anew after the
// sweep forgot it, and in every new process),
// and hands each publication to the node's hub synchronously, in sequence
// order. Publish holds the channel's lock while it assigns the sequence
// number, appends to the history and calls HandlePublication, which never
// blocks (fanout's contract); History takes the same lock, so a history
// read sees every publication the hub has been handed and none it has not.
//
// # Redis: the wire format (DESIGN §4)
//
// A pushd channel <ch> owns these Redis names, all with the hash tag {<ch>}
// so that they live on one Redis Cluster slot:
//
//	pushd:{<ch>}       pub/sub: raw, at-most-once publications (PUBLISH/SPUBLISH, any bytes)
//	pushd:{<ch>}:d     pub/sub: durable envelopes, published only by pushd_publish
//	pushd:{<ch>}:seq   string: the channel's sequence counter
//	pushd:{<ch>}:e     string: the channel's epoch, made anew with the counter
//	pushd:{<ch>}:s     stream: the history; entry ID <seq>-0, field d = payload
//	pushd:{<ch>}:p     zset: presence, user → expiry (RedisPresence, presence.go);
//	                   :pn zset node → expiry, :pc hash node → connections,
//	                   :pm:<node> set of the node's users
//
// Raw and durable publications are told apart by the pub/sub channel they
// arrive on, never by their bytes: a raw payload may contain anything,
// even a valid envelope, and is delivered as raw (Seq 0). The names cannot
// collide: a raw name ends in '}', a durable one in ":d"; parseName maps a
// name back to (<ch>, durable) and every name pushd builds round-trips. A
// durable envelope is "p2:" <epoch> ":" <seq in decimal> ":" <payload>;
// "p2:" is the format version (version 1, "p1:" <seq> ":" <payload> from an
// older library, is still read, with epoch ""). DecodeEnvelope is its
// parser (fuzzed by FuzzEnvelope); parseHistory, the parser of
// pushd_history's reply, is fuzzed by FuzzParseHistory.
// In Redis Cluster mode a channel name starting with '}' is refused
// (ErrChannel): pushd:{}... has no hash tag.
//
// # Redis: the function library
//
// Run loads the library "pushd" with FUNCTION LOAD REPLACE on every
// primary (idempotent; again after every reconnect, so a Redis restarted
// without persistence gets it back; Publish also reloads it on "Function
// not found"). FCALL pushd_publish 1 pushd:{<ch>} <payload> [ttl_s]
// [history] atomically INCRs the counter; when that created it (seq 1) or
// the epoch key is missing, it makes a new epoch from the server's TIME
// (and deletes a stream left from an older epoch); it XADDs the payload
// under ID <seq>-0 with MAXLEN ~ history (0 keeps none), sets the keys'
// TTL (the counter's and the epoch's never shrink), publishes the envelope
// on pushd:{<ch>}:d (SPUBLISH in cluster mode) and returns seq. The epoch
// follows the counter, not the stream: a stream trimmed or expired under a
// live counter keeps its epoch, and its loss shows as a seq gap
// (recovered:false), while a counter that is gone (FLUSHALL, expiry, a
// restart without persistence, a failover to a replica without it)
// restarts at 1 in a new epoch. FCALL_RO pushd_history returns the top,
// the epoch and the stream entries after a since, atomically. Defaults when a
// backend omits ttl_s/history: DefaultHistoryTTL, DefaultHistorySize. A
// node keeps the counters of channels it has subscribers for alive
// (EXPIRE ... GT every HistoryTTL/3), so such a channel never restarts at
// seq 1 under the hub's feet; idle channels expire with their history.
// Only channels with a counter are kept: a subscribed channel never
// published to durably (a personal channel waiting) costs no command.
//
// # Redis: subscriptions, order and recovery
//
// Subscriptions follow local demand: SubscribeTop (the hub's first local
// subscriber; fanout.TopSubscriber) SUBSCRIBEs pushd:{<ch>} and
// pushd:{<ch>}:d, waits until Redis confirmed them, then reads the
// channel's top and epoch (one FCALL_RO) as its baseline and returns it,
// so a first subscribe costs one SUBSCRIBE (batched) and one history read
// and later ones none (the hub's node-local window); messages that arrive
// between the confirmation and the read wait and are sequenced against the
// baseline;
// Unsubscribe (debounced by the hub) UNSUBSCRIBEs. Commands are batched by
// a sender goroutine per connection (up to 1000 names per command; one
// channel per SSUBSCRIBE, which must not cross slots). Never PSUBSCRIBE.
// Channels are spread by hash over PubSubConns connections (per primary
// in cluster mode: each channel goes to one of its slot owner's
// connections), so a broken connection touches 1/PubSubConns of the
// channels. A MOVED reply or a server
// SUNSUBSCRIBE (resharding) moves channels to their new owner and
// recovers what was published meanwhile.
//
// Per channel the broker remembers the epoch and the last durable seq
// handed to the hub. A durable envelope of another epoch means the stream
// was recreated: the channel follows the new epoch from seq 0 (recovering
// the new stream from its start if the envelope is not seq 1); the hub's
// subscribers see the epoch change in the next push and are told
// recovered:false by their client.
// A durable envelope at or below it is a duplicate and dropped; one above
// last+1 is a gap: the channel turns "recovering", later messages wait in
// a bounded pending list, a recovery goroutine (at most 32 at a time) reads
// the stream after last and hands the missing publications, then the
// pending ones, to the hub. HandlePublication therefore sees each channel
// in seq order, never concurrently, and the receive loop never blocks on
// Redis. A seq the stream no longer has (trimmed, expired) is counted as
// Lost and skipped.
//
// # Redis: ingest
//
// A pub/sub reader only parses and enqueues (redis_ingest.go); it never
// writes to a client socket, so it reads at Redis speed and Redis never
// reaches its client output buffer limit for us. Each subscribed channel
// has an ingest queue owned by one of IngestWorkers delivery workers (by
// hash: order per channel holds). A worker serves its channels round
// robin, at most 128 entries per turn, and hands each turn's publications
// to the hub in one HandleBatch (one flush per subscriber), under rc.mu
// with the sequence rules below. A quiet channel therefore waits at most
// one turn of each busy channel of its worker, never for their backlog.
// Budgets are in bytes (payload + 96 per entry): IngestChannelBytes per
// channel and IngestNodeBytes for the node; an empty queue always takes
// one publication, and the node's budget never sheds a channel holding
// less than its reserve (a quarter of IngestChannelBytes, at most 64 KiB),
// so quiet channels are not shed for the busy ones' backlog. Past a budget the channel sheds by the hub's policy
// for it: PolicyConflate channels drop their queued publications for the
// newest (RedisStats.Conflated); others drop the new publication and
// their subscribers get a gap notice (fanout.BatchHandler.HandleGap) in
// its place, naming the seq range (0..0 for unsequenced publications);
// counted in ShedChannel or ShedNode. Shed seqs are skipped, not recovered
// from the stream. RedisStats.Overloaded stays true for 10 s after a shed.
//
// # Redis: resilience
//
// The client may be a *redis.Client (standalone, or go-redis' failover
// client for Sentinel: sessions then reconnect to whichever primary the
// sentinels name) or a *redis.ClusterClient; credentials and TLS are the
// client's.
//
// Each pub/sub connection runs sessions in a loop: subscribe every
// channel it carries (the subscribed channels whose rchan names it: the
// broker's shards are the only record of them) plus the connection's
// canary channel (last, so its confirmation proves the rest), then read. On any error the session ends and the next
// starts after a capped, jittered exponential backoff (BackoffMin to
// BackoffMax; almost at once after a long-lived session) that stops with
// ctx. After a reconnect, before the reader takes the session's first live
// message, the counter and epoch of every subscribed channel are read
// (pipelined) and channels that moved are recovered from their streams
// (busy channels are also caught by the gap check); a channel whose epoch
// changed or whose counter went backwards (Redis lost its data) follows
// the new epoch from seq 0 and is counted in RedisStats.Resets. A counter
// that went back within the same epoch (a failover to a replica that had
// not received acknowledged writes: the seqs after it would number other
// publications) is fenced first: FCALL pushd_fence gives the channel a new
// epoch (only the first node to ask changes it), so clients learn
// recovered:false instead of taking the renumbered seqs for duplicates.
//
// The single entry point for "these channels' subscription broke and is
// confirmed again: recover them" is Redis.resync(ctx, names): it compares
// each channel's (epoch, top) in Redis with what was handed to the hub and
// recovers the missed publications from the stream, or follows a new
// epoch; it never leaves a silent hole. Whatever breaks a subscription (a
// reconnect, a moved slot, a shed pub/sub connection) calls it once the
// subscription is confirmed and before that connection's next live
// message is dispatched.
//
// The channels a connection carried when its session ended are counted
// in RedisStats.AffectedChannels.
//
// Every CanaryInterval the
// connection publishes its canary; the broker is Ready while every
// connection is subscribed and its last canary is younger than
// CanaryTimeout (cmd/pushd serves it as /readyz); a connection whose
// canary stays away for 3×CanaryTimeout is reconnected. While not Ready,
// Publish and Subscribe fail at once with ErrUnavailable (counted in
// RedisStats); a Publish never waits longer than PublishTimeout.
//
// # Concurrency
//
// Memory and Redis are goroutine-safe. Redis owns its goroutines (one
// reader, one sender and one canary per connection, the ingest workers,
// recoveries, the counter keep-alive); Shutdown cancels and waits for all
// of them. Lock order in Redis: rchan.mu → hub locks (HandlePublication,
// HandleBatch and HandleGap are called under rchan.mu); rShard.mu →
// psConn.mu and rchan.mu → psConn.mu (a channel becomes carried by a
// connection and is added to it in one critical section; psConn.mu is
// innermost); psConn.mu, rShard.mu and an ingest worker's mu are never
// held while calling out.
//
// # What it must never do
//
// Be imported by poller or codec; block a publisher on a subscriber or the
// pub/sub reader on Redis; keep unbounded state per channel (Memory's
// history is bounded by HistorySize and HistoryTTL and idle channels are
// forgotten by Run's sweep; Redis keeps only a counter per subscribed
// channel, a bounded pending list while recovering and byte-bounded
// ingest queues); subscribe to a pattern; let Redis cut a pub/sub
// connection because pushd reads too slowly.
//
// The control channel (control.go) carries the server API's calls
// (disconnect, subscribe, unsubscribe a user) to every node: a versioned,
// validated ControlMsg on the Redis pub/sub channel pushd:control
// (RedisControl: one goroutine, Run/Shutdown; at most once), or a direct
// call with the memory broker (LocalControl).
package cluster
