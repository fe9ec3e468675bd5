package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/fanout"
)

// dispatch parses one pub/sub message received on pc and queues it for
// its channel's delivery worker (redis_ingest.go), which applies
// sequenceLocked. Raw messages (on pushd:{ch}) carry Seq 0; durable
// envelopes (on pushd:{ch}:d) their seq. It never blocks: the reader keeps
// up with Redis whatever the sockets do.
func (b *Redis) dispatch(pc *psConn, name, payload string) {
	ch, durable, ok := parseName(name)
	if !ok {
		b.stats.unwanted.Add(1)
		return
	}
	rc := b.lookup(ch)
	if rc == nil {
		b.stats.unwanted.Add(1)
		return
	}
	pub := fanout.Publication{Channel: ch}
	if durable {
		b.stats.durableIn.Add(1)
		seq, data, err := DecodeEnvelope([]byte(payload))
		if err != nil {
			b.stats.malformed.Add(1)
			return
		}
		pub.Seq, pub.Data = seq, data
	} else {
		b.stats.rawIn.Add(1)
		pub.Data = []byte(payload)
	}
	b.ing.push(rc, pc, pub)
}

// sequenceLocked applies the channel's order rules to one publication
// from its ingest queue: raw ones are delivered; durable ones in sequence
// order: a duplicate is dropped, a gap starts a recovery from the stream
// while later messages wait in the channel's pending list. Deliverable
// publications are appended to out (the caller hands them to the hub
// before it releases rc.mu). Lock rc.mu must be held.
func (b *Redis) sequenceLocked(rc *rchan, pc *psConn, pub fanout.Publication, out []fanout.Publication) []fanout.Publication {
	switch {
	case rc.gone || rc.conn != pc:
		// Unsubscribed, or a connection the channel moved away from
		// (resharding) still delivering: the new owner's copy counts.
		b.stats.unwanted.Add(1)
	case rc.recovering:
		if len(rc.pending) >= maxPending {
			if pub.Seq == 0 {
				b.stats.lost.Add(1) // raw: at most once
			}
			rc.overflow = true // durable: it is in the stream
			return out
		}
		rc.pending = append(rc.pending, pub)
	case pub.Seq == 0:
		out = append(out, pub)
	case pub.Seq <= rc.last:
		b.stats.duplicates.Add(1)
	case pub.Seq == rc.last+1:
		rc.last = pub.Seq
		out = append(out, pub)
	default:
		rc.recovering = true
		rc.pending = append(rc.pending, pub)
		b.startRecovery(rc)
	}
	return out
}

// deliverLocked hands pub to the hub. Lock rc.mu must be held: it
// serializes a channel's deliveries (live and recovered) in order.
func (b *Redis) deliverLocked(rc *rchan, pub fanout.Publication) {
	if pub.Seq > rc.last {
		rc.last = pub.Seq
	}
	if hb := b.handler.Load(); hb != nil {
		hb.h.HandlePublication(pub)
	}
}

// startRecovery runs recoverChannel on a tracked goroutine. rc.recovering
// must already be set.
func (b *Redis) startRecovery(rc *rchan) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		select {
		case b.recSem <- struct{}{}:
		case <-b.ctx.Done():
			return
		}
		defer func() { <-b.recSem }()
		b.recoverChannel(b.ctx, rc)
	}()
}

