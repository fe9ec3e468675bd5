package poller

import (
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"
)

// counters are the poller's monotonic event counts.
type counters struct {
	accepted          atomic.Uint64
	upgraded          atomic.Uint64
	refused           atomic.Uint64
	refusedPerIP      atomic.Uint64
	refusedRate       atomic.Uint64
	expired           atomic.Uint64
	rejected          atomic.Uint64
	handshakeFailures atomic.Uint64
	handshakeTimeouts atomic.Uint64
	pongTimeouts      atomic.Uint64
	protocolErrors    atomic.Uint64
	stalls            atomic.Uint64
	writeTimeouts     atomic.Uint64
	httpResponses     atomic.Uint64
	tlsHandshakes     atomic.Uint64
	tlsResumed        atomic.Uint64
	tlsFailures       atomic.Uint64
	tlsPlaintext      atomic.Uint64
	tlsRecordErrors   atomic.Uint64
	tlsKeyRebuilds    atomic.Uint64
	tlsKeysKept       atomic.Uint64
	deflateConns      atomic.Uint64
	inflated          atomic.Uint64
	inflateTooBig     atomic.Uint64
	streams           atomic.Uint64

	mu     sync.Mutex
	closed map[ws.StatusCode]uint64
}

func (k *counters) closedWith(code ws.StatusCode) {
	k.mu.Lock()
	k.closed[code]++
	k.mu.Unlock()
}

// Stats is a snapshot of the server's gauges and counters.
type Stats struct {
	Conns             int64
	TLSConns          int64 // of Conns: on the wss listener
	MaxConns          int64
	Accepted          uint64
	Upgraded          uint64
	Refused           uint64 // turned away before the upgrade (capacity, EMFILE, per-IP limits)
	RefusedPerIP      uint64 // of Refused: MaxConnsPerIP reached
	RefusedRate       uint64 // of Refused: ConnectRate exceeded
	Expired           uint64 // connections closed at their SetExpiry deadline
	Rejected          uint64 // upgrade refused by the Handler
	HandshakeFailures uint64 // malformed or oversized upgrade requests
	HandshakeTimeouts uint64
	PongTimeouts      uint64
	ProtocolErrors    uint64
	Stalls            uint64 // times a socket's send buffer filled up
	WriteTimeouts     uint64 // stalled connections closed after WriteTimeout
	HTTPResponses     uint64 // plain HTTP requests answered by an HTTPResponder
	TLSHandshakes     uint64 // wss handshakes completed
	TLSResumed        uint64 // of TLSHandshakes: resumed from a session ticket
	TLSFailures       uint64 // wss handshakes that failed (timeouts included)
	TLSPlaintext      uint64 // plain HTTP sent to the wss port (answered 400)
	TLSRecordErrors   uint64 // established wss connections ended by a TLS error (bad record, renegotiation, close_notify)
	TLSKeyRebuilds    uint64 // AES-GCM states rebuilt for a wss direction that had been idle (tls_keys.go)
	TLSKeysKept       uint64 // TLS 1.3 AES-GCM handshakes that kept crypto/tls's own state (layout or derivation check failed)
	DeflateConns      uint64 // upgrades that negotiated permessage-deflate
	Inflated          uint64 // compressed inbound messages inflated (failures included)
	InflateTooBig     uint64 // of Inflated: closed with 1009 past MaxMessageSize once inflated
	Streams           uint64 // of Upgraded: HTTP streams opened by a Streamer (SSE, NDJSON)
	ClosedByCode      map[ws.StatusCode]uint64
}

// Stats returns a snapshot. It allocates; call it from admin paths only.
func (s *Server) Stats() Stats {
	k := &s.stats
	st := Stats{
		Conns:             s.conns.Load(),
		TLSConns:          s.tlsConns.Load(),
		MaxConns:          s.maxConns,
		Accepted:          k.accepted.Load(),
		Upgraded:          k.upgraded.Load(),
		Refused:           k.refused.Load(),
		RefusedPerIP:      k.refusedPerIP.Load(),
		RefusedRate:       k.refusedRate.Load(),
		Expired:           k.expired.Load(),
		Rejected:          k.rejected.Load(),
		HandshakeFailures: k.handshakeFailures.Load(),
		HandshakeTimeouts: k.handshakeTimeouts.Load(),
		PongTimeouts:      k.pongTimeouts.Load(),
		ProtocolErrors:    k.protocolErrors.Load(),
		Stalls:            k.stalls.Load(),
		WriteTimeouts:     k.writeTimeouts.Load(),
		HTTPResponses:     k.httpResponses.Load(),
		TLSHandshakes:     k.tlsHandshakes.Load(),
		TLSResumed:        k.tlsResumed.Load(),
		TLSFailures:       k.tlsFailures.Load(),
		TLSPlaintext:      k.tlsPlaintext.Load(),
		TLSRecordErrors:   k.tlsRecordErrors.Load(),
		TLSKeyRebuilds:    k.tlsKeyRebuilds.Load(),
		TLSKeysKept:       k.tlsKeysKept.Load(),
		DeflateConns:      k.deflateConns.Load(),
		Inflated:          k.inflated.Load(),
		InflateTooBig:     k.inflateTooBig.Load(),
		Streams:           k.streams.Load(),
		ClosedByCode:      make(map[ws.StatusCode]uint64),
	}
	k.mu.Lock()
	for code, n := range k.closed {
		st.ClosedByCode[code] = n
	}
	k.mu.Unlock()
	return st
}
