// Package peerkit is what every Go peer server of bench -peers shares: the
// command line (-listen, -admin-listen), the "listening" log lines bench
// waits for, and the admin API bench drives (POST /publish?ch=, GET /stats,
// POST /debug/freeosmemory, /debug/pprof/). Each peer supplies only its
// WebSocket side: how it serves upgrades on a listener, how it broadcasts a
// payload to a channel, and how many connections are subscribed.
//
// It must never tune a peer: the peers run with their libraries' defaults
// plus the handful of settings the job needs (no compression, no
// application pings), so the comparison is with each library as people use
// it.
package peerkit

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"
)

// Peer is one WebSocket server under test.
type Peer struct {
	// Name appears in logs.
	Name string
	// ServeWS serves GET /ws?ch=<channel> upgrades on ln until ctx ends;
	// every upgraded connection is subscribed to <channel>.
	ServeWS func(ctx context.Context, ln net.Listener, log *slog.Logger) error
	// Publish sends payload as one text message to every subscriber of ch
	// and returns how many subscribers it was handed to.
	Publish func(ch string, payload []byte) int
	// Subscribed returns the count of subscribed connections.
	Subscribed func() int64
}

// Stats is GET /stats: the fields bench reads from every server.
type Stats struct {
	Conns      int64  `json:"conns"`
	Goroutines int    `json:"goroutines"`
	RSSBytes   uint64 `json:"rss_bytes"`
	HeapInuse  uint64 `json:"heap_inuse"`
}

// maxPayload bounds a POST /publish body.
const maxPayload = 1 << 20

// Main runs p with the process arguments and exits.
func Main(p Peer) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, p, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// Run runs p until ctx ends: 0 on a clean stop, 1 on a serve error, 2 on
// bad usage.
func Run(ctx context.Context, p Peer, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(p.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "WebSocket listener (GET /ws?ch=)")
	adminListen := fs.String("admin-listen", "127.0.0.1:0", "admin listener (POST /publish?ch=, GET /stats)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	aln, err := net.Listen("tcp", *adminListen)
	if err != nil {
		ln.Close()
		log.Error("listen admin", "err", err)
		return 1
	}
	admin := http.NewServeMux()
	admin.HandleFunc("POST /publish", func(w http.ResponseWriter, r *http.Request) {
		ch := r.URL.Query().Get("ch")
		body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload))
		if ch == "" || err != nil || len(body) == 0 {
			http.Error(w, "ch and a body are required", http.StatusBadRequest)
			return
		}
		n := p.Publish(ch, body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"delivered":%s}`+"\n", strconv.Itoa(n))
	})
	admin.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Stats{Conns: p.Subscribed(), Goroutines: runtime.NumGoroutine(),
			RSSBytes: rss(), HeapInuse: ms.HeapInuse})
	})
	admin.HandleFunc("POST /debug/freeosmemory", func(w http.ResponseWriter, r *http.Request) {
		debug.FreeOSMemory()
		fmt.Fprintln(w, "ok")
	})
	admin.HandleFunc("/debug/pprof/", pprof.Index)
	admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
	adminSrv := &http.Server{Handler: admin, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	wsCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { errc <- p.ServeWS(wsCtx, ln, log) }()
	go func() { errc <- adminSrv.Serve(aln) }()
	log.Info("listening", "kind", "ws", "addr", ln.Addr().String())
	log.Info("listening", "kind", "admin", "addr", aln.Addr().String())
	code := 0
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve", "err", err)
			code = 1
		}
	}
	cancel()
	_ = ln.Close()
	_ = adminSrv.Close()
	return code
}

// rss returns this process's VmRSS in bytes (0 if unreadable).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res uint64
	if _, err := fmt.Sscan(string(b), &size, &res); err != nil {
		return 0
	}
	return res * uint64(os.Getpagesize())
}
