package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// target is one resolved WebSocket endpoint.
type target struct {
	Host string  `json:"host"` // Host header
	Path string  `json:"path"` // path and query
	Addr [4]byte `json:"addr"`
	Port int     `json:"port"`
	// TLS: a wss:// target; ServerName is its host without the port.
	TLS        bool   `json:"tls"`
	ServerName string `json:"server_name"`
}

// workerConfig is what one worker process (or the in-process worker)
// runs: connections [Lo, Hi) of Total.
type workerConfig struct {
	Lo, Hi, Total    int
	Loops            int
	Targets          []target
	Sources          [][4]byte // nil: let the kernel pick the source
	Ramp             float64   // connections per second for this worker
	MaxInflight      int       // handshakes in flight per loop
	HandshakeTimeout time.Duration
	MaxAttempts      int
	Groups           int
	Prefix           string
	Seed             uint64
	NoPersonal       bool // subscribe the group channel only
	// WallClock: payload stamps and receive times are wall-clock Unix
	// nanoseconds (sharded runs, publisher on another host) instead of
	// CLOCK_MONOTONIC.
	WallClock bool
	// staging: TLS and token settings (staging.go), validated.
	staging *stagingOptions
}

// progress is a worker's live counters.
type progress struct {
	Started  int64 `json:"started"`
	Open     int64 `json:"open"`
	Dead     int64 `json:"dead"`
	Inflight int64 `json:"inflight"`
	Received int64 `json:"received"`
	Measured int64 `json:"measured"`
	Conns    int64 `json:"conns"`
	// MeasureDone: every loop has marked its measured set.
	MeasureDone bool `json:"measure_done"`
}

// rampDone reports whether every connection was started and none is in a
// handshake.
func (p progress) rampDone() bool { return p.Started == p.Conns && p.Inflight == 0 }

// published is how many publications the publisher sent, which fixes how
// many each measured connection should have received (message k of the
// personal stream goes to connection k mod Total with sequence k/Total+1;
// group message j to group j mod Groups).
type published struct {
	Personal uint64 `json:"personal"`
	Group    uint64 `json:"group"`
}

// workerResult is one worker's final account; results merge by addition.
type workerResult struct {
	Conns        int                    `json:"conns"`
	Started      int64                  `json:"started"`
	Open         int64                  `json:"open"`
	Dead         int64                  `json:"dead"`
	Measured     int64                  `json:"measured"`
	Connect      *hdrhistogram.Snapshot `json:"connect"`
	Subscribe    *hdrhistogram.Snapshot `json:"subscribe"`
	Latency      *hdrhistogram.Snapshot `json:"latency"`
	GroupLatency *hdrhistogram.Snapshot `json:"group_latency"`
	ExpectedU    uint64                 `json:"expected_u"`
	ExpectedG    uint64                 `json:"expected_g"`
	UniqueU      uint64                 `json:"unique_u"`
	UniqueG      uint64                 `json:"unique_g"`
	Dups         uint64                 `json:"dups"`
	Gaps         uint64                 `json:"gaps"`
	Unmeasured   uint64                 `json:"unmeasured"`
	Reconnects   uint64                 `json:"reconnects"`
	Errors       map[string]uint64      `json:"errors"`
	CloseCodes   map[string]uint64      `json:"close_codes"`
	TLS          map[string]uint64      `json:"tls"`
	CPUSeconds   float64                `json:"cpu_seconds"`
	RSSBytes     uint64                 `json:"rss_bytes"`
	HeapBytes    uint64                 `json:"heap_bytes"`
	BaseRSS      uint64                 `json:"base_rss"`
	BaseHeap     uint64                 `json:"base_heap"`
	HeldAtPeak   int64                  `json:"held_at_peak"`
}

// worker owns a set of loops and their goroutines.
type worker struct {
	cfg      workerConfig
	loops    []*loop
	wg       sync.WaitGroup
	baseRSS  uint64
	baseHeap uint64
	peakRSS  uint64
	peakHeap uint64
	peakHeld int64
	cpu0     time.Duration
	once     sync.Once
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// startWorker builds the loops (connection i of the range goes to loop
// i mod Loops) and starts one goroutine per loop.
func startWorker(cfg workerConfig) (*worker, error) {
	clock, err := newClock(cfg.WallClock)
	if err != nil {
		return nil, err
	}
	w := &worker{cfg: cfg, cpu0: processCPU()}
	n := max(cfg.Loops, 1)
	gids := make([][]uint32, n)
	for g := cfg.Lo; g < cfg.Hi; g++ {
		k := (g - cfg.Lo) % n
		gids[k] = append(gids[k], uint32(g))
	}
	for k := range n {
		l, err := newLoop(&w.cfg, clock, k, gids[k], cfg.Ramp/float64(n))
		if err != nil {
			w.stopLoops()
			return nil, err
		}
		w.loops = append(w.loops, l)
	}
	// The baseline includes the loops' fixed costs (read buffers,
	// histograms, the conn slices): what grows after it is per connection.
	runtime.GC()
	w.baseRSS, w.baseHeap = processRSS(), heapInuse()
	for _, l := range w.loops {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			l.run()
		}()
	}
	return w, nil
}

func (w *worker) progress() progress {
	p := progress{Conns: int64(w.cfg.Hi - w.cfg.Lo), MeasureDone: true}
	for _, l := range w.loops {
		p.MeasureDone = p.MeasureDone && l.measDone.Load()
		p.Started += l.started.Load()
		p.Open += l.openNow.Load()
		p.Dead += l.dead.Load()
		p.Inflight += l.inflightA.Load()
		p.Received += l.received.Load()
		p.Measured += l.measured.Load()
	}
	return p
}

