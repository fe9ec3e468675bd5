package poller

import (
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// admission enforces the per-source-address limits in the listener's
// Accept, before netpoll allocates anything for the connection: at most
// MaxConnsPerIP connections (handshaking or open) per address, and a token
// bucket of ConnectRate new connections per second (ConnectBurst deep) per
// address. IPv6 addresses are grouped by /64, the smallest block a client
// usually controls. One mutex: Accept runs on one poller goroutine, the
// release on close callbacks.
type admission struct {
	maxPerIP int
	rate     float64 // tokens per second; 0: no rate limit
	burst    float64
	start    time.Time // monotonic base of nanos

	mu        sync.Mutex
	ips       map[netip.Addr]*ipState
	nextSweep int
}

// ipState is one source's count and connect bucket. Guarded by admission.mu.
type ipState struct {
	conns  int
	tokens float64
	last   int64 // nanos since start of the last refill
}

const minSweep = 1024

func newAdmission(cfg Config) *admission {
	if cfg.MaxConnsPerIP <= 0 && cfg.ConnectRate <= 0 {
		return nil
	}
	burst := float64(cfg.ConnectBurst)
	if burst < 1 {
		burst = max(1, math.Ceil(cfg.ConnectRate))
	}
	return &admission{
		maxPerIP:  cfg.MaxConnsPerIP,
		rate:      cfg.ConnectRate,
		burst:     burst,
		start:     time.Now(),
		ips:       map[netip.Addr]*ipState{},
		nextSweep: minSweep,
	}
}

// sourceKey is the address admission counts by.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// admit counts one new connection from ip and returns its source's state,
// which the connection keeps for release (8 bytes instead of the address's
// 24), or refuses it: reason is "per_ip" or "rate", retry the seconds the
// client should wait. A source with connections is never swept, so the
// pointer stays the map's entry while the connection lives.
func (a *admission) admit(ip netip.Addr) (src *ipState, ok bool, reason string, retry int) {
	now := int64(time.Since(a.start))
	key := sourceKey(ip)
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.ips[key]
	if st == nil {
		if len(a.ips) >= a.nextSweep {
			a.sweepLocked(now)
		}
		st = &ipState{tokens: a.burst, last: now}
		a.ips[key] = st
	}
	if a.maxPerIP > 0 && st.conns >= a.maxPerIP {
		return nil, false, "per_ip", 1
	}
	if a.rate > 0 {
		a.refill(st, now)
		if st.tokens < 1 {
			return nil, false, "rate", max(1, int(math.Ceil((1-st.tokens)/a.rate)))
		}
		st.tokens--
	}
	st.conns++
	return st, true, "", 0
}

// lookup returns the state of a source admit counted a live connection
// from (nil: none), for a connection that learns its address only later
// (the netpoll backend's prepare).
func (a *admission) lookup(ip netip.Addr) *ipState {
	key := sourceKey(ip)
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.ips[key]; st != nil && st.conns > 0 {
		return st
	}
	return nil
}

func (a *admission) refill(st *ipState, now int64) {
	st.tokens = min(a.burst, st.tokens+float64(now-st.last)/1e9*a.rate)
	st.last = now
}

// release forgets one connection counted by admit in src.
func (a *admission) release(src *ipState) {
	a.mu.Lock()
	if src.conns > 0 {
		src.conns--
	}
	a.mu.Unlock()
}

// sweepLocked drops sources with no connection and a full bucket (they
// would be recreated identical). Lock a.mu must be held. The next sweep
// waits until the map has doubled, so sweeping costs O(1) per admit.
func (a *admission) sweepLocked(now int64) {
	for k, st := range a.ips {
		if st.conns > 0 {
			continue
		}
		if a.rate > 0 {
			a.refill(st, now)
			if st.tokens < a.burst {
				continue
			}
		}
		delete(a.ips, k)
	}
	a.nextSweep = max(minSweep, 2*len(a.ips))
}

// refusalWith is the 503 written to a connection turned away before the
// upgrade, with its Retry-After.
func refusalWith(retry int, reason string) []byte {
	body := reason + "\r\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + strconv.Itoa(retry) +
		"\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nConnection: close\r\n\r\n" + body)
}
