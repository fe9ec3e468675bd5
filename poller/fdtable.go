package poller

import (
	"sync"
	"sync/atomic"
)

// fdTable maps a descriptor to its connection. netpoll hands OnRequest
// only the netpoll.Connection; rather than carry *Conn in a per-connection
// context (48 bytes each) or a map (an entry and rehashing each), the
// table is a two-level array indexed by fd: lookups are two atomic loads,
// and an idle connection costs one pointer slot. Chunks are allocated on
// first use and kept; descriptors are dense and reused by the kernel.
//
// A slot is set in prepare and cleared in the close callback, which
// netpoll runs before it closes the descriptor, so a reused fd never finds
// a stale connection.
type fdTable struct {
	mu     sync.Mutex // serialises chunk allocation
	chunks [fdChunks]atomic.Pointer[fdChunk]
}

const (
	fdChunkBits = 12
	fdChunkSize = 1 << fdChunkBits
	fdChunks    = 1 << 10 // 4M descriptors
)

type fdChunk [fdChunkSize]atomic.Pointer[Conn]

func (t *fdTable) slot(fd int, create bool) *atomic.Pointer[Conn] {
	if fd < 0 || fd >= fdChunks*fdChunkSize {
		return nil
	}
	ci := fd >> fdChunkBits
	ch := t.chunks[ci].Load()
	if ch == nil {
		if !create {
			return nil
		}
		t.mu.Lock()
		if ch = t.chunks[ci].Load(); ch == nil {
			ch = new(fdChunk)
			t.chunks[ci].Store(ch)
		}
		t.mu.Unlock()
	}
	return &ch[fd&(fdChunkSize-1)]
}

// set registers c under its descriptor; it reports false when the
// descriptor is out of the table's range.
func (t *fdTable) set(fd int, c *Conn) bool {
	s := t.slot(fd, true)
	if s == nil {
		return false
	}
	s.Store(c)
	return true
}

// get returns the connection registered under fd, or nil.
func (t *fdTable) get(fd int) *Conn {
	if s := t.slot(fd, false); s != nil {
		return s.Load()
	}
	return nil
}

// clear removes c's registration if it is still the one under fd.
func (t *fdTable) clear(fd int, c *Conn) {
	if s := t.slot(fd, false); s != nil {
		s.CompareAndSwap(c, nil)
	}
}

// each calls fn for every registered connection until fn returns false.
func (t *fdTable) each(fn func(*Conn) bool) {
	for i := range t.chunks {
		ch := t.chunks[i].Load()
		if ch == nil {
			continue
		}
		for j := range ch {
			if c := ch[j].Load(); c != nil && !fn(c) {
				return
			}
		}
	}
}
