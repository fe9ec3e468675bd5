// Package fanout is pushd's channel → subscribers index and its fan-out:
// one node's subscriptions, the encode-once publish path, per-channel
// ordering, per-connection byte budgets and the slow-consumer policies.
//
// # What it owns
//
// A Hub keeps 64 shards (RWMutex + map) of channels. Each channel holds a
// copy-on-write subscriber list, a mailbox of publications and at most one
// delivery task. Brokers (package cluster) call Hub.HandlePublication in
// sequence order; the delivery task takes the whole mailbox as a batch,
// encodes every publication once per Format that has subscribers (json,
// raw, and the HTTP streams' sse and ndjson, whose frames carry no
// WebSocket header: stream_encode.go) (one
// allocation per frame, shared read-only by every queue), queues the batch
// to each subscriber and flushes it once, so a burst leaves in one writev.
// Channels with more than ChunkSize subscribers are split into chunks run in
// parallel on an injected ants pool; the next batch starts only after every
// chunk of the previous one finished, so per-channel order holds for every
// subscriber. Frames are plain Go slices: "reference counting" is the
// garbage collector's, and nobody writes to a frame after it is built.
//
// Memory: an idle channel (an idle personal channel is one per
// connection) carries only its name, subscriber list, counters and top.
// What only a channel or subscription in use needs is allocated on first
// use: the mailbox with the delivery scratch (channel.dl, at the first
// publication or gap notice to deliver), the window's ring (channel.win,
// at the first publication kept) and a held gap notice or conflated frame
// (Subscription.hold, the first time a subscriber's queue refuses one).
// TestPerSubscriberStructSizes pins channel and Subscription to their
// size classes.
//
// Epochs: a Publication's Seq counts within its Epoch (the broker's id of
// the channel's stream). Each channel's window holds the top (epoch, seq);
// a subscription filters live publications at or below its join point
// only within its epoch, so a recreated stream's seq 1.. is never dropped
// as a duplicate; a Subscribe whose SubscribeOptions.Epoch is not the
// channel's is answered Recovered false and gets the current epoch's
// history from its start; a gap notice names its epoch.
//
// Brokers that queue what they read (the Redis ingest) hand a channel's
// backlog over with HandleBatch, so it leaves in one flush per subscriber,
// and report what they shed with HandleGap: every subscriber of the
// channel gets the same {"op":"gap"} notice as for its own drops, in order
// with the pushes (from and to 0 when only unsequenced publications were
// shed); the notice names the channel's epoch. A PolicyConflate channel gets none (BatchHandler).
//
// Node-local subscribe (window.go): the first local subscriber of a
// channel subscribes it at the broker and reads its top once
// (TopSubscriber, or Subscribe then History); concurrent first subscribers
// wait for that one call and share its result, error included. From then
// on the channel is held: the hub's (epoch, seq) follows every publication
// handed to it, and a window keeps the latest ones (Config.WindowSize,
// WindowBytes; WindowNodeBytes for the node). A subscribe without since,
// or with a since inside the window, is answered locally, with no broker
// round trip; anything else (a since before the window or beyond the top,
// another epoch with a partial window) reads the broker's history as
// before. Stats.LocalSubscribes and BrokerReads count both.
//
// Subscribe links a subscriber so that its reply (SubscribeOptions.Ack) and
// any recovered history are queued before the first push of the channel;
// see Hub.Subscribe for how nothing is lost or duplicated while it joins.
//
// Slow consumers: a Subscriber's Queue refuses frames past its byte budget
// (ErrQueueFull). The channel's Policy then closes it with 4001
// (PolicyDisconnect), drops the message and later sends a gap notice
// (PolicyDrop), or keeps only the latest frame (PolicyConflate); held
// frames go out on the next publication or Hub.Resume. Every action is
// counted in Stats.
//
// # permessage-deflate
//
// A subscriber that negotiated permessage-deflate (SubscribeOptions.Deflate;
// the server never keeps compression context) on a channel Config.Deflate
// selects, for a payload of at least Deflate.MinSize bytes, is queued the
// publication's compressed frame: built once per wire format from the plain
// frame by the delivery task (a pooled codec.Compressor held for that one
// publication) and shared by every such subscriber (TestDeflateOncePerFormat).
// Subscribers without deflate get the plain frame of the same publication;
// recovered history, gap notices and conflated frames travel plain. A frame
// that compression does not shrink goes plain too. The plain path allocates
// nothing more than before.
//
// # What it must never do
//
// Import the poller, cluster or Redis; block a publisher on a subscriber;
// encode per subscriber on the live path (only recovered history, gap
// notices and a format that appeared mid-batch are encoded per
// subscriber); hold a hub lock while closing a subscriber.
//
// # Concurrency and hot path
//
// All Hub methods are goroutine-safe. HandlePublication for a channel with
// at most ChunkSize subscribers delivers on the calling goroutine (Queue +
// one non-blocking write per subscriber); larger channels are handed to the
// pool and the caller returns at once. Steady-state HandlePublication
// allocates one frame per format in use and nothing per subscriber
// (TestAllocsPerPublication), also with Config.ObserveDelivery set
// (TestObserveDelivery): the hook gets one call per delivered batch, after
// every subscriber was served, with no hub lock held.
//
// Lock order: channel.brokerMu → shard.mu → channel.mu. Subscription.mu
// and channel.mu are never held together. Under channel.mu or
// Subscription.mu the hub calls only Subscriber.Queue (the connection's own
// lock, never a close); Flush and Close run with no hub lock held, because
// a connection's close hook may run synchronously and unsubscribe.
package fanout
