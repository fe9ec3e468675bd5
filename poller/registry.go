package poller

import (
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"
)

// registry tracks live connections for Shutdown. Connections are linked
// intrusively into one of regShards lists (two pointers per connection, no
// map entry), sharded by id so accepts on different loops rarely contend.
type registry struct {
	shards [regShards]regShard
}

const regShards = 32

type regShard struct {
	mu   sync.Mutex
	head *Conn
}

// regLink is a connection's place in its registry shard. Guarded by the
// shard's mu.
type regLink struct {
	next, prev *Conn
}

func (r *registry) shard(c *Conn) *regShard { return &r.shards[c.id%regShards] }

func (r *registry) add(c *Conn) {
	sh := r.shard(c)
	sh.mu.Lock()
	c.reg.next = sh.head
	if sh.head != nil {
		sh.head.reg.prev = c
	}
	sh.head = c
	sh.mu.Unlock()
}

func (r *registry) remove(c *Conn) {
	sh := r.shard(c)
	sh.mu.Lock()
	if c.reg.prev != nil {
		c.reg.prev.reg.next = c.reg.next
	} else if sh.head == c {
		sh.head = c.reg.next
	}
	if c.reg.next != nil {
		c.reg.next.reg.prev = c.reg.prev
	}
	c.reg.next, c.reg.prev = nil, nil
	sh.mu.Unlock()
}

// each calls fn for every registered connection, outside the shard locks.
func (r *registry) each(fn func(*Conn)) {
	var batch []*Conn
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for c := sh.head; c != nil; c = c.reg.next {
			batch = append(batch, c)
		}
		sh.mu.Unlock()
		for _, c := range batch {
			fn(c)
		}
		batch = batch[:0]
	}
}

// counters are the poller's monotonic event counts.
type counters struct {
	accepted          atomic.Uint64
	upgraded          atomic.Uint64
	refused           atomic.Uint64
	rejected          atomic.Uint64
	handshakeFailures atomic.Uint64
	handshakeTimeouts atomic.Uint64
	pongTimeouts      atomic.Uint64
	protocolErrors    atomic.Uint64
	stalls            atomic.Uint64
	writeTimeouts     atomic.Uint64

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
	MaxConns          int64
	Accepted          uint64
	Upgraded          uint64
	Refused           uint64 // turned away before the upgrade (capacity, EMFILE)
	Rejected          uint64 // upgrade refused by the Handler
	HandshakeFailures uint64 // malformed or oversized upgrade requests
	HandshakeTimeouts uint64
	PongTimeouts      uint64
	ProtocolErrors    uint64
	Stalls            uint64 // times a socket's send buffer filled up
	WriteTimeouts     uint64 // stalled connections closed after WriteTimeout
	ClosedByCode      map[ws.StatusCode]uint64
}

// Stats returns a snapshot. It allocates; call it from admin paths only.
func (s *Server) Stats() Stats {
	k := &s.stats
	st := Stats{
		Conns:             s.conns.Load(),
		MaxConns:          s.maxConns,
		Accepted:          k.accepted.Load(),
		Upgraded:          k.upgraded.Load(),
		Refused:           k.refused.Load(),
		Rejected:          k.rejected.Load(),
		HandshakeFailures: k.handshakeFailures.Load(),
		HandshakeTimeouts: k.handshakeTimeouts.Load(),
		PongTimeouts:      k.pongTimeouts.Load(),
		ProtocolErrors:    k.protocolErrors.Load(),
		Stalls:            k.stalls.Load(),
		WriteTimeouts:     k.writeTimeouts.Load(),
		ClosedByCode:      make(map[ws.StatusCode]uint64),
	}
	k.mu.Lock()
	for code, n := range k.closed {
		st.ClosedByCode[code] = n
	}
	k.mu.Unlock()
	return st
}