// recoverChannel reads the stream after rc.last and delivers it, then the
// pending messages, then clears rc.recovering. Failed reads are retried
// with backoff until they succeed, the channel is unsubscribed or ctx
// ends. rc.recovering must be set by the caller.
func (b *Redis) recoverChannel(ctx context.Context, rc *rchan) {
	b.stats.recoveries.Add(1)
	backoff := b.cfg.BackoffMin
	for {
		rc.mu.Lock()
		from, gone := rc.last, rc.gone
		rc.mu.Unlock()
		if gone || ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
		_, pubs, err := b.readStream(rctx, rc.name, from, b.cfg.RecoverPage)
		cancel()
		if err != nil {
			b.log.Debug("redis: recovery read failed", "channel", rc.name, "err", err)
			if !sleepCtx(ctx, jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, b.cfg.BackoffMax)
			continue
		}
		rc.mu.Lock()
		if rc.gone {
			rc.mu.Unlock()
			return
		}
		for _, p := range pubs {
			if p.Seq > rc.last {
				if p.Seq > rc.last+1 {
					b.stats.lost.Add(p.Seq - rc.last - 1)
				}
				b.stats.recoveredPubs.Add(1)
				b.deliverLocked(rc, p)
			}
		}
		if len(pubs) == b.cfg.RecoverPage {
			rc.mu.Unlock()
			continue // more pages
		}
		for _, p := range rc.pending {
			switch {
			case p.Seq == 0:
				b.deliverLocked(rc, p)
			case p.Seq <= rc.last:
				b.stats.duplicates.Add(1)
			default:
				if p.Seq > rc.last+1 {
					// Published before the read above but not in the
					// stream: trimmed or expired.
					b.stats.lost.Add(p.Seq - rc.last - 1)
				}
				b.deliverLocked(rc, p)
			}
		}
		clear(rc.pending)
		rc.pending = rc.pending[:0]
		if rc.overflow {
			rc.overflow = false
			rc.mu.Unlock()
			continue
		}
		rc.recovering = false
		rc.mu.Unlock()
		return
	}
}

// resync checks, after a reconnect, which channels published while the
// connection was down (their counter is past the last delivered seq) and
// recovers them. Channels that publish again are caught by dispatch's gap
// check as well; this catches the quiet ones.
func (b *Redis) resync(ctx context.Context, names []string) {
	for len(names) > 0 && ctx.Err() == nil {
		n := min(len(names), 500)
		batch := names[:n]
		names = names[n:]
		var cmds []redis.Cmder
		for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
			// A pooled connection may have died with the server: retry.
			pipe := b.client.Pipeline()
			for _, ch := range batch {
				pipe.Get(ctx, keyPrefix+ch+seqSuffix)
			}
			var err error
			cmds, err = pipe.Exec(ctx)
			if err == nil || errors.Is(err, redis.Nil) {
				break
			}
			b.log.Debug("redis: resync read failed", "err", err)
		}
		for i, ch := range batch {
			if i >= len(cmds) {
				break
			}
			top, err := cmds[i].(interface{ Uint64() (uint64, error) }).Uint64()
			if errors.Is(err, redis.Nil) {
				top, err = 0, nil
			}
			if err != nil {
				continue // live gaps still recover
			}
			rc := b.lookup(ch)
			if rc == nil {
				continue
			}
			rc.mu.Lock()
			if top < rc.last && !rc.recovering {
				// The counter went backwards: Redis lost its data (a
				// restart without persistence). Follow the new counter
				// instead of dropping everything up to the old one.
				b.stats.resets.Add(1)
				b.log.Warn("redis: channel sequence went backwards; following the new counter", "channel", ch, "was", rc.last, "now", top)
				rc.last = top
			}
			start := !rc.recovering && !rc.gone && top > rc.last
			if start {
				rc.recovering = true
			}
			rc.mu.Unlock()
			if start {
				b.startRecovery(rc)
			}
		}
	}
}

// rehome moves rc to the primary that owns its slot now (Redis Cluster
// resharding), waits for the new subscription and recovers what was
// published meanwhile.
func (b *Redis) rehome(rc *rchan) {
	ctx := b.ctx
	backoff := b.cfg.BackoffMin
	for ctx.Err() == nil {
		b.cluster.ReloadState(ctx)
		pc, err := b.connFor(ctx, rc.name)
		if err == nil {
			rc.mu.Lock()
			old, gone := rc.conn, rc.gone
			rc.conn = pc
			rc.mu.Unlock()
			if gone {
				return
			}
			if old != pc {
				old.unwant(rc.name)
			}
			select {
			case <-pc.add(rc.name):
				rc.mu.Lock()
				start := !rc.recovering && !rc.gone
				rc.recovering = rc.recovering || start
				rc.mu.Unlock()
				if start {
					b.recoverChannel(ctx, rc)
				}
				return
			case <-time.After(b.cfg.SubscribeTimeout):
			case <-ctx.Done():
				return
			}
		}
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, b.cfg.BackoffMax)
	}
}
