package fanout

import (
	"context"
	"fmt"

	"github.com/gobwas/ws"
)

// StatusSlowConsumer is the close code of a subscriber disconnected by
// PolicyDisconnect (pushd.v1, DESIGN §3).
const StatusSlowConsumer ws.StatusCode = 4001

// Subscriber is what the hub needs of a connection. Implementations must be
// safe for concurrent use and must never block: Queue appends a reference to
// frame (never a copy, never modified afterwards) to the connection's
// byte-bounded queue and returns ErrQueueFull (nothing queued) past the
// budget or ErrClosed once the connection is closing; Flush writes what was
// queued; Close starts the closing handshake. A Subscriber must be
// comparable (a pointer): the hub identifies it by ==.
type Subscriber interface {
	Queue(frame []byte) error
	Flush()
	Close(code ws.StatusCode, reason string) error
}

// Publication is one message of a channel. Data is immutable once
// published: the hub and brokers keep references to it. Seq is the
// channel's sequence number assigned by the broker (1, 2, ...); 0 means
// unsequenced (at-most-once publishing without history). Epoch names the
// channel's stream that Seq counts in: a short id the broker makes when it
// (re)creates the stream (a memory broker's first publication of the
// channel in this process, a Redis counter that was absent: first publish,
// FLUSHALL, expiry, a restart without persistence). Sequence numbers
// compare only within one epoch: after an epoch change the channel counts
// from 1 again. Unsequenced publications have no epoch ("").
type Publication struct {
	Channel string
	Epoch   string
	Seq     uint64
	Data    []byte
}

// HistoryResult is what Broker.History returns.
type HistoryResult struct {
	// Pubs are the retained publications with Seq > since, oldest first
	// (empty when History was called with a nil since).
	Pubs []Publication
	// Top is the channel's latest assigned sequence number (0: none yet).
	Top uint64
	// Epoch is the epoch of Top and Pubs ("": the channel has no stream:
	// never published, or its counter is gone).
	Epoch string
	// Recovered reports that Pubs holds every publication after since:
	// nothing was lost to the history's size or TTL bounds.
	Recovered bool
}

// Broker is the message bus behind the hub, implemented by package cluster
// (the embedded memory broker, Redis). Publish assigns the channel's next
// sequence number and delivers the publication to every node's hub through
// PublicationHandler.HandlePublication, in sequence order per channel.
// The hub calls Subscribe when a channel gets its first local subscriber
// and Unsubscribe (debounced) when it has had none for a while. History
// returns the retained publications after *since, or only the channel's
// top sequence when since is nil, together with the epoch they belong to,
// read atomically.
type Broker interface {
	Publish(ctx context.Context, channel string, data []byte) (seq uint64, err error)
	Subscribe(ctx context.Context, channel string) error
	Unsubscribe(ctx context.Context, channel string) error
	History(ctx context.Context, channel string, since *uint64) (HistoryResult, error)
}

// TopSubscriber is an optional Broker capability: SubscribeTop is
// Subscribe that also returns the channel's top (epoch, seq), read once
// the subscription is confirmed, so that every publication after it is
// handed to the hub. The hub then answers later subscribes to the channel
// from its node-local window, with no broker round trip. A broker without
// it gets one History(nil) call after Subscribe instead.
type TopSubscriber interface {
	SubscribeTop(ctx context.Context, channel string) (top uint64, epoch string, err error)
}

// PublicationHandler is the inbound side of a Broker: the Hub implements it.
// HandlePublication must not block; brokers call it in sequence order per
// channel and never concurrently for one channel.
type PublicationHandler interface {
	HandlePublication(pub Publication)
}

// BatchHandler is an optional PublicationHandler capability for brokers
// that read faster than they deliver (the Redis ingest queues per channel
// and hands each channel's backlog over at once). The Hub implements it.
// HandleBatch is HandlePublication for several publications of one
// channel, in order, delivered in one flush per subscriber; HandleGap
// tells the channel's subscribers, in order with its pushes, that the
// broker dropped the publications from..to (both 0: unsequenced ones).
// The calling rules of HandlePublication apply to both.
type BatchHandler interface {
	HandleBatch(pubs []Publication)
	HandleGap(channel, epoch string, from, to uint64)
}

// Admitter is an optional PublicationHandler capability: a broker that can
// fail a publish asks Admit before assigning a sequence number and fails
// the publish fast when it returns false (the hub is behind on that
// channel). The Hub implements it.
type Admitter interface {
	Admit(channel string, size int) bool
}

// Format is how a subscriber wants pushes encoded. Each publication is
// encoded once per format that has subscribers on its channel.
type Format uint8

const (
	// FormatJSON pushes {"ch":"<channel>","epoch":"<epoch>","seq":N,
	// "data":<payload>} text frames ("epoch" only on sequenced
	// publications); a payload that is not valid JSON is embedded as a
	// JSON string, and one that is not valid UTF-8 either as base64 in a
	// string with "b64":true after it (bytes arrive exact).
	FormatJSON Format = iota
	// FormatRaw pushes the payload bytes alone: a text frame when they are
	// valid UTF-8, else a binary frame.
	FormatRaw
	// FormatSSE pushes Server-Sent Events (text/event-stream):
	// "event: <channel>", "id: <epoch>:<seq>" (sequenced publications
	// only) and the payload as "data:" lines, one per line of the payload
	// (invalid UTF-8 becomes U+FFFD; EventSource rejoins lines with "\n",
	// so a "\r" in a payload arrives as "\n"). Gap notices are
	// "event: pushd" with the JSON notice as data. No WebSocket framing:
	// for the poller's HTTP streams (see package protocol).
	FormatSSE
	// FormatNDJSON pushes FormatJSON's objects, each followed by "\n",
	// with no WebSocket framing: the HTTP-streaming transport
	// (application/x-ndjson).
	FormatNDJSON
	numFormats
)

