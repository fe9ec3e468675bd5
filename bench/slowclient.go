package main

import (
	"context"
	"errors"
	"flag"
	"maps"
	"math/rand/v2"
	"net"
	"os"
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
	slowOnly     time.Duration
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
	fs.DurationVar(&f.before, "before", 5*time.Second, "baseline window: normal clients only")
	fs.DurationVar(&f.slowOnly, "slow-only", 10*time.Second, "window with the slow writers only (no normal clients connected): the CPU verdict")
	fs.DurationVar(&f.during, "during", 10*time.Second, "window with the slow writers and the normal clients: the stall verdict")
	fs.DurationVar(&f.drain, "drain", 2*time.Second, "wait for the last echoes after the window")
	fs.IntVar(&f.groups, "groups", 20, "slow writers are driven by this many goroutines, phase-shifted")
}

// args renders f as client flags.
func (f *slowFlags) args() []string {
	return []string{
		"-slow", itoa(f.slow), "-normal", itoa(f.normal), "-payload", itoa(f.payload),
		"-byte-interval", f.byteInterval.String(), "-echo-interval", f.echoInterval.String(),
		"-echo-timeout", f.echoTimeout.String(), "-warmup", f.warmup.String(),
		"-before", f.before.String(), "-slow-only", f.slowOnly.String(), "-during", f.during.String(), "-drain", f.drain.String(),
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

// echoSample is one normal-client round trip: when it was sent (Unix ns,
// wall clock, so the parent can place it in its windows), how long it
// took, and the error reason if it failed.
type echoSample struct {
	At    int64  `json:"t"`
	RTTus int64  `json:"rtt_us"`
	Err   string `json:"err,omitempty"`
}

// window summarizes the samples sent in [from, to).
func window(samples []echoSample, from, to time.Time) latency {
	var rtts []time.Duration
	timeouts := 0
	var errs map[string]int
	for _, s := range samples {
		if s.At < from.UnixNano() || s.At >= to.UnixNano() {
			continue
		}
		switch s.Err {
		case "":
			rtts = append(rtts, time.Duration(s.RTTus)*time.Microsecond)
		case "timeout":
			timeouts++
		default:
			if errs == nil {
				errs = map[string]int{}
			}
			errs[s.Err]++
		}
	}
	return summarize(rtts, timeouts, errs)
}

// runSlowClient holds the slow writers: after "opened" it waits for
// {"cmd":"dribble","ms":N}, reports phase "during", dribbles for N ms,
// reports phase "end", waits up to -drain for the echoes of completed
// frames and reports the result (counts for that dribble only). Several
// dribbles may follow each other: every writer resumes its frame where the
// previous dribble left it, so the server never sees a broken frame. The normal clients run in another
// process (runEchoClient) so this one's CPU load cannot delay them.
func runSlowClient(ctx context.Context, cf clientFlags, sf slowFlags, d *srcaddr.Dialer, out *eventWriter) int {
	slow, errs := openConns(ctx, cf, d, sf.slow)
	defer func() {
		for _, c := range slow {
			c.c.Close()
		}
	}()
	out.send(clientEvent{Event: "opened", Open: len(slow), Failed: sf.slow - len(slow), Errors: errs})
	res := &slowResult{Conns: len(slow), ConnectErrs: errs, ReadErrors: map[string]int{}}
	var readMu sync.Mutex
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
	defer func() {
		for _, c := range slow {
			c.c.Close()
		}
		readWG.Wait()
	}()
	groups := make([]*dribbleGroup, sf.groups)
	for g := range groups {
		groups[g] = newDribbleGroup(groupOf(slow, g, sf.groups), sf.payload)
	}
	cmds := make(chan clientCmd)
	go readCmds(os.Stdin, cmds)
	for {
		cmd, code, done := nextCmd(ctx, cmds, out, "slow client", clientEvent{Event: "bye"})
		if done {
			return code
		}
		if cmd.Cmd != "dribble" {
			out.send(clientEvent{Event: "error", Message: "unknown command " + cmd.Cmd})
			continue
		}
		var bytesSent, framesSent, writeErrs atomic.Int64
		echoesBefore := echoes.Load()
		out.send(clientEvent{Event: "phase", Name: "during"})
		wctx, stopWriters := context.WithTimeout(ctx, time.Duration(cmd.Ms)*time.Millisecond)
		var wWG sync.WaitGroup
		for g := range sf.groups {
			wWG.Add(1)
			go func() {
				defer wWG.Done()
				dribble(wctx, groups[g], g, sf, &bytesSent, &framesSent, &writeErrs)
			}()
		}
		wWG.Wait()
		stopWriters()
		out.send(clientEvent{Event: "phase", Name: "end"})
		// Wait for the echoes of every frame completed in this dribble, up
		// to -drain.
		deadline := time.Now().Add(sf.drain)
		for echoes.Load()-echoesBefore < framesSent.Load() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		readMu.Lock()
		r := *res
		r.ReadErrors = maps.Clone(res.ReadErrors)
		readMu.Unlock()
		r.BytesSent, r.FramesSent, r.WriteErrors, r.Echoes = bytesSent.Load(), framesSent.Load(), writeErrs.Load(), echoes.Load()-echoesBefore
		out.send(clientEvent{Event: "result", Slow: &r})
	}
}

// runEchoClient runs the normal clients: each does one echo round trip per
// -echo-interval from "opened" until "quit" (or stdin EOF), then the
// process reports every sample.
func runEchoClient(ctx context.Context, cf clientFlags, sf slowFlags, d *srcaddr.Dialer, out *eventWriter) int {
	normal, errs := openConns(ctx, cf, d, sf.normal)
	defer func() {
		for _, c := range normal {
			c.c.Close()
		}
	}()
	out.send(clientEvent{Event: "opened", Open: len(normal), Failed: sf.normal - len(normal), Errors: errs})
	var mu sync.Mutex
	var samples []echoSample
	record := func(s echoSample) {
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}
	loopCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range normal {
		wg.Add(1)
		go func() {
			defer wg.Done()
			echoLoop(loopCtx, c, sf, record)
		}()
	}
	cmds := make(chan clientCmd)
	go readCmds(os.Stdin, cmds)
	for done := false; !done; {
		select {
		case cmd, ok := <-cmds:
			done = !ok || cmd.Cmd == "quit"
		case <-ctx.Done():
			done = true
		}
	}
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	out.send(clientEvent{Event: "result", Open: len(normal), Errors: errs, Samples: samples})
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

// dribbleGroup is the state of one group of slow writers that outlives a
// dribble: each connection's frame and how much of it is already sent.
type dribbleGroup struct {
	conns  []wsConn
	frames [][]byte
	pos    []int
	dead   []bool
}

func newDribbleGroup(conns []wsConn, payloadSize int) *dribbleGroup {
	payload := make([]byte, payloadSize)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	g := &dribbleGroup{conns: conns, frames: make([][]byte, len(conns)), pos: make([]int, len(conns)), dead: make([]bool, len(conns))}
	for i := range conns {
		g.frames[i] = appendMaskedFrame(nil, 0x1, payload)
	}
	return g
}

// dribble writes each connection's frame one byte per tick, frame after
// frame, until ctx ends. Group g starts g/groups of a tick late, so the
// groups' bytes arrive spread over the interval rather than in one burst.
func dribble(ctx context.Context, st *dribbleGroup, g int, sf slowFlags, bytesSent, framesSent, writeErrs *atomic.Int64) {
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
		for i, c := range st.conns {
			if st.dead[i] {
				continue
			}
			if _, err := c.c.Write(st.frames[i][st.pos[i] : st.pos[i]+1]); err != nil {
				st.dead[i] = true
				writeErrs.Add(1)
				continue
			}
			bytesSent.Add(1)
			if st.pos[i]++; st.pos[i] == len(st.frames[i]) {
				st.pos[i] = 0
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

// echoLoop does one echo round-trip per -echo-interval and records each.
// After a timeout or error the connection is abandoned (a stalled socket
// cannot be resynchronised).
func echoLoop(ctx context.Context, c wsConn, sf slowFlags, record func(echoSample)) {
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
		frame = appendMaskedFrame(frame[:0], 0x1, msg)
		start := time.Now()
		_ = c.c.SetDeadline(start.Add(sf.echoTimeout))
		err := echoOnce(c, frame, msg, &buf)
		s := echoSample{At: start.UnixNano(), RTTus: time.Since(start).Microseconds()}
		if err != nil {
			if ctx.Err() != nil {
				return // closed under us at the end of the run
			}
			s.Err = reason(err)
		}
		record(s)
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
