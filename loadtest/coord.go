package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/term"

	"github.com/pushd/pushd/internal/srcaddr"
)

// handle is a worker seen by the coordinator: in-process or a child.
type handle interface {
	progress() progress
	measure()
	stop(pub published) (workerResult, error)
}

type localHandle struct{ w *worker }

func (h localHandle) progress() progress { return h.w.progress() }
func (h localHandle) measure()           { h.w.measure() }
func (h localHandle) stop(p published) (workerResult, error) {
	r := h.w.stop(p)
	h.w.close()
	return r, nil
}

// childHandle is a worker process speaking the child protocol.
type childHandle struct {
	i      int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	last   progress
	result chan workerResult
	failed chan string
	done   chan struct{} // the output reader ended
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > 64<<10 {
		l.b = l.b[len(l.b)-32<<10:]
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// startChild re-executes exe as worker i with the parent's flags.
func startChild(exe string, args []string, i int) (*childHandle, error) {
	argv := append(append([]string(nil), args...), "-worker-child", "-worker-index", strconv.Itoa(i))
	cmd := exec.Command(exe, argv...)
	// Own process group: a terminal ^C reaches only the parent, which then
	// stops the children through stdin and collects their partial results.
	// Pdeathsig: a parent killed with SIGKILL leaves no worker behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	h := &childHandle{i: i, cmd: cmd, result: make(chan workerResult, 1), failed: make(chan string, 1),
		done: make(chan struct{}), stderr: &lockedBuffer{}}
	cmd.Stderr = h.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	h.stdin = stdin
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker %d: %w", i, err)
	}
	go h.read(stdout)
	return h, nil
}

// read consumes the child's events until EOF; it owns nothing else and
// ends when the child closes stdout (exits).
func (h *childHandle) read(r io.Reader) {
	defer close(h.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var ev childEvent
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch ev.Ev {
		case "progress":
			if ev.Progress != nil {
				h.mu.Lock()
				h.last = *ev.Progress
				h.mu.Unlock()
			}
		case "result":
			if ev.Result != nil {
				h.result <- *ev.Result
			}
		case "error":
			h.failed <- ev.Error
		}
	}
}

func (h *childHandle) progress() progress {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

func (h *childHandle) send(c childCmd) {
	b, _ := json.Marshal(c)
	_, _ = h.stdin.Write(append(b, '\n'))
}

func (h *childHandle) measure() { h.send(childCmd{Cmd: "measure"}) }

// childStopTimeout bounds the wait for a worker's result and exit: a
// saturated host with a million sockets needs more than a few seconds.
const childStopTimeout = 3 * time.Minute

// stop asks for the result and waits for it and for the process, at most
// childStopTimeout, then kills it.
func (h *childHandle) stop(p published) (workerResult, error) {
	h.send(childCmd{Cmd: "stop", Pub: p})
	_ = h.stdin.Close()
	t := time.NewTimer(childStopTimeout)
	defer t.Stop()
	var (
		r   workerResult
		err error
	)
	select {
	case r = <-h.result:
	case msg := <-h.failed:
		err = fmt.Errorf("%w: worker %d: %s", ErrChild, h.i, msg)
	case <-h.done:
		select {
		case r = <-h.result:
		default:
			err = fmt.Errorf("%w: worker %d exited without a result: %s", ErrChild, h.i, lastLines(h.stderr.String(), 5))
		}
	case <-t.C:
		err = fmt.Errorf("%w: worker %d: no result within %v", ErrChild, h.i, childStopTimeout)
		_ = h.cmd.Process.Kill()
	}
	<-h.done
	_ = h.cmd.Wait()
	return r, err
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(len(l)-n, 0):], " | ")
}

