// Package cluster implements the fanout.Broker seen by the hub. This
// version holds the embedded memory broker (Memory), the single-node
// default: it assigns per-channel sequence numbers, keeps a bounded history
// per channel (size and TTL) for since-recovery and publish-before-
// subscribe, and hands each publication to the node's hub synchronously,
// in sequence order. The Redis broker comes later; only this package will
// ever import go-redis.
//
// # Concurrency
//
// Memory is goroutine-safe. Publish holds the channel's lock while it
// assigns the sequence number, appends to the history and calls
// HandlePublication, which never blocks (fanout's contract); History takes
// the same lock, so a history read sees every publication the hub has been
// handed and none it has not.
//
// # What it must never do
//
// Be imported by poller or codec; block a publisher on a subscriber; keep
// unbounded state per channel (history is bounded by HistorySize and
// HistoryTTL; idle channels are forgotten by Run's sweep).
package cluster