// measure starts the measured window and samples memory per held
// connection (the ramp is over: what is held now is the steady state).
func (w *worker) measure() {
	runtime.GC()
	w.peakRSS, w.peakHeap = processRSS(), heapInuse()
	w.peakHeld = w.progress().Open
	for _, l := range w.loops {
		l.measureReq.Store(true)
	}
	// Each loop applies the request within one epoll_wait timeout (50 ms).
	for deadline := time.Now().Add(5 * time.Second); !w.progress().MeasureDone && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
}

func (w *worker) stopLoops() {
	w.once.Do(func() {
		for _, l := range w.loops {
			l.stop.Store(true)
		}
		w.wg.Wait()
	})
}

// close closes the sockets of a stopped worker (after stop).
func (w *worker) close() {
	w.stopLoops()
	for _, l := range w.loops {
		l.closeAll()
	}
}

// stop stops the loops and returns the worker's result given what was
// published; the sockets stay open until close.
func (w *worker) stop(pub published) workerResult {
	if w.peakRSS == 0 { // never measured (interrupted during the ramp)
		w.peakRSS, w.peakHeap, w.peakHeld = processRSS(), heapInuse(), w.progress().Open
	}
	pr := w.progress()
	w.stopLoops()
	r := workerResult{
		Conns: w.cfg.Hi - w.cfg.Lo, Started: pr.Started, Open: pr.Open, Dead: pr.Dead, Measured: pr.Measured,
		Errors: map[string]uint64{}, CloseCodes: map[string]uint64{}, TLS: map[string]uint64{},
		CPUSeconds: (processCPU() - w.cpu0).Seconds(),
		RSSBytes:   w.peakRSS, HeapBytes: w.peakHeap, BaseRSS: w.baseRSS, BaseHeap: w.baseHeap,
		HeldAtPeak: w.peakHeld,
	}
	c, s, lat, glat := newHist(), newHist(), newHist(), newHist()
	N, G := uint64(w.cfg.Total), uint64(w.cfg.Groups)
	for _, l := range w.loops {
		st := &l.stats
		c.Merge(st.connect)
		s.Merge(st.subscribe)
		lat.Merge(st.latency)
		glat.Merge(st.groupLatency)
		r.UniqueU += st.uniqueU
		r.UniqueG += st.uniqueG
		r.Dups += st.dups
		r.Gaps += st.gaps
		r.Unmeasured += st.unmeasured
		r.Reconnects += st.reconnects
		addMap(r.Errors, st.errors)
		addMap(r.CloseCodes, st.closeCodes)
		addMap(r.TLS, st.tls)
		for i := range l.conns {
			cn := &l.conns[i]
			if !cn.meas {
				continue
			}
			g := uint64(cn.gid)
			r.ExpectedU += pub.Personal / N
			if g < pub.Personal%N {
				r.ExpectedU++
			}
			if G > 0 {
				r.ExpectedG += pub.Group / G
				if g%G < pub.Group%G {
					r.ExpectedG++
				}
			}
		}
	}
	r.Connect, r.Subscribe, r.Latency, r.GroupLatency = c.Export(), s.Export(), lat.Export(), glat.Export()
	return r
}

func addMap(dst, src map[string]uint64) {
	for k, v := range src {
		dst[k] += v
	}
}

// connStructBytes is the fixed per-connection state of a loop.
const connStructBytes = int(unsafe.Sizeof(conn{}))

// Child process protocol (JSON lines). The parent writes commands to the
// child's stdin:
//
//	{"cmd":"measure"}                       start the measured window
//	{"cmd":"stop","pub":{"personal":P,"group":G}}   stop and report
//
// and the child writes events to stdout:
//
//	{"ev":"progress","progress":{...}}      every 250 ms
//	{"ev":"result","result":{...}}          once, after stop
//	{"ev":"error","error":"..."}            startup failure
//
// stdin EOF is a stop with nothing published (the parent died).
type childCmd struct {
	Cmd string    `json:"cmd"`
	Pub published `json:"pub"`
}

type childEvent struct {
	Ev       string        `json:"ev"`
	Progress *progress     `json:"progress,omitempty"`
	Result   *workerResult `json:"result,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// runChild serves the child protocol for cfg on in/out.
func runChild(ctx context.Context, cfg workerConfig, in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	var mu sync.Mutex
	send := func(ev childEvent) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(ev)
	}
	w, err := startWorker(cfg)
	if err != nil {
		send(childEvent{Ev: "error", Error: err.Error()})
		return err
	}
	cmds := make(chan childCmd)
	go func() {
		defer close(cmds)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			var c childCmd
			if json.Unmarshal(sc.Bytes(), &c) == nil {
				select {
				case cmds <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			p := w.progress()
			send(childEvent{Ev: "progress", Progress: &p})
		case c, ok := <-cmds:
			if !ok {
				c = childCmd{Cmd: "stop"}
			}
			switch c.Cmd {
			case "measure":
				w.measure()
				p := w.progress()
				send(childEvent{Ev: "progress", Progress: &p})
			case "stop":
				r := w.stop(c.Pub)
				send(childEvent{Ev: "result", Result: &r})
				w.close()
				return nil
			}
		case <-ctx.Done():
			r := w.stop(published{})
			send(childEvent{Ev: "result", Result: &r})
			w.close()
			return ctx.Err()
		}
	}
}

// errWorker formats a worker failure.
func errWorker(i int, err error) error { return fmt.Errorf("worker %d: %w", i, err) }
