package cluster

import (
	"context"
	"strconv"
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
		epoch, seq, data, err := DecodeEnvelope([]byte(payload))
		if err != nil {
			b.stats.malformed.Add(1)
			return
		}
		// rc.epoch belongs to the channel's worker (under rc.mu): no
		// interning here, on the reader.
		pub.Seq, pub.Data, pub.Epoch = seq, data, string(epoch)
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
	case rc.gone || rc.conn.Load() != pc:
		// Unsubscribed, or a connection the channel moved away from
		// (resharding) still delivering: the new owner's copy counts.
		b.stats.unwanted.Add(1)
	case rc.recovering:
		if rc.pendingLen() >= maxPending {
			if pub.Seq == 0 {
				b.stats.lost.Add(1) // raw: at most once
			}
			rc.overflow = true // durable: it is in the stream
			return out
		}
		rc.holdLocked(pub)
	case pub.Seq == 0:
		out = append(out, pub)
	default:
		b.followLocked(rc, pub)
		switch {
		case pub.Seq <= rc.last:
			b.stats.duplicates.Add(1)
		case pub.Seq == rc.last+1:
			out = append(out, b.stampLocked(rc, pub))
		default:
			rc.recovering = true
			rc.holdLocked(pub)
			b.startRecovery(rc)
		}
	}
	return out
}

// followLocked switches rc to pub's epoch when the channel's stream was
// recreated (FLUSHALL, expiry, a restart without persistence, a failover
// to a replica without it): the new epoch counts from 1, so the gap check
// starts again from 0 and a recovery, if needed, reads the new stream from
// its start. An unknown epoch ("": a counter from before epochs, or none
// yet) is adopted without a reset unless the counter went backwards.
// Publications of the old epoch that were never delivered are lost; the
// hub's subscribers learn it from the epoch change in the next push.
// Lock rc.mu must be held.
func (b *Redis) followLocked(rc *rchan, pub fanout.Publication) {
	if pub.Epoch == rc.epoch || pub.Epoch == "" {
		return
	}
	if rc.epoch != "" || pub.Seq <= rc.last {
		if rc.last > 0 {
			b.stats.resets.Add(1)
		}
		rc.last = 0
	}
	rc.epoch = pub.Epoch
}

// stampLocked advances rc past pub and returns pub with the epoch rc
// follows when it names none (a version-1 envelope). Lock rc.mu must be
// held.
func (b *Redis) stampLocked(rc *rchan, pub fanout.Publication) fanout.Publication {
	if pub.Seq > rc.last {
		rc.last = pub.Seq
	}
	if pub.Seq != 0 {
		if pub.Epoch == "" {
			pub.Epoch = rc.epoch
		} else if pub.Epoch == rc.epoch {
			pub.Epoch = rc.epoch // share rc's string: the hub keeps the channel's epoch
		}
	}
	return pub
}

// deliverLocked hands pub to the hub. Lock rc.mu must be held: it
// serializes a channel's deliveries (live and recovered) in order.
func (b *Redis) deliverLocked(rc *rchan, pub fanout.Publication) {
	pub = b.stampLocked(rc, pub)
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
// pending messages, then clears rc.recovering. When the stream's epoch is
// not rc's, the stream was recreated: rc follows it from seq 0 and the
// read starts over. A pending message of another epoch than the stream's
// is skipped and the stream read once more: it was either of an older
// epoch (lost with its stream: counted in Lost) or of a newer one (then
// the next read finds it). Failed reads are retried with backoff until
// they succeed, the channel is unsubscribed or ctx ends. rc.recovering
// must be set by the caller.
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
		st, err := b.readStream(rctx, rc.name, &from, b.cfg.RecoverPage)
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
		if st.epoch != rc.epoch && st.epoch != "" {
			if rc.epoch != "" || st.top < rc.last {
				if rc.last > 0 {
					b.stats.resets.Add(1)
				}
				rc.last = 0
			}
			rc.epoch = st.epoch
			if from != rc.last {
				rc.mu.Unlock()
				continue // read the new stream from its start
			}
		}
		for _, p := range st.pubs {
			if p.Seq > rc.last {
				if p.Seq > rc.last+1 {
					b.stats.lost.Add(p.Seq - rc.last - 1)
				}
				b.stats.recoveredPubs.Add(1)
				b.deliverLocked(rc, p)
			}
		}
		if len(st.pubs) == b.cfg.RecoverPage {
			rc.mu.Unlock()
			continue // more pages
		}
		again := b.deliverPendingLocked(rc)
		if rc.overflow || again {
			rc.overflow = false
			rc.mu.Unlock()
			continue
		}
		rc.recovering = false
		rc.mu.Unlock()
		return
	}
}