// preflight checks the host for the run: per-process descriptors for each
// worker's share, host-wide files and ports for the whole run. It prints
// every finding with its fix and reports whether the run fits.
func preflight(o *options, targets []target, nsrc int, stderr io.Writer) bool {
	if _, err := srcaddr.RaiseNofile(); err != nil {
		fmt.Fprintln(stderr, "preflight: raise RLIMIT_NOFILE:", err)
	}
	local := isLoopback(targets)
	slo, shi := o.shardRange()                             // this host's share
	lo, hi := workerRange(shi-slo, o.workers, o.workers-1) // the last share is the largest
	perProc := srcaddr.Plan{Conns: hi - lo, Sources: max(nsrc, 1), Destinations: len(targets), LocalServer: local}
	total := perProc
	total.Conns = shi - slo
	var probs []srcaddr.Problem
	for _, p := range srcaddr.Preflight(perProc) {
		if p.Check == "RLIMIT_NOFILE" || p.Check == "fs.nr_open" {
			if p.Check == "RLIMIT_NOFILE" && p.Severity == srcaddr.Fail {
				if lim, err := srcaddr.Nofile(); err == nil && lim.Hard > 128 {
					per := int(lim.Hard) - 64 // srcaddr.Plan's default headroom
					k := (o.conns + per - 1) / per
					p.Fix += fmt.Sprintf("; with loadtest: `-workers %d` (each worker holds conns/workers)", k)
				}
			}
			probs = append(probs, p)
		}
	}
	for _, p := range srcaddr.Preflight(total) {
		if p.Check != "RLIMIT_NOFILE" && p.Check != "fs.nr_open" {
			if strings.HasPrefix(p.Check, "net.ipv4.ip_local_port_range") && p.Severity == srcaddr.Fail {
				p.Fix += "; with loadtest: `-src 127.0.1.0/24` (several /24s for more)"
			}
			probs = append(probs, p)
		}
	}
	ok := true
	for _, p := range probs {
		fmt.Fprintln(stderr, "preflight:", p)
		if p.Severity == srcaddr.Fail {
			ok = false
		}
	}
	if ok {
		fmt.Fprintf(stderr, "preflight: ok: %d connections, %d per process × %d worker(s), %d source(s) × %d destination(s)\n",
			total.Conns, perProc.Conns, o.workers, max(nsrc, 1), len(targets))
	}
	if b := hostBudget(o.workers, max(nsrc, 1), len(targets)); b.conns > 0 {
		fmt.Fprintf(stderr, "preflight: per-host budget: %d connections (%s); %d connections need -shard i/N with N ≥ %d generator hosts like this one\n",
			b.conns, b.why, o.conns, (o.conns+b.conns-1)/b.conns)
	}
	return ok
}

// budget is how many connections this host can hold toward the targets.
type budget struct {
	conns int
	why   string
}

// hostBudget is the smaller of the ephemeral ports (per source and
// destination pair) and the descriptors of the worker processes (hard
// RLIMIT_NOFILE less headroom); 0 when either cannot be read.
func hostBudget(workers, sources, dests int) budget {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return budget{}
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return budget{}
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	lim, err3 := srcaddr.Nofile()
	if err1 != nil || err2 != nil || err3 != nil || hi < lo || lim.Hard < 128 {
		return budget{}
	}
	ports := (hi - lo + 1) * sources * dests
	fds := (int(min(lim.Hard, 1<<30)) - 64) * workers
	return budget{conns: min(ports, fds), why: fmt.Sprintf("ports %d per pair × %d source(s) × %d destination(s) = %d; descriptors %d per process × %d worker(s) = %d",
		hi-lo+1, sources, dests, ports, int(min(lim.Hard, 1<<30))-64, workers, fds)}
}

