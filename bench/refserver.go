package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// runRefServer runs the reference server: the textbook Go WebSocket echo
// server (net/http + gorilla/websocket, one goroutine per connection blocked
// in ReadMessage). It serves the subset of pushd's admin API that bench
// reads (/stats, POST /debug/freeosmemory, /debug/pprof/) and logs the same
// "listening" lines, so the harness drives both servers identically.
func runRefServer(ctx context.Context, args []string, stderr io.Writer) int {
	ln, aln, log, code := serverListeners("bench -refserver", args, stderr)
	if ln == nil {
		return code
	}
	var conns atomic.Int64
	var upgraded atomic.Uint64
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ws := http.NewServeMux()
	ws.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		upgraded.Add(1)
		conns.Add(1)
		defer conns.Add(-1)
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	})
	admin := http.NewServeMux()
	admin.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rss, _ := procRSS(os.Getpid())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(serverStats{Conns: conns.Load(), Goroutines: runtime.NumGoroutine(),
			Upgraded: upgraded.Load(), RSSBytes: rss, HeapInuse: ms.HeapInuse})
	})
	admin.HandleFunc("POST /debug/freeosmemory", func(w http.ResponseWriter, r *http.Request) {
		debug.FreeOSMemory()
		fmt.Fprintln(w, "ok")
	})
	admin.HandleFunc("/debug/pprof/", pprof.Index)
	admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
	wsSrv := &http.Server{Handler: ws, ReadHeaderTimeout: 5 * time.Second}
	adminSrv := &http.Server{Handler: admin, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- wsSrv.Serve(ln) }()
	go func() { errc <- adminSrv.Serve(aln) }()
	log.Info("listening", "kind", "ws", "addr", ln.Addr().String())
	log.Info("listening", "kind", "admin", "addr", aln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		log.Error("serve", "err", err)
	}
	// Hijacked connections are not tracked by http.Server; their goroutines
	// end with the process.
	_ = wsSrv.Close()
	_ = adminSrv.Close()
	return 0
}
