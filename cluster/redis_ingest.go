package cluster

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/fanout"
)

// The Redis ingest: the pub/sub readers only parse and enqueue; delivery
// workers hand the publications to the hub. Redis therefore never waits
// for client sockets (it would buffer for us up to its client output
// buffer limit and then cut the connection, silencing every channel on
// it). Each channel has a byte-bounded queue owned by one worker (by
// hash), so order per channel holds; a worker serves its ready channels
// round robin, at most ingestQuantum entries per turn, so a quiet channel
// waits for at most one turn of each busy channel, never for their
// backlog. A full queue (the channel's budget, or the node's) sheds by
// the channel's policy and counts every publication shed.

// Defaults for the ingest's RedisConfig fields.
const (
	DefaultIngestChannelBytes = 1 << 20
	DefaultIngestNodeBytes    = 64 << 20
	DefaultPubSubConns        = 4
)

// ingestQuantum bounds the entries one worker turn takes from a
// backlogged channel, freshQuantum from a fresh one (a channel with a
// backlog that arrives as fresh gets a short turn and joins the others).
const (
	ingestQuantum = 128
	freshQuantum  = 8
)

// entryOverhead is what one queued entry costs beside its payload (the
// entry itself and the payload's allocation).
const entryOverhead = 96

// overloadWindow: the broker reports Overloaded for this long after a shed.
const overloadWindow = 10 * time.Second

// ingestEntry is one queued publication, or a run of shed ones.
type ingestEntry struct {
	pub fanout.Publication
	pc  *psConn
	// shed: the publications this entry stands for were dropped (gap
	// notice, unless silent: conflated). from..to is their seq range (0:
	// only unsequenced ones) in the epoch pub.Epoch.
	shed     bool
	silent   bool
	from, to uint64
}

// iqueue is one channel's ingest queue, guarded by its worker's mu.
type iqueue struct {
	buf   []ingestEntry
	head  int
	bytes int
	ready bool // in the worker's ready list
}

func (q *iqueue) len() int { return len(q.buf) - q.head }

// reset empties a drained queue; a large array goes back to the GC, so a
// burst's backlog does not stay allocated per channel.
func (q *iqueue) reset() {
	if cap(q.buf) > 256 {
		q.buf = nil
	} else {
		clear(q.buf)
		q.buf = q.buf[:0]
	}
	q.head = 0
}

func (q *iqueue) push(e ingestEntry) {
	if q.head > 0 && q.head >= len(q.buf)/2 && len(q.buf) == cap(q.buf) {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, e)
}

// ingestWorker serves two lists of channels, like fq_codel's new and old
// flows: fresh holds channels that were in no list when a publication
// arrived (quiet ones), ready the backlogged channels. A fresh channel
// goes before every backlogged one, so a quiet channel waits for the turn
// in progress and the other fresh ones, not for a round of the backlog.
// A fresh channel still queued after its short turn joins ready; a ready
// channel leaves the lists only when it is found empty at its turn, so a
// busy channel does not keep coming back as fresh.
type ingestWorker struct {
	mu    sync.Mutex
	fresh rlist
	ready rlist
	wake  chan struct{}
}

// rlist is a FIFO of channels.
type rlist struct {
	q    []*rchan
	head int
}

func (l *rlist) empty() bool { return l.head == len(l.q) }

func (l *rlist) push(rc *rchan) {
	if l.head > 64 && l.head > len(l.q)/2 {
		n := copy(l.q, l.q[l.head:])
		clear(l.q[n:])
		l.q, l.head = l.q[:n], 0
	}
	l.q = append(l.q, rc)
}

func (l *rlist) pop() *rchan {
	rc := l.q[l.head]
	l.q[l.head] = nil
	l.head++
	if l.head == len(l.q) {
		l.q, l.head = l.q[:0], 0
	}
	return rc
}

type ingest struct {
	b          *Redis
	workers    []*ingestWorker
	chanBudget int
	reserve    int // a channel's share the node's budget never sheds
	nodeBudget int64
	bytes      atomic.Int64 // queued bytes on the node

	shedChannel, shedNode, conflated atomic.Uint64
	lastShed                         atomic.Int64 // unix nanoseconds
}

