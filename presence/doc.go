// Package presence tracks who is in a channel, cluster-wide, and emits
// join/leave events, bounded in memory and in rate.
//
// A Tracker is a node's view: package protocol calls Join when a
// connection subscribes to a presence channel and Leave when that
// subscription ends (connection closed, unsub, server unsubscribe). A
// connection with a user id (the token's sub) makes the user present; an
// anonymous one ("") is counted in Stats.Conns but never listed.
//
// The Tracker keeps the node's memberships (one counter per channel and
// user, bounded by the node's subscriptions) and writes changes to a
// Store in batches: every Config.Flush it sends each changed channel's
// additions, removals and connection count in one Store.Update, and every
// Config.Heartbeat it refreshes every channel it has members in
// (Store.Heartbeat), so a dead node's members expire. MemoryStore serves
// one process (the memory broker); cluster.RedisPresence serves many
// nodes through Redis, with per-node heartbeats and a TTL of two
// heartbeats.
//
// # Join and leave events
//
// A user whose last connection in a channel leaves is kept for
// Config.Grace: a reconnect within it (on this node, or on another one,
// since the Store still lists the user) emits neither leave nor join.
// Events are emitted only for cluster-wide transitions the Store reports
// (first connection of a user anywhere, last one gone), only for
// channels matching Config.EventChannels, and at most Config.EventRate
// per second per node (token bucket; the excess is dropped and counted
// in Stats: a storm of churn cannot grow a queue or slow delivery).
// Config.Emit runs on the Tracker's goroutine and must not block.
//
// # Concurrency
//
// Join and Leave never block on I/O: they update the node's counters
// under a mutex and return. Members and Stats read the Store (bounded by
// the caller's context). Run owns the one goroutine that talks to the
// Store in the background; Shutdown stops it after removing this node's
// members from the Store (best effort, bounded by its context).
package presence
