package main

import (
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/internal/srcaddr"
)

// slowFlags configure the slowwriters client.
type slowFlags struct {
	slow         int
	normal       int
	payload      int
	byteInterval time.Duration
	echoInterval time.Duration
	echoTimeout  time.Duration
	warmup       time.Duration
	before       time.Duration
	during       time.Duration
	drain        time.Duration
	groups       int
}

func (f *slowFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.slow, "slow", 1000, "slow writers: clients dribbling frames one byte at a time")
	fs.IntVar(&f.normal, "normal", 50, "normal clients doing echo round-trips")
	fs.IntVar(&f.payload, "payload", 100, "payload bytes of each slow frame (masked text)")
	fs.DurationVar(&f.byteInterval, "byte-interval", 10*time.Millisecond, "a slow writer sends one byte this often")
	fs.DurationVar(&f.echoInterval, "echo-interval", 100*time.Millisecond, "a normal client sends one echo this often")
	fs.DurationVar(&f.echoTimeout, "echo-timeout", 2*time.Second, "an echo not back by then is a stall")
	fs.DurationVar(&f.warmup, "warmup", time.Second, "normal echoes before measuring")
	fs.DurationVar(&f.before, "before", 5*time.Second, "window with normal clients only")
	fs.DurationVar(&f.during, "during", 10*time.Second, "window with the slow writers dribbling")
	fs.DurationVar(&f.drain, "drain", 2*time.Second, "wait for the last echoes after the window")
	fs.IntVar(&f.groups, "groups", 20, "slow writers are driven by this many goroutines, phase-shifted")
}

// args renders f as client flags.
func (f *slowFlags) args() []string {
	return []string{
		"-slow", itoa(f.slow), "-normal", itoa(f.normal), "-payload", itoa(f.payload),
		"-byte-interval", f.byteInterval.String(), "-echo-interval", f.echoInterval.String(),
		"-echo-timeout", f.echoTimeout.String(), "-warmup", f.warmup.String(),
		"-before", f.before.String(), "-during", f.during.String(), "-drain", f.drain.String(),
		"-groups", itoa(f.groups),
	}
}

// slowResult is what the slow writers did.
type slowResult struct {
	Conns       int            `json:"conns"`
	BytesSent   int64          `json:"bytes_sent"`
	FramesSent  int64          `json:"frames_sent"`
	Echoes      int64          `json:"echoes"`
	WriteErrors int64          `json:"write_errors"`
	ReadErrors  map[string]int `json:"read_errors,omitempty"`
	ConnectErrs map[string]int `json:"connect_errors,omitempty"`
}

// normalResult holds the normal clients' echo latency per window.
type normalResult struct {
	Conns       int            `json:"conns"`
	Before      latency        `json:"before"`
	During      latency        `json:"during"`
	ConnectErrs map[string]int `json:"connect_errors,omitempty"`
}

// latency summarizes round-trip samples; durations in microseconds.
type latency struct {
	N        int            `json:"n"`
	P50us    int64          `json:"p50_us"`
	P99us    int64          `json:"p99_us"`
	MaxUs    int64          `json:"max_us"`
	Timeouts int            `json:"timeouts"`
	Errors   map[string]int `json:"errors,omitempty"`
}

func summarize(samples []time.Duration, timeouts int, errs map[string]int) latency {
	l := latency{N: len(samples), Timeouts: timeouts, Errors: errs}
	if len(samples) == 0 {
		return l
	}
	slices.Sort(samples)
	q := func(p float64) int64 { return samples[int(p*float64(len(samples)-1))].Microseconds() }
	l.P50us, l.P99us, l.MaxUs = q(0.50), q(0.99), samples[len(samples)-1].Microseconds()
	return l
}

// Phases of a slowwriters run, in order.
const (
	phaseWarmup int32 = iota
	phaseBefore
	phaseDuring
	phaseDrain
)

// phaseRecorder collects echo samples by phase.
type phaseRecorder struct {
	mu       sync.Mutex
	samples  [2][]time.Duration // before, during
	timeouts [2]int
	errs     [2]map[string]int
}

func (r *phaseRecorder) add(phase int32, d time.Duration, err error) {
	i := int(phase - phaseBefore)
	if i < 0 || i > 1 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err == nil:
		r.samples[i] = append(r.samples[i], d)
	case reason(err) == "timeout":
		r.timeouts[i]++
	default:
		if r.errs[i] == nil {
			r.errs[i] = map[string]int{}
		}
		r.errs[i][reason(err)]++
	}
}

