// Package rooms is the channel → subscribers registry of the peers that
// broadcast from the publisher's goroutine (gobwas, nbio): one RWMutex over
// a map of sets, the textbook shape. It is safe for concurrent use;
// Snapshot copies the subscribers under the read lock so writes happen
// outside it.
package rooms

import (
	"sync"
	"sync/atomic"
)

// Rooms maps channel names to sets of C.
type Rooms[C comparable] struct {
	mu    sync.RWMutex
	rooms map[string]map[C]struct{}
	n     atomic.Int64
}

// New returns an empty registry.
func New[C comparable]() *Rooms[C] {
	return &Rooms[C]{rooms: map[string]map[C]struct{}{}}
}

// Add subscribes c to ch.
func (r *Rooms[C]) Add(ch string, c C) {
	r.mu.Lock()
	defer r.mu.Unlock()
	room := r.rooms[ch]
	if room == nil {
		room = map[C]struct{}{}
		r.rooms[ch] = room
	}
	if _, ok := room[c]; !ok {
		room[c] = struct{}{}
		r.n.Add(1)
	}
}

// Remove unsubscribes c from ch.
func (r *Rooms[C]) Remove(ch string, c C) {
	r.mu.Lock()
	defer r.mu.Unlock()
	room := r.rooms[ch]
	if _, ok := room[c]; !ok {
		return
	}
	delete(room, c)
	if len(room) == 0 {
		delete(r.rooms, ch)
	}
	r.n.Add(-1)
}

// Snapshot appends the subscribers of ch to dst.
func (r *Rooms[C]) Snapshot(dst []C, ch string) []C {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for c := range r.rooms[ch] {
		dst = append(dst, c)
	}
	return dst
}

// Len returns the count of subscriptions.
func (r *Rooms[C]) Len() int64 { return r.n.Load() }
