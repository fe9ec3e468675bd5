package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/poller"
)

// admin is the loopback-by-default HTTP server for operators: /metrics
// (Prometheus), /stats (JSON), /livez, /readyz (503 while draining or
// while the broker path is broken), pprof and a memory-release hook for
// measurements.
type admin struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

func newAdmin(addr string, ps *poller.Server, app *pushApp, front *tlsFront, nofile uint64, m *metrics, h *health, log *slog.Logger) (*admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if h.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		if app != nil && !app.ready() {
			http.Error(w, "broker unavailable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", m.handler())
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		doc := statsDoc(ps, app, nofile)
		securityStats(doc, ps, app, front)
		doc["draining"] = h.draining.Load()
		_ = json.NewEncoder(w).Encode(doc)
	})
	if app != nil {
		mux.HandleFunc("POST /publish", requireAPIKey(app.apiKey, app.publish))
	}
	mux.HandleFunc("POST /debug/freeosmemory", func(w http.ResponseWriter, _ *http.Request) {
		debug.FreeOSMemory()
		_, _ = w.Write([]byte("ok\n"))
	})
	// pprof is registered explicitly on this mux only, never on
	// http.DefaultServeMux.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a := &admin{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:  ln,
		log: log,
	}
	log.Info("listening", "kind", "admin", "addr", ln.Addr().String())
	return a, nil
}

func (a *admin) run() error {
	if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

func (a *admin) shutdown(ctx context.Context) error { return a.srv.Shutdown(ctx) }

// statsDoc is the /stats document (see internal/pushdtest.Stats).
func statsDoc(ps *poller.Server, app *pushApp, nofile uint64) map[string]any {
	st := ps.Stats()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	closed := make(map[string]uint64, len(st.ClosedByCode))
	for code, n := range st.ClosedByCode {
		closed[strconv.Itoa(int(code))] = n
	}
	doc := map[string]any{
		"conns":              st.Conns,
		"goroutines":         runtime.NumGoroutine(),
		"rlimit_nofile":      nofile,
		"max_conns":          st.MaxConns,
		"accepted":           st.Accepted,
		"upgraded":           st.Upgraded,
		"refused":            st.Refused,
		"rejected":           st.Rejected,
		"handshake_failures": st.HandshakeFailures,
		"handshake_timeouts": st.HandshakeTimeouts,
		"pong_timeouts":      st.PongTimeouts,
		"protocol_errors":    st.ProtocolErrors,
		"stalls":             st.Stalls,
		"write_timeouts":     st.WriteTimeouts,
		"closed_by_code":     closed,
		"rss_bytes":          rss(),
		"heap_inuse":         ms.HeapInuse,
	}
	if app != nil {
		hs := app.hub.Stats()
		doc["subscriptions"] = hs.Subscriptions
		doc["channels"] = hs.Channels
		doc["published"] = hs.Published
		doc["delivered"] = hs.Delivered
		doc["slow_disconnects"] = hs.SlowDisconnects
		doc["dropped"] = hs.Dropped
		doc["gap_notices"] = hs.GapNotices
		doc["conflated"] = hs.Conflated
		doc["mailbox_overflows"] = hs.Overflowed
		doc["publish_refused"] = hs.Refused
		doc["pool_fallbacks"] = hs.PoolFallbacks
		doc["broker_channels"] = app.broker.Channels()
		doc["broker_ready"] = app.ready()
		if rb, ok := app.broker.(*cluster.Redis); ok {
			rs := rb.Stats()
			doc["broker_canary_age_seconds"] = min(rs.CanaryAge.Seconds(), 1e9)
			doc["broker_conns"] = rs.Conns
			doc["broker_reconnects"] = rs.Reconnects
			doc["broker_publish_unavailable"] = rs.PublishUnavailable
			doc["broker_publish_failed"] = rs.PublishFailed
			doc["broker_recoveries"] = rs.Recoveries
			doc["broker_recovered"] = rs.RecoveredPubs
			doc["broker_lost"] = rs.Lost
			doc["broker_duplicates"] = rs.Duplicates
			doc["broker_malformed"] = rs.Malformed
			doc["broker_affected_channels"] = rs.AffectedChannels
			doc["broker_ingest_queued_bytes"] = rs.IngestQueuedBytes
			doc["broker_ingest_overloaded"] = rs.Overloaded
			doc["broker_shed_channel"] = rs.ShedChannel
			doc["broker_shed_node"] = rs.ShedNode
			doc["broker_conflated"] = rs.Conflated
		}
	}
	return doc
}

// rss reads the resident set size from /proc/self/statm.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}