// String returns "json", "raw", "sse" or "ndjson".
func (f Format) String() string {
	switch f {
	case FormatJSON:
		return "json"
	case FormatRaw:
		return "raw"
	case FormatSSE:
		return "sse"
	case FormatNDJSON:
		return "ndjson"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// Policy is what happens when a subscriber's queue is full.
type Policy uint8

const (
	// PolicyDisconnect closes the subscriber with 4001 (the default).
	PolicyDisconnect Policy = iota
	// PolicyDrop drops the message for that subscriber and, once it accepts
	// again, sends {"op":"gap","ch":..,"epoch":..,"from":A,"to":B} naming
	// the missing sequence range (of that epoch) before the next push.
	PolicyDrop
	// PolicyConflate keeps only the latest message of the channel for that
	// subscriber and sends it once the subscriber accepts again.
	PolicyConflate
)

// String returns "disconnect", "drop" or "conflate".
func (p Policy) String() string {
	switch p {
	case PolicyDisconnect:
		return "disconnect"
	case PolicyDrop:
		return "drop"
	case PolicyConflate:
		return "conflate"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// ParsePolicy parses "disconnect", "drop" or "conflate".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "disconnect":
		return PolicyDisconnect, nil
	case "drop":
		return PolicyDrop, nil
	case "conflate":
		return PolicyConflate, nil
	}
	return 0, fmt.Errorf("%w: unknown policy %q (want disconnect, drop or conflate)", ErrConfig, s)
}

// PolicyRule applies Policy to the channels matching Pattern (a glob: '*'
// matches any run of characters, including none; '?' one byte; everything
// else itself). The first matching rule wins.
type PolicyRule struct {
	Pattern string
	Policy  Policy
}

// SubscribeOptions tune Hub.Subscribe.
type SubscribeOptions struct {
	// Format selects the push encoding.
	Format Format
	// Since, when set, asks for every retained publication with a greater
	// sequence number before the live ones (recovery, publish-before-
	// subscribe with since=0).
	Since *uint64
	// Epoch is the epoch Since counts in, as the client last saw it ("":
	// unknown; Since is then taken in the current epoch). When it differs
	// from the channel's current epoch the publications after Since are
	// unknowable: the subscription is not recovered, and every retained
	// publication of the current epoch is queued instead (as Since 0).
	Epoch string
	// Ack, when set, builds the subscribe reply frame from the result. The
	// hub queues it before any push of the channel reaches the subscriber.
	Ack func(SubscribeResult) []byte
	// Deflate tells that the subscriber negotiated permessage-deflate with
	// no context takeover: on channels Config.Deflate selects, it is sent
	// the publication's compressed frame (RSV1), shared with every other
	// such subscriber, instead of the plain one.
	Deflate bool
}

// SubscribeResult describes a new subscription.
type SubscribeResult struct {
	// Seq is the sequence number of the last publication the subscriber
	// has been given (by recovery) or skipped (live-only): the position to
	// resume from with since.
	Seq uint64
	// Epoch is the epoch Seq counts in: resume with (Epoch, Seq).
	Epoch string
	// Recovered reports that no publication after (Epoch, Since) was lost
	// (always true without Since; false when SubscribeOptions.Epoch named
	// another epoch).
	Recovered bool
}

// Stats is a snapshot of the hub's gauges and counters.
type Stats struct {
	Subscriptions   int64  // live subscriptions (gauge)
	Channels        int64  // channels with local state (gauge)
	Published       uint64 // publications handed to the hub
	Delivered       uint64 // frames queued to subscribers (pushes and recovered history)
	SlowDisconnects uint64 // subscribers closed with 4001 by PolicyDisconnect
	Dropped         uint64 // pushes dropped for a slow subscriber by PolicyDrop
	GapNotices      uint64 // gap notices queued after drops
	Conflated       uint64 // pushes held back by PolicyConflate (sent later or superseded)
	Overflowed      uint64 // publications dropped because a channel's mailbox was full
	Refused         uint64 // publications refused by Admit (mailbox over MaxMailboxBytes)
	PoolFallbacks   uint64 // fan-out tasks run inline because the pool refused them
	LocalSubscribes uint64 // subscribes answered from the node-local window (no broker round trip)
	BrokerReads     uint64 // broker reads for subscribes (top at first subscribe, History)
	WindowBytes     int64  // payload bytes the node-local windows keep alive (gauge)
	Deflated        uint64 // compressed frames built (one per publication and format)
	DeflateSkipped  uint64 // frames sent plain because compressing did not shrink them
	DeflateSaved    uint64 // bytes saved per compressed frame built (not per delivery)
}

// MaxEpochLen bounds an epoch id in bytes.
const MaxEpochLen = 32

// ValidEpoch reports whether e can be an epoch: 1 to MaxEpochLen bytes of
// [0-9A-Za-z_-]. Epochs travel unescaped in JSON strings, URL queries and
// Redis envelopes, so nothing else is allowed. Brokers make them (package
// cluster); clients only echo them back.
func ValidEpoch(e string) bool {
	if e == "" || len(e) > MaxEpochLen {
		return false
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
