package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// pubConfig describes the publishers: open-loop streams of personal
// publications (Rate per second, message k to connection k mod Total) and
// group publications (GroupRate per second, message j to group j mod
// Groups), sent the way backends send them.
type pubConfig struct {
	Total     int
	Groups    int
	Rate      float64
	GroupRate float64
	Prefix    string
	// Redis: PUBLISH pushd:{ch} payload, or with Durable
	// FCALL pushd_publish 1 pushd:{ch} payload.
	Redis   *redis.Client
	Durable bool
	// URLs: POST <url>?ch=<ch> with the payload as body, round-robin.
	URLs        []string
	Concurrency int
	HTTP        *http.Client
}

// pubResult is the publishers' account.
type pubResult struct {
	Sent     published
	Errors   map[string]uint64
	MaxLagMs float64 // worst lateness of a batch behind its schedule
	Seconds  float64
}

// pubMsg is one publication ready to send.
type pubMsg struct {
	ch      string
	payload []byte
}

// publisher generates the schedule; a sink sends batches.
type sink interface {
	send(ctx context.Context, batch []pubMsg) (failed int, class string)
	close()
}

// runPublisher publishes until ctx ends. Each publication is stamped with
// its scheduled send time (not the time it left), so a publisher that
// falls behind shows up as latency instead of hiding it (no coordinated
// omission). A failed publication still counts as sent: the message it
// carried is lost, and delivery shows it.
func runPublisher(ctx context.Context, cfg pubConfig, clock monoClock) pubResult {
	// A publication counted as sent must really be sent: sends are not
	// cancelled when the window ends (the HTTP timeout and go-redis's
	// read/write timeouts bound them).
	sendCtx := context.WithoutCancel(ctx)
	var s sink
	if cfg.Redis != nil {
		s = &redisSink{c: cfg.Redis, durable: cfg.Durable}
	} else {
		s = newHTTPSink(sendCtx, cfg)
	}
	defer s.close()
	res := pubResult{Errors: map[string]uint64{}}
	start := clock.now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var batch []pubMsg
	N, G := uint64(cfg.Total), uint64(cfg.Groups)
	for {
		select {
		case <-ctx.Done():
			res.Seconds = float64(clock.now()-start) / 1e9
			return res
		case <-tick.C:
		}
		now := clock.now()
		el := float64(now - start)
		batch = batch[:0]
		// Message k is due at start + k/rate, so floor(rate·el)+1 are due.
		dueU := uint64(cfg.Rate*el/1e9) + 1
		if cfg.Rate == 0 {
			dueU = 0
		}
		for res.Sent.Personal < dueU && len(batch) < 2000 {
			k := res.Sent.Personal
			at := start + int64(float64(k)*1e9/cfg.Rate)
			ch := cfg.Prefix + "u:" + strconv.FormatUint(k%N, 10)
			batch = append(batch, pubMsg{ch, appendPayload(nil, kindPersonal, k/N+1, at)})
			res.Sent.Personal++
		}
		if G > 0 && cfg.GroupRate > 0 {
			dueG := uint64(cfg.GroupRate*el/1e9) + 1
			for res.Sent.Group < dueG && len(batch) < 4000 {
				j := res.Sent.Group
				at := start + int64(float64(j)*1e9/cfg.GroupRate)
				ch := cfg.Prefix + "g:" + strconv.FormatUint(j%G, 10)
				batch = append(batch, pubMsg{ch, appendPayload(nil, kindGroup, j/G+1, at)})
				res.Sent.Group++
			}
		}
		if len(batch) == 0 {
			continue
		}
		// Lateness: how long the oldest publication of this batch waited
		// past its scheduled time (its "t" stamp) before the send began.
		if lag := float64(now-batchFirst(batch)) / 1e6; lag > res.MaxLagMs {
			res.MaxLagMs = lag
		}
		if failed, class := s.send(sendCtx, batch); failed > 0 {
			res.Errors[class] += uint64(failed)
		}
	}
}

// batchFirst returns the scheduled time of the batch's earliest
// publication (the minimum "t" of its payloads).
func batchFirst(batch []pubMsg) int64 {
	first := int64(-1)
	for _, m := range batch {
		if p, ok := parsePush(m.payload); ok && (first < 0 || p.t < first) {
			first = p.t
		}
	}
	return first
}

// redisSink pipelines a batch: one round trip per batch.
type redisSink struct {
	c       *redis.Client
	durable bool
}

func (r *redisSink) send(ctx context.Context, batch []pubMsg) (int, string) {
	pipe := r.c.Pipeline()
	for _, m := range batch {
		key := "pushd:{" + m.ch + "}"
		if r.durable {
			pipe.FCall(ctx, "pushd_publish", []string{key}, m.payload)
		} else {
			pipe.Publish(ctx, key, m.payload)
		}
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return 0, ""
	}
	if errors.Is(err, context.Canceled) {
		return 0, ""
	}
	failed := 0
	for _, c := range cmds {
		if c.Err() != nil {
			failed++
		}
	}
	return max(failed, 1), "redis_" + classifyRedis(err)
}

func classifyRedis(err error) string {
	var re redis.Error
	if errors.As(err, &re) {
		s := re.Error()
		if i := bytes.IndexByte([]byte(s), ' '); i > 0 {
			return s[:i]
		}
		return s
	}
	return "conn"
}

func (r *redisSink) close() {}

// httpSink sends each publication as POST <url>?ch=<ch> from a bounded
// pool of goroutines (Concurrency), waiting for the batch to finish.
type httpSink struct {
	cfg  pubConfig
	jobs chan httpJob
	wg   sync.WaitGroup
	rr   int
}

type httpJob struct {
	url  string
	m    pubMsg
	done chan<- string // "" on success, else the error class
}

func newHTTPSink(ctx context.Context, cfg pubConfig) *httpSink {
	h := &httpSink{cfg: cfg, jobs: make(chan httpJob)}
	for range max(cfg.Concurrency, 1) {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for j := range h.jobs {
				j.done <- h.post(ctx, j)
			}
		}()
	}
	return h
}

func (h *httpSink) post(ctx context.Context, j httpJob) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.url+"?ch="+j.m.ch, bytes.NewReader(j.m.payload))
	if err != nil {
		return "http_request"
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.cfg.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ""
		}
		return "http_conn"
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "http_status_" + strconv.Itoa(resp.StatusCode)
	}
	return ""
}

func (h *httpSink) send(ctx context.Context, batch []pubMsg) (int, string) {
	done := make(chan string, len(batch))
	for _, m := range batch {
		h.rr++
		h.jobs <- httpJob{url: h.cfg.URLs[h.rr%len(h.cfg.URLs)], m: m, done: done}
	}
	failed, class := 0, ""
	for range batch {
		if c := <-done; c != "" {
			failed++
			class = c
		}
	}
	return failed, class
}

func (h *httpSink) close() {
	close(h.jobs)
	h.wg.Wait()
}

// errPublisher formats a publisher setup failure.
func errPublisher(err error) error { return fmt.Errorf("publisher: %w", err) }