// coordinate runs the whole test as the parent and returns the exit code.
func coordinate(ctx context.Context, o *options, targets []target, src [][4]byte, stdout, stderr io.Writer) int {
	fmt.Fprintf(stderr, "loadtest: seed %d (rerun with -seed %d)\n", o.seed, o.seed)
	if !preflight(o, targets, len(src), stderr) {
		printErr(stderr, fmt.Errorf("%w; nothing was started", ErrPreflight))
		return ExitUsage
	}
	if o.preflightOnly {
		return ExitOK
	}
	rep := &Report{Schema: ReportVersion, Seed: o.seed, Targets: o.targets, Requested: o.conns, Workers: o.workers,
		Config: ReportConfig{Conns: o.conns, Ramp: o.ramp, Rate: o.rate, GroupRate: o.groupRate, Groups: o.groups,
			DurationS: o.duration.Seconds(), Sources: len(src), Loops: o.loops}}
	var err error
	if o.shard.sharded() {
		err = executeSharded(ctx, o, targets, src, rep, stderr)
	} else {
		err = execute(ctx, o, targets, src, rep, stderr)
	}
	if err != nil {
		rep.Partial = true
		rep.Error = err.Error()
	}
	rep.judge(o.maxP99, o.minDelivery)
	rep.decide(err)
	if o.jsonPath != "" {
		if werr := writeJSON(o.jsonPath, rep); werr != nil && err == nil {
			err = fmt.Errorf("-json: %w", werr)
			rep.decide(err) // the report on stdout says why the exit code is 1
		}
	}
	if rep.Shard != nil { // a job runner's pods keep no files: Redis keeps the reports for merge
		if werr := storeShardReport(o, rep); werr != nil && err == nil {
			err = werr
			rep.decide(err)
		}
	}
	rep.printHuman(stdout)
	if err != nil {
		printErr(stderr, err)
	}
	return rep.ExitCode
}