func newIngest(b *Redis, workers, chanBudget int, nodeBudget int64) *ingest {
	in := &ingest{b: b, chanBudget: chanBudget, nodeBudget: nodeBudget, reserve: min(chanBudget/4, 64<<10)}
	for range workers {
		in.workers = append(in.workers, &ingestWorker{wake: make(chan struct{}, 1)})
	}
	return in
}

func (in *ingest) workerFor(h uint64) *ingestWorker {
	return in.workers[(h>>32)%uint64(len(in.workers))]
}

// push queues pub for rc (read on pc), or sheds it when rc's queue is over
// the channel's budget, or over its reserve while the node's queues are
// over the node's budget. An empty queue always takes one publication,
// and the node's budget never sheds a channel below its reserve: a quiet
// channel is not shed for the busy ones' backlog. Memory stays bounded by
// the node's budget plus one reserve per channel.
func (in *ingest) push(rc *rchan, pc *psConn, pub fanout.Publication) {
	w := rc.worker
	size := len(pub.Data) + entryOverhead
	w.mu.Lock()
	q := rc.iq
	if q == nil {
		q = &iqueue{}
		rc.iq = q
	}
	if q.bytes > 0 {
		reason := &in.shedChannel
		over := q.bytes+size > in.chanBudget
		if !over && q.bytes+size > in.reserve && in.bytes.Load()+int64(size) > in.nodeBudget {
			over, reason = true, &in.shedNode
		}
		if over {
			in.lastShed.Store(time.Now().UnixNano())
			if rc.conflate {
				in.evictLocked(q)
			} else {
				reason.Add(1)
				in.shedLocked(q, pub.Epoch, pub.Seq)
				w.mu.Unlock()
				return
			}
		}
	}
	q.push(ingestEntry{pub: pub, pc: pc})
	q.bytes += size
	in.bytes.Add(int64(size))
	if !q.ready {
		q.ready = true
		w.fresh.push(rc)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// shedLocked records one dropped publication (seq 0: unsequenced) at the
// tail of q, merged into a tail shed entry of the same epoch. Lock w.mu
// must be held.
func (in *ingest) shedLocked(q *iqueue, epoch string, seq uint64) {
	if n := q.len(); n > 0 {
		t := &q.buf[len(q.buf)-1]
		if t.shed && !t.silent && (seq == 0 || t.from == 0 || t.pub.Epoch == epoch) {
			if seq != 0 {
				if t.from == 0 {
					t.from, t.pub.Epoch = seq, epoch
				}
				t.to = seq
			}
			return
		}
	}
	// A range names one epoch: a new epoch starts a new entry.
	q.push(ingestEntry{shed: true, from: seq, to: seq, pub: fanout.Publication{Epoch: epoch}})
}

// evictLocked conflates a full channel: its queued publications are
// dropped (counted as conflated) so that the newest, queued next, is the
// one delivered. Their seqs are remembered in a silent shed entry so the
// worker does not mistake them for a gap to recover. Lock w.mu must be
// held.
func (in *ingest) evictLocked(q *iqueue) {
	var from, to uint64
	var epoch string
	freed := 0
	for i := q.head; i < len(q.buf); i++ {
		e := &q.buf[i]
		if e.shed {
			if e.from != 0 && (from == 0 || e.pub.Epoch != epoch) {
				from, epoch = e.from, e.pub.Epoch
			}
			to = max(to, e.to)
			continue
		}
		freed += len(e.pub.Data) + entryOverhead
		in.conflated.Add(1)
		if s := e.pub.Seq; s != 0 {
			if from == 0 || e.pub.Epoch != epoch {
				from, epoch = s, e.pub.Epoch
			}
			to = s
		}
	}
	q.bytes -= freed
	in.bytes.Add(-int64(freed))
	clear(q.buf)
	q.buf, q.head = q.buf[:0], 0
	q.buf = append(q.buf, ingestEntry{shed: true, silent: true, from: from, to: to, pub: fanout.Publication{Epoch: epoch}})
}

// run is one delivery worker: it serves its ready channels round robin
// until ctx ends.
func (in *ingest) run(ctx context.Context, w *ingestWorker) {
	var take []ingestEntry
	var out []fanout.Publication
	for ctx.Err() == nil {
		w.mu.Lock()
		for w.fresh.empty() && w.ready.empty() {
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
			w.mu.Lock()
		}
		var rc *rchan
		quantum, fresh := ingestQuantum, !w.fresh.empty()
		if fresh {
			rc, quantum = w.fresh.pop(), freshQuantum
		} else {
			rc = w.ready.pop()
		}
		q := rc.iq
		n := min(q.len(), quantum)
		if n == 0 {
			// A backlogged channel that drained on its last turn: it
			// leaves the lists only now, so a busy channel whose queue
			// empties now and then does not come back as fresh.
			rc.iq = nil
			w.mu.Unlock()
			continue
		}
		take = append(take[:0], q.buf[q.head:q.head+n]...)
		clear(q.buf[q.head : q.head+n])
		q.head += n
		freed := 0
		for i := range take {
			if !take[i].shed {
				freed += len(take[i].pub.Data) + entryOverhead
			}
		}
		q.bytes -= freed
		in.bytes.Add(-int64(freed))
		if q.len() == 0 {
			q.reset()
		}
		if q.len() > 0 || !fresh {
			w.ready.push(rc)
		} else {
			rc.iq = nil // out of the lists and empty: the next push makes a new one
		}
		w.mu.Unlock()
		out = in.b.deliverEntries(rc, take, out[:0])
		clear(take)
		clear(out)
	}
}

// queuedBytes returns the bytes queued on the node.
func (in *ingest) queuedBytes() int64 { return in.bytes.Load() }

// overloaded reports whether the ingest shed within overloadWindow.
func (in *ingest) overloaded(now time.Time) bool {
	last := in.lastShed.Load()
	return last != 0 && now.Sub(time.Unix(0, last)) < overloadWindow
}

// deliverEntries hands entries taken from rc's ingest queue to the hub, in
// order, under rc.mu (which serializes them with recoveries): publications
// go through the channel's sequence rules and leave as one HandleBatch per
// run; a shed entry advances the channel past the shed seqs (so they are
// not "recovered" from the stream) and, unless silent, becomes a gap
// notice to every subscriber. out is scratch; it is returned for reuse.
func (b *Redis) deliverEntries(rc *rchan, entries []ingestEntry, out []fanout.Publication) []fanout.Publication {
	hb := b.handler.Load()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for i := range entries {
		e := &entries[i]
		if !e.shed {
			out = b.sequenceLocked(rc, e.pc, e.pub, out)
			continue
		}
		if rc.gone {
			continue
		}
		epoch := e.pub.Epoch
		if !rc.recovering && e.to != 0 {
			// The shed seqs are passed over (not recovered), in their
			// epoch: a new one is followed as a live push would be.
			b.followLocked(rc, fanout.Publication{Epoch: epoch, Seq: e.to})
			rc.last = max(rc.last, e.to)
		}
		if epoch == "" && e.to != 0 {
			epoch = rc.epoch
		}
		if e.silent {
			continue
		}
		out = handOut(hb, out)
		if bh, ok := hubOf(hb).(fanout.BatchHandler); ok {
			bh.HandleGap(rc.name, epoch, e.from, e.to)
		}
	}
	return handOut(hb, out)
}

func hubOf(hb *handlerBox) fanout.PublicationHandler {
	if hb == nil {
		return nil
	}
	return hb.h
}

// handOut delivers out (one channel's publications, in order) and returns
// it emptied.
func handOut(hb *handlerBox, out []fanout.Publication) []fanout.Publication {
	if len(out) == 0 || hb == nil {
		return out[:0]
	}
	if bh, ok := hb.h.(fanout.BatchHandler); ok {
		bh.HandleBatch(out)
	} else {
		for _, p := range out {
			hb.h.HandlePublication(p)
		}
	}
	clear(out)
	return out[:0]
}