// deliverPendingLocked hands the messages that waited during a recovery to
// the hub, in order, and empties the list. It reports whether one of
// another epoch was skipped (the stream must be read again). Lock rc.mu
// must be held.
func (b *Redis) deliverPendingLocked(rc *rchan) (again bool) {
	if rc.pending == nil {
		return false
	}
	for _, p := range rc.pending.pubs {
		switch {
		case p.Seq == 0:
			b.deliverLocked(rc, p)
		case p.Epoch != rc.epoch && p.Epoch != "":
			b.stats.lost.Add(1) // unless a newer epoch's stream has it (read again)
			again = true
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
	rc.pending = nil
	return again
}

// resync is the entry point for "these channels' subscription broke and
// is confirmed again; recover them" (cluster/doc.go). It reads each
// channel's (top, epoch) and compares it with what was handed to the hub:
// a channel whose counter moved past the last delivered seq is recovered
// from its stream; one whose epoch changed (its stream was recreated) or
// whose counter went backwards follows the new epoch from seq 0 and
// recovers the new stream; every other channel is left alone. Channels
// that publish again are caught by dispatch's gap and epoch checks as
// well; this catches the quiet ones. Call it after the subscription is
// confirmed and before the connection's next live message is dispatched.
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
				// One slot: both keys carry the {ch} hash tag.
				pipe.MGet(ctx, keyPrefix+ch+seqSuffix, keyPrefix+ch+epochSuffix)
			}
			var err error
			cmds, err = pipe.Exec(ctx)
			if err == nil {
				break
			}
			b.log.Debug("redis: resync read failed", "err", err)
		}
		for i, ch := range batch {
			if i >= len(cmds) {
				break
			}
			top, epoch, ok := parseTopEpoch(cmds[i])
			if !ok {
				continue // live gaps still recover
			}
			if rc := b.lookup(ch); rc != nil {
				b.resyncOne(rc, top, epoch)
			}
		}
	}
}

// parseTopEpoch reads an MGET seq epoch reply.
func parseTopEpoch(c redis.Cmder) (top uint64, epoch string, ok bool) {
	mc, isMGet := c.(*redis.SliceCmd)
	if !isMGet || mc.Err() != nil || len(mc.Val()) != 2 {
		return 0, "", false
	}
	v := mc.Val()
	if v[0] != nil {
		s, _ := v[0].(string)
		t, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, "", false
		}
		top = t
	}
	if s, _ := v[1].(string); top > 0 && fanout.ValidEpoch(s) {
		epoch = s
	}
	return top, epoch, true
}

// resyncOne applies resync's decision to one channel.
func (b *Redis) resyncOne(rc *rchan, top uint64, epoch string) {
	rc.mu.Lock()
	if rc.recovering || rc.gone {
		rc.mu.Unlock()
		return // the running recovery reads the stream anyway
	}
	changed := epoch != rc.epoch && (rc.epoch != "" || epoch == "" && top < rc.last)
	if !changed && epoch != "" && top < rc.last {
		// The counter went back in the same epoch: Redis lost writes it
		// had acknowledged (a failover to a replica that missed them).
		// Its next seqs would number other publications: fence the epoch.
		was := rc.epoch + ":" + strconv.FormatUint(rc.last, 10)
		rc.mu.Unlock()
		ftop, fepoch, err := b.fence(rc.name, epoch)
		rc.mu.Lock()
		if err == nil && !rc.recovering && !rc.gone {
			b.stats.resets.Add(1)
			b.log.Warn("redis: channel counter went back in its epoch (lost writes); fenced with a new epoch", "channel", rc.name, "was", was, "now", fepoch+":"+strconv.FormatUint(ftop, 10))
			rc.epoch, rc.last = fepoch, ftop
			rc.mu.Unlock()
			return
		}
		if err != nil {
			b.log.Warn("redis: fencing a channel whose counter went back failed", "channel", rc.name, "err", err)
		}
		if rc.recovering || rc.gone {
			rc.mu.Unlock()
			return
		}
	}
	if changed || top < rc.last {
		// Redis lost the channel's data (FLUSHALL, a restart without
		// persistence, expiry, a failover): follow the new stream from
		// its start instead of dropping everything up to the old seq.
		b.stats.resets.Add(1)
		b.log.Warn("redis: channel stream was recreated; following the new epoch", "channel", rc.name, "was", rc.epoch+":"+strconv.FormatUint(rc.last, 10), "now", epoch+":"+strconv.FormatUint(top, 10))
		rc.last = 0
		rc.epoch = epoch
	} else if epoch != "" {
		rc.epoch = epoch
	}
	start := top > rc.last
	rc.recovering = start
	rc.mu.Unlock()
	if start {
		b.startRecovery(rc)
	}
}

// fence runs pushd_fence: a new epoch for the channel unless its epoch
// is no longer epoch; it returns the channel's top and current epoch.
func (b *Redis) fence(channel, epoch string) (uint64, string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.PublishTimeout)
	defer cancel()
	v, err := b.client.FCall(ctx, "pushd_fence", []string{rawName(channel)}, epoch).Slice()
	if err != nil {
		return 0, "", err
	}
	st, err := parseHistory(channel, v)
	return st.top, st.epoch, err
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
			if rc.gone {
				rc.mu.Unlock()
				return
			}
			// Under rc.mu, so that a concurrent forget unwants the new
			// connection after this add (not before: a leaked
			// subscription).
			old := rc.conn.Load()
			confirmed := pc.moveIn(rc)
			rc.mu.Unlock()
			if old != pc {
				old.unwant(rc.name)
			}
			select {
			case <-confirmed:
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
