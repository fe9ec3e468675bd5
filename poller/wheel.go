package poller

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// wheel is a hashed timing wheel: every connection with a pending deadline
// sits in exactly one slot, linked through its timerLink. One goroutine
// ticks the whole server, so heartbeats, handshake, pong and close
// timeouts cost no timer and no goroutine per connection.
//
// Deadlines are lazy: a connection that reads data only stores the current
// tick in an atomic (conn.lastRead); when its slot comes due the connection
// computes its real next deadline and is re-linked. A slot holds entries of
// every revolution; an entry fires only once its due tick has passed.
type wheel struct {
	tick  time.Duration
	now   atomic.Int64 // current tick number, read lock-free by connections
	mu    sync.Mutex   // guards slots and every conn's timerLink
	slots []*Conn
	fire  func(c *Conn, now int64)
	batch []*Conn // owned by run
}

// timerLink is a connection's place in the wheel. Guarded by wheel.mu.
type timerLink struct {
	next, prev *Conn
	due        int64 // tick at which the timer fires; 0 when unlinked
}

const wheelSlots = 1024

func newWheel(tick time.Duration, fire func(c *Conn, now int64)) *wheel {
	w := &wheel{tick: tick, slots: make([]*Conn, wheelSlots), fire: fire}
	w.now.Store(1)
	return w
}

// ticks converts a duration to a whole number of ticks, at least one.
func (w *wheel) ticks(d time.Duration) int64 {
	n := int64((d + w.tick - 1) / w.tick)
	if n < 1 {
		n = 1
	}
	return n
}

// schedule (re)links c to fire at tick due.
func (w *wheel) schedule(c *Conn, due int64) {
	if now := w.now.Load(); due <= now {
		due = now + 1
	}
	w.mu.Lock()
	w.unlinkLocked(c)
	t := &c.timer
	t.due = due
	slot := &w.slots[due%wheelSlots]
	t.next = *slot
	if *slot != nil {
		(*slot).timer.prev = c
	}
	*slot = c
	w.mu.Unlock()
}

// scheduleBefore links c to fire at tick due unless it is linked to fire
// earlier. An unlinked c is linked only while it is not closed (a firing
// connection reschedules itself, re-reading its deadlines).
func (w *wheel) scheduleBefore(c *Conn, due int64) {
	if now := w.now.Load(); due <= now {
		due = now + 1
	}
	w.mu.Lock()
	if d := c.timer.due; (d != 0 && d <= due) || (d == 0 && c.state.Load() == stateClosed) {
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	w.schedule(c, due)
}

// cancel unlinks c. It is idempotent.
func (w *wheel) cancel(c *Conn) {
	w.mu.Lock()
	w.unlinkLocked(c)
	w.mu.Unlock()
}

// unlinkLocked removes c from its slot. Lock w.mu must be held.
func (w *wheel) unlinkLocked(c *Conn) {
	t := &c.timer
	if t.due == 0 {
		return
	}
	if t.prev != nil {
		t.prev.timer.next = t.next
	} else {
		w.slots[t.due%wheelSlots] = t.next
	}
	if t.next != nil {
		t.next.timer.prev = t.prev
	}
	t.next, t.prev, t.due = nil, nil, 0
}

// run advances the wheel every tick until ctx is done.
func (w *wheel) run(ctx context.Context) {
	tk := time.NewTicker(w.tick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			w.advance()
		}
	}
}

// advance moves to the next tick and fires every due entry of its slot.
// Entries are collected under the lock and fired outside it, so a firing
// connection may reschedule itself.
func (w *wheel) advance() {
	now := w.now.Add(1)
	w.mu.Lock()
	for c := w.slots[now%wheelSlots]; c != nil; {
		next := c.timer.next
		if c.timer.due <= now {
			w.unlinkLocked(c)
			w.batch = append(w.batch, c)
		}
		c = next
	}
	w.mu.Unlock()
	for i, c := range w.batch {
		w.fire(c, now)
		w.batch[i] = nil
	}
	w.batch = w.batch[:0]
}