func writeJSON(path string, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// startHandles starts the workers: in this process for -workers 1, else
// as re-executed children.
func startHandles(o *options, targets []target, src [][4]byte) ([]handle, error) {
	if o.workers == 1 {
		w, err := startWorker(o.workerConfig(targets, src, 0))
		if err != nil {
			return nil, err
		}
		return []handle{localHandle{w}}, nil
	}
	exe := o.exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find own executable: %w", err)
		}
	}
	args := childArgs(o)
	var hs []handle
	for i := range o.workers {
		h, err := startChild(exe, args, i)
		if err != nil {
			for _, h := range hs {
				_, _ = h.stop(published{})
			}
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// childArgs is the flag list a worker process gets: everything it needs to
// compute its share, with the seed fixed.
func childArgs(o *options) []string {
	a := []string{
		"-target", strings.Join(o.targets, ","), "-conns", strconv.Itoa(o.conns),
		"-ramp", strconv.FormatFloat(o.ramp, 'f', -1, 64), "-max-handshakes", strconv.Itoa(o.maxHS),
		"-workers", strconv.Itoa(o.workers), "-loops", strconv.Itoa(o.loops),
		"-groups", strconv.Itoa(o.groups), "-prefix", o.prefix, "-seed", strconv.FormatUint(o.seed, 10),
		"-handshake-timeout", o.hsTimeout.String(), "-max-attempts", strconv.Itoa(o.maxAttempts),
		"-rate", "0", "-duration", o.duration.String(),
	}
	if o.noPersonal {
		a = append(a, "-no-personal")
	}
	if o.src != "" {
		a = append(a, "-src", o.src)
	}
	a = append(a, o.shard.args()...)
	return append(a, o.staging.args()...)
}

func sumProgress(hs []handle) progress {
	var t progress
	for _, h := range hs {
		p := h.progress()
		t.Started += p.Started
		t.Open += p.Open
		t.Dead += p.Dead
		t.Inflight += p.Inflight
		t.Received += p.Received
		t.Measured += p.Measured
		t.Conns += p.Conns
	}
	return t
}

func allMeasured(hs []handle) bool {
	for _, h := range hs {
		if !h.progress().MeasureDone {
			return false
		}
	}
	return true
}

// progressPrinter writes a live line on a terminal and a log line every
// interval otherwise.
type progressPrinter struct {
	w     io.Writer
	tty   bool
	ivl   time.Duration
	start time.Time
	last  time.Time
}

func newProgressPrinter(w io.Writer, ivl time.Duration) *progressPrinter {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progressPrinter{w: w, tty: tty, ivl: ivl, start: time.Now()}
}

func (pp *progressPrinter) print(phase string, p progress, extra string, force bool) {
	now := time.Now()
	if !pp.tty && !force && now.Sub(pp.last) < pp.ivl {
		return
	}
	pp.last = now
	line := fmt.Sprintf("[%6.1fs] %-7s open %d/%d started %d in-flight %d failed %d received %d %s",
		now.Sub(pp.start).Seconds(), phase, p.Open, p.Conns, p.Started, p.Inflight, p.Dead, p.Received, extra)
	if pp.tty {
		fmt.Fprintf(pp.w, "\r\033[K%s", line)
		if force {
			fmt.Fprintln(pp.w)
		}
		return
	}
	fmt.Fprintln(pp.w, line)
}

// execute runs ramp → measured window → drain and fills rep. A non-nil
// error leaves rep with what was measured (partial).
func execute(ctx context.Context, o *options, targets []target, src [][4]byte, rep *Report, stderr io.Writer) (err error) {
	clock, err := newMonoClock()
	if err != nil {
		return err
	}
	hs, err := startHandles(o, targets, src)
	if err != nil {
		return err
	}
	var pub published
	defer func() { err = errors.Join(err, collect(hs, pub, rep)) }()
	pp := newProgressPrinter(stderr, o.progressIvl)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()

	// Ramp.
	rampStart := time.Now()
	if err := rampPhase(ctx, o, hs, rep, pp, tick, time.Now().Add(o.rampTimeout), "ramp-timeout "+o.rampTimeout.String()); err != nil {
		return err
	}
	rep.RampSeconds = time.Since(rampStart).Seconds()
	pp.print("ramp", sumProgress(hs), "done", true)
	if err := measureAll(ctx, hs); err != nil {
		return err
	}

	// Measured window.
	pctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var pr pubResult
	pdone := make(chan struct{})
	if o.rate > 0 || o.groupRate > 0 {
		pcfg, perr := o.pubConfig(rep)
		if perr != nil {
			return perr
		}
		if pcfg.Redis != nil {
			defer pcfg.Redis.Close()
		}
		go func() {
			defer close(pdone)
			pr = runPublisher(pctx, pcfg, clock)
		}()
	} else {
		rep.Publish = "none"
		go func() {
			defer close(pdone)
			<-pctx.Done()
		}()
	}
	windowStart := time.Now()
	for running := true; running; {
		select {
		case <-pdone:
			running = false
		case <-tick.C:
			p := sumProgress(hs)
			rep.PeakOpen = max(rep.PeakOpen, p.Open)
			pp.print("publish", p, "", false)
		}
	}
	rep.SendSeconds = time.Since(windowStart).Seconds()
	pub = pr.Sent
	rep.PublishErrors, rep.PublisherMaxLagMs = pr.Errors, pr.MaxLagMs

	drainPhase(ctx, hs, o.drain)
	rep.WindowSeconds = time.Since(windowStart).Seconds()
	end := sumProgress(hs)
	pp.print("done", end, "", true)
	if ctx.Err() != nil {
		return ErrInterrupted
	}
	if end.Measured == 0 {
		return ErrNoConns
	}
	return nil
}

// collect stops every worker at once (each closes thousands of sockets)
// and merges their results into rep.
func collect(hs []handle, pub published, rep *Report) error {
	res := make([]workerResult, len(hs))
	errs := make([]error, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = h.stop(pub)
		}()
	}
	wg.Wait()
	var err error
	ok := res[:0]
	for i := range hs {
		if errs[i] != nil {
			err = errors.Join(err, errs[i])
			continue
		}
		ok = append(ok, res[i])
	}
	rep.PublishedPersonal, rep.PublishedGroup = pub.Personal, pub.Group
	rep.merge(ok)
	return err
}

// rampPhase runs the ramp until every connection of hs was started and
// none is in a handshake, or until deadline (then rep.RampStoppedBy is
// reason), -min-free-mib, SIGUSR1 or ctx.
func rampPhase(ctx context.Context, o *options, hs []handle, rep *Report, pp *progressPrinter, tick *time.Ticker, deadline time.Time, reason string) error {
	lo, hi := o.shardRange()
	rampEnd := time.NewTimer(time.Until(deadline))
	defer rampEnd.Stop()
	for ramping := true; ramping; {
		select {
		case <-ctx.Done():
			rep.RampStoppedBy = "interrupted"
			return ErrInterrupted
		case <-rampEnd.C:
			rep.RampStoppedBy = reason
			ramping = false
		case <-o.endRamp:
			rep.RampStoppedBy = "SIGUSR1"
			ramping = false
		case <-tick.C:
			p := sumProgress(hs)
			rep.PeakOpen = max(rep.PeakOpen, p.Open)
			pp.print("ramp", p, "", false)
			if p.Conns == int64(hi-lo) && p.rampDone() {
				ramping = false
			}
			if o.minFreeMiB > 0 {
				if avail := memAvailable(); avail > 0 && avail < uint64(o.minFreeMiB)<<20 {
					rep.RampStoppedBy = fmt.Sprintf("memory: MemAvailable %d MiB < -min-free-mib %d", avail>>20, o.minFreeMiB)
					ramping = false
				}
			}
		}
	}
	if rep.RampStoppedBy != "" {
		fmt.Fprintf(pp.w, "\nloadtest: ramp ended early (%s): measuring with what is open\n", rep.RampStoppedBy)
	}
	return nil
}

// measureAll starts every worker's measured window and waits until each
// loop has marked its measured set: the first publication must find them
// marked.
func measureAll(ctx context.Context, hs []handle) error {
	for _, h := range hs {
		h.measure()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if allMeasured(hs) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: workers did not start the measured window within 10s", ErrChild)
		}
		if ctx.Err() != nil {
			return ErrInterrupted
		}
	}
}

