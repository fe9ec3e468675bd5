// Package protocol serves pushd's client protocol, pushd.v1 (DESIGN §3),
// on the poller: Handler implements poller.Handler and poller.Drainer and
// turns client requests into fanout.Hub subscriptions.
//
// # The protocol
//
//	GET /ws                                 (other paths: 404)
//	Sec-WebSocket-Protocol: pushd.v1        (selected when offered)
//	/ws?ch=a,b&since=N&epoch=E&format=raw   URL subscriptions (checked before the 101)
//
//	client → server (JSON text)             server → client
//	{"op":"sub","ch":"room:1","since":123,"epoch":"6752a3b1e0c2f"}
//	                                        {"op":"subok","ch":"room:1","epoch":"6752a3b1e0c2f","seq":130,"recovered":true}
//	{"op":"unsub","ch":"room:1"}            {"op":"unsubok","ch":"room:1"}
//	{"op":"ping"}                           {"op":"pong"}
//	{"op":"refresh","token":".."}           {"op":"refreshok","exp":<unix s>}
//	                                        {"op":"expiring","in_ms":N}  (before exp, once per token)
//	                                        {"op":"unsubscribed","ch":..,"reason":".."}  (server ended it)
//	{"op":"presence","ch":"room:1","cursor":0,"limit":100}
//	                                        {"op":"presence","ch":"room:1","users":["alice","bob"],"cursor":N}  (N 0: last page)
//	{"op":"presence_stats","ch":"room:1"}   {"op":"presence_stats","ch":"room:1","conns":3,"users":2}
//	                                        {"op":"join","ch":"room:1","user":"bob"}  {"op":"leave",..}  (presence events)
//	anything refused                        {"op":"err","ch":"room:1","code":400|403|404|429|500,"reason":".."}
//
//	pushes: {"ch":"room:1","epoch":"6752a3b1e0c2f","seq":131,"data":<payload>}
//	        ("epoch" only when seq > 0; format=raw: the payload alone, text if
//	        UTF-8, else binary)
//	gap notice (policy drop): {"op":"gap","ch":"feed:1","epoch":"..","from":A,"to":B}
//
// # Epochs and resume
//
// A channel's seqs count within an epoch: a short id ([0-9A-Za-z_-], at
// most fanout.MaxEpochLen bytes) the broker makes when it (re)creates the
// channel's stream (package cluster). Every sequenced push, subok and gap
// notice names it. A resume is (since, epoch): with the channel's epoch
// and the history still reaching back, subok says recovered:true and
// exactly the missed pushes follow; with another epoch, or when the
// history no longer reaches back, subok says recovered:false with the
// current epoch and top seq, and (for another epoch) the current epoch's
// retained history follows from seq 1. Without epoch, since is taken in
// the current epoch (clients from before epochs). epoch without since, or
// a malformed one, is refused with 400 (FuzzRequest, FuzzParseURL). A
// client never drops a push of another epoch as a duplicate.
//
// The subok reply is queued by the hub before the subscription is linked,
// so it reaches the client before any push of the channel; recovered
// history (since) follows it, then live pushes, each exactly once. After
// unsubok no push of the channel follows. URL subscriptions get no subok
// (a QR-login page's onmessage sees only its push); they are linked in
// Open, before the connection's first message is read, so the reply to
// any op (e.g. ping) proves them live.
//
// # Permissions
//
// Config.Public lists the channel patterns anyone may subscribe to. With
// Config.Auth (package auth) the upgrade is refused before the 101 for a
// disallowed Origin (403) or a bad token (401); a token's connection may
// also subscribe to the token's channels patterns and is subscribed at
// once (without subok) to its personal channel user:<sub>. The token's exp
// is put on the poller's timing wheel (Conn.SetExpiry): the connection is
// closed with 4003 then. Anything else gets err 403; other subscriptions
// are unaffected.
//
// In-band refresh: when Config.Auth can verify bare tokens (Verifier), the
// wheel also carries a hint (Conn.SetExpiryHint, poller.Expirer) at
// exp - min(RefreshLead, half the remaining life): the server sends
// {"op":"expiring"} and the client answers {"op":"refresh","token":..}.
// The new token must verify with the same keys and carry the same sub
// (err 401 / 403 otherwise, and nothing changes); then the expiry moves to
// its exp (Conn.ExtendExpiry), the next hint is scheduled, and every
// subscription the new token no longer allows ends with
// {"op":"unsubscribed"} after its last push. Refresh ops count against
// MaxMessageRate and MaxErrors like any op. Config.MaxMessageRate closes a connection that sends
// faster with 1008.
//
// Refusals: malformed JSON, unknown ops, missing fields, invalid channel
// names (1-255 printable ASCII bytes, no comma), since outside uint64, a
// malformed epoch or one without since,
// requests over 5 KiB and binary messages get an err reply with code 400;
// not public 403; unsub of an unknown channel 404; more than
// MaxSubscriptions 429. After MaxErrors refusals the connection is closed
// with 1008. A client that does not read its replies is closed with 4001.
//
// # Presence
//
// With Config.Presence, a subscription to a channel matching
// Config.PresenceChannels is reported to it (Join when it enters the
// session's list, Leave when it leaves: unsub, server unsubscribe, a
// refresh that drops it, close), with the token's sub as the user ("" for
// an anonymous connection: counted, not listed). The presence and
// presence_stats ops need a presence channel (else 404) the connection
// may subscribe to (else 403); a Store failure is err 500. Join and leave
// events (package presence decides which, coalesced and rate-bounded)
// reach the node's JSON subscribers of the channel through
// Handler.PresenceEvent, best effort: a full queue misses one (counted in
// Stats.EventDrops), and they are not ordered with the channel's pushes.
//
// # HTTP streams: SSE and NDJSON (stream.go)
//
// The Handler is also a poller.Streamer: a plain GET (no Upgrade) of
//
//	/sse?ch=a&ch=b,c&since=N&epoch=E&pos=<ch>:<epoch>:<seq>&token=T   text/event-stream
//	/stream?...                                                       application/x-ndjson
//
// opens a one-way stream on the poller's loops, after the checks Upgrade
// makes (readiness 503; URL 400/404/429; Auth: Origin 403, token 401 from
// ?token= or Authorization; channel permissions 403), each refusal a whole
// text/plain response. Pushes are encoded once per publication by the hub
// in fanout.FormatSSE (event: <channel>, id: <epoch>:<seq>, data: lines)
// or fanout.FormatNDJSON (the JSON push and "\n"); replies are framed per
// transport (session.frame): "event: pushd" events, or lines. Every
// subscription, URL ones included, gets a subok (a stream has no other way
// to learn positions and whether a resume recovered). Last-Event-ID (or
// last_event_id=) is an SSE event id <epoch>:<seq> and stands for since
// and epoch; pos= gives one channel its own position. A stream cannot
// change its channels or refresh its token: the client reconnects with
// the new set and positions (no session outlives a connection, so any
// node can take the new stream), and the token's exp ends the stream with
// {"op":"close","code":4003}. StreamEnd writes that close event for every
// end (drain 1001/1012, slow consumer 4001, ...); ReconnectHint gives the
// drain its hint in the connection's framing (SSE: "retry: N" first, so a
// browser's own reconnect waits the jittered delay). CORS: responses carry
// Access-Control-Allow-Origin for the request's Origin (already checked by
// Auth's policy); OPTIONS answers a preflight for Authorization and
// Last-Event-ID. SSE refuses a channel named "pushd", its own event type.
//
// # Concurrency
//
// Upgrade, Open and Message run on the connection's processing goroutine;
// Close and Drained may run elsewhere, so a session's subscription list is
// copy-on-write under a mutex that is never held across a hub call.
//
// # What it must never do
//
// Block on a client or on another connection; write to a socket except
// through the poller's queue; know how publications reach the hub.
package protocol
