package presence

import (
	"context"
	"slices"
	"sync"
)

// MemoryStore is the Store of a single process (the memory broker): the
// node's view is the whole view, so Heartbeat has nothing to expire.
type MemoryStore struct {
	mu    sync.Mutex
	chans map[string]*memChan
}

type memChan struct {
	conns int
	users map[string]struct{}
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{chans: map[string]*memChan{}} }

// Update implements Store.
func (m *MemoryStore) Update(_ context.Context, ch string, u Update) (joined, left []string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.chans[ch]
	if c == nil {
		c = &memChan{users: map[string]struct{}{}}
		m.chans[ch] = c
	}
	c.conns = u.Conns
	for _, user := range u.Add {
		if _, ok := c.users[user]; !ok {
			c.users[user] = struct{}{}
			joined = append(joined, user)
		}
	}
	for _, user := range u.Remove {
		if _, ok := c.users[user]; ok {
			delete(c.users, user)
			left = append(left, user)
		}
	}
	if c.conns == 0 && len(c.users) == 0 {
		delete(m.chans, ch)
	}
	return joined, left, nil
}

// Heartbeat implements Store: it only records conns and users (nothing
// expires in one process).
func (m *MemoryStore) Heartbeat(_ context.Context, ch string, conns int, users []string, reset bool) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.chans[ch]
	if c == nil {
		c = &memChan{users: map[string]struct{}{}}
		m.chans[ch] = c
	}
	if reset {
		clear(c.users)
	}
	c.conns = conns
	for _, u := range users {
		c.users[u] = struct{}{}
	}
	if c.conns == 0 && len(c.users) == 0 {
		delete(m.chans, ch)
	}
	return nil, nil
}

// Members implements Store: users in byte order; the cursor is an offset.
func (m *MemoryStore) Members(_ context.Context, ch string, cursor uint64, limit int) (Page, error) {
	m.mu.Lock()
	var all []string
	if c := m.chans[ch]; c != nil {
		all = make([]string, 0, len(c.users))
		for u := range c.users {
			all = append(all, u)
		}
	}
	m.mu.Unlock()
	slices.Sort(all)
	if limit <= 0 {
		limit = DefaultPageSize
	}
	if cursor >= uint64(len(all)) {
		return Page{Users: []string{}}, nil
	}
	end := min(uint64(len(all)), cursor+uint64(limit))
	p := Page{Users: all[cursor:end]}
	if end < uint64(len(all)) {
		p.Cursor = end
	}
	return p, nil
}

// Stats implements Store.
func (m *MemoryStore) Stats(_ context.Context, ch string) (Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.chans[ch]
	if c == nil {
		return Stats{}, nil
	}
	return Stats{Conns: int64(c.conns), Users: int64(len(c.users))}, nil
}