func runSlowClient(ctx context.Context, cf clientFlags, sf slowFlags, d *srcaddr.Dialer, out *eventWriter) int {
	slow, slowErrs := openConns(ctx, cf, d, sf.slow)
	normal, normErrs := openConns(ctx, cf, d, sf.normal)
	defer func() {
		for _, c := range slices.Concat(slow, normal) {
			c.c.Close()
		}
	}()
	out.send(clientEvent{Event: "opened", Open: len(slow) + len(normal), Failed: sf.slow + sf.normal - len(slow) - len(normal)})

	var phase atomic.Int32
	rec := &phaseRecorder{}
	normCtx, stopNormal := context.WithCancel(ctx)
	var normWG sync.WaitGroup
	for _, c := range normal {
		normWG.Add(1)
		go func() {
			defer normWG.Done()
			echoLoop(normCtx, c, sf, &phase, rec)
		}()
	}

	res := &slowResult{Conns: len(slow), ConnectErrs: slowErrs}
	var readMu sync.Mutex
	res.ReadErrors = map[string]int{}
	var readWG sync.WaitGroup
	var echoes atomic.Int64
	for _, c := range slow {
		readWG.Add(1)
		go func() {
			defer readWG.Done()
			if err := countEchoes(c, sf.payload, &echoes); err != nil && !errors.Is(err, errClosedByUs) {
				readMu.Lock()
				res.ReadErrors[reason(err)]++
				readMu.Unlock()
			}
		}()
	}

	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	ok := sleep(sf.warmup)
	if ok {
		phase.Store(phaseBefore)
		out.send(clientEvent{Event: "phase", Name: "before"})
		ok = sleep(sf.before)
	}
	var bytesSent, framesSent, writeErrs atomic.Int64
	if ok {
		phase.Store(phaseDuring)
		out.send(clientEvent{Event: "phase", Name: "during"})
		wctx, stopWriters := context.WithTimeout(ctx, sf.during)
		var wWG sync.WaitGroup
		for g := range sf.groups {
			wWG.Add(1)
			go func() {
				defer wWG.Done()
				dribble(wctx, groupOf(slow, g, sf.groups), g, sf, &bytesSent, &framesSent, &writeErrs)
			}()
		}
		wWG.Wait()
		stopWriters()
		phase.Store(phaseDrain)
		out.send(clientEvent{Event: "phase", Name: "end"})
		// Wait for the echoes of every completed frame, up to -drain.
		deadline := time.Now().Add(sf.drain)
		for echoes.Load() < framesSent.Load() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	stopNormal()
	normWG.Wait()
	for _, c := range slow {
		c.c.Close()
	}
	readWG.Wait()
	res.BytesSent, res.FramesSent, res.WriteErrors, res.Echoes = bytesSent.Load(), framesSent.Load(), writeErrs.Load(), echoes.Load()
	norm := &normalResult{Conns: len(normal), ConnectErrs: normErrs,
		Before: summarize(rec.samples[0], rec.timeouts[0], rec.errs[0]),
		During: summarize(rec.samples[1], rec.timeouts[1], rec.errs[1])}
	out.send(clientEvent{Event: "result", Slow: res, Normal: norm})
	if !ok {
		return 1
	}
	return 0
}

// groupOf returns every n-th connection starting at g.
func groupOf(conns []wsConn, g, n int) []wsConn {
	var out []wsConn
	for i := g; i < len(conns); i += n {
		out = append(out, conns[i])
	}
	return out
}

// dribble writes each connection's frame one byte per tick, frame after
// frame, until ctx ends. Group g starts g/groups of a tick late, so the
// groups' bytes arrive spread over the interval rather than in one burst.
func dribble(ctx context.Context, conns []wsConn, g int, sf slowFlags, bytesSent, framesSent, writeErrs *atomic.Int64) {
	payload := make([]byte, sf.payload)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	frames := make([][]byte, len(conns))
	pos := make([]int, len(conns))
	dead := make([]bool, len(conns))
	for i := range conns {
		frames[i] = appendMaskedFrame(nil, 0x1, payload)
	}
	offset := time.Duration(g) * sf.byteInterval / time.Duration(max(sf.groups, 1))
	t := time.NewTimer(offset)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return
	}
	tick := time.NewTicker(sf.byteInterval)
	defer tick.Stop()
	for {
		for i, c := range conns {
			if dead[i] {
				continue
			}
			if _, err := c.c.Write(frames[i][pos[i] : pos[i]+1]); err != nil {
				dead[i] = true
				writeErrs.Add(1)
				continue
			}
			bytesSent.Add(1)
			if pos[i]++; pos[i] == len(frames[i]) {
				pos[i] = 0
				framesSent.Add(1)
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// countEchoes reads echo frames of a slow writer until the connection is
// closed, checking each is a text frame of the expected size.
func countEchoes(c wsConn, size int, echoes *atomic.Int64) error {
	buf := make([]byte, 0, size)
	for {
		op, p, err := readFrame(c.br, buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return errClosedByUs
			}
			return err
		}
		switch op {
		case 0x1:
			if len(p) != size {
				return ErrFrame
			}
			echoes.Add(1)
		case 0x9, 0xA: // server ping or pong: slow writers do not answer
		default:
			return ErrFrame
		}
	}
}

// echoLoop does one echo round-trip per -echo-interval, recording the
// round-trip time under the phase at send time. After a timeout or error
// the connection is abandoned (a stalled socket cannot be resynchronised).
func echoLoop(ctx context.Context, c wsConn, sf slowFlags, phase *atomic.Int32, rec *phaseRecorder) {
	msg := make([]byte, 32)
	for i := range msg {
		msg[i] = 'A' + byte(rand.IntN(26))
	}
	var frame, buf []byte
	first := time.NewTimer(time.Duration(rand.Int64N(int64(sf.echoInterval))))
	select {
	case <-first.C:
	case <-ctx.Done():
		first.Stop()
		return
	}
	tick := time.NewTicker(sf.echoInterval)
	defer tick.Stop()
	for {
		ph := phase.Load()
		frame = appendMaskedFrame(frame[:0], 0x1, msg)
		start := time.Now()
		_ = c.c.SetDeadline(start.Add(sf.echoTimeout))
		err := echoOnce(c, frame, msg, &buf)
		rec.add(ph, time.Since(start), err)
		if err != nil {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func echoOnce(c wsConn, frame, msg []byte, buf *[]byte) error {
	if _, err := c.c.Write(frame); err != nil {
		return err
	}
	for {
		op, p, err := readFrame(c.br, *buf)
		if err != nil {
			return err
		}
		*buf = p[:0]
		switch op {
		case 0x1:
			if string(p) != string(msg) {
				return ErrFrame
			}
			return nil
		case 0x9: // answer a server ping (RFC 6455 §5.5.2) and keep waiting
			if _, err := c.c.Write(appendMaskedFrame(nil, 0xA, p)); err != nil {
				return err
			}
		case 0xA:
		default:
			return ErrFrame
		}
	}
}