// drainPhase waits until deliveries stop growing for a second, at most d.
func drainPhase(ctx context.Context, hs []handle, d time.Duration) {
	if ctx.Err() != nil {
		return
	}
	drainEnd := time.Now().Add(d)
	lastRecv, lastChange := sumProgress(hs).Received, time.Now()
	for time.Now().Before(drainEnd) && time.Since(lastChange) < time.Second && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		if r := sumProgress(hs).Received; r != lastRecv {
			lastRecv, lastChange = r, time.Now()
		}
	}
}

// pubConfig builds the publisher's configuration and fills rep.Publish.
func (o *options) pubConfig(rep *Report) (pubConfig, error) {
	c := pubConfig{Total: o.conns, Groups: o.groups, Rate: o.rate, GroupRate: o.groupRate, Prefix: o.prefix,
		Durable: o.durable, URLs: o.publishURLs, Concurrency: o.pubConc}
	if o.redisURL != "" && len(o.publishURLs) == 0 { // sharded runs may use -redis only as the coordinator
		ro, err := redis.ParseURL(o.redisURL)
		if err != nil {
			return c, errPublisher(fmt.Errorf("-redis: %w", err))
		}
		ro.PoolSize = 4
		c.Redis = redis.NewClient(ro)
		rep.Publish = "redis PUBLISH"
		if o.durable {
			rep.Publish = "redis FCALL pushd_publish"
		}
		return c, nil
	}
	c.HTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: o.pubConc, MaxConnsPerHost: o.pubConc,
	}}
	rep.Publish = "http POST /publish"
	return c, nil
}
