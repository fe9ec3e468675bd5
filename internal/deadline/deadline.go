package deadline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Shared hands out contexts that end between d and d+slack from
// the call, one context for every caller within a slack-long window: a
// subscribe storm then costs one context and timer per window instead of
// a context, a timer and a Done channel per subscribe (about 650 bytes of
// garbage each, twice with the broker's own bound). The contexts are
// never cancelled early; each ends at its deadline.
type Shared struct {
	d, slack time.Duration

	cur atomic.Pointer[deadlineCtx]
	mu  sync.Mutex // serializes making a new one
}

type deadlineCtx struct {
	ctx    context.Context
	cancel context.CancelFunc // kept so the context is released by its timer, not leaked to vet
	end    time.Time
}

// New shares one context per d/16 (at most 250 ms).
func New(d time.Duration) *Shared {
	return &Shared{d: d, slack: min(d/16, 250*time.Millisecond)}
}

// Get returns a context that ends at least d from now.
func (sd *Shared) Get() context.Context {
	now := time.Now()
	if c := sd.cur.Load(); c != nil && c.end.Sub(now) >= sd.d {
		return c.ctx
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if c := sd.cur.Load(); c != nil && c.end.Sub(now) >= sd.d {
		return c.ctx
	}
	end := now.Add(sd.d + sd.slack)
	c := &deadlineCtx{end: end}
	c.ctx, c.cancel = context.WithDeadline(context.Background(), end)
	sd.cur.Store(c)
	return c.ctx
}
