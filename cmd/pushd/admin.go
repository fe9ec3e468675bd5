package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/pushd/pushd/admin"
	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/poller"
)

// newAdmin builds the admin server (package admin) over this process's
// routes: /stats, /metrics, and with pushd.v1 POST /publish. /livez,
// /readyz and the opt-in pprof routes are admin's own.
func newAdmin(cfg Config, ps *poller.Server, app *pushApp, front *wssCert, nofile uint64, m *metrics, h *health, log *slog.Logger) (*admin.Server, error) {
	routes := []admin.Route{
		{Pattern: "GET /metrics", Handler: m.handler()},
		{Pattern: "GET /stats", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			doc := statsDoc(ps, app, nofile)
			securityStats(doc, ps, app, front)
			doc["draining"] = h.draining.Load()
			_ = json.NewEncoder(w).Encode(doc)
		})},
	}
	if app != nil {
		routes = append(routes, admin.PublishRoute(app.broker, app.maxPublish))
		routes = append(routes, admin.ServerAPI{Control: app.control, Publisher: app.broker, MaxBytes: app.maxPublish, Node: app.nodeInfo}.Routes()...)
		routes = append(routes, admin.PresenceAPI{Presence: app.presence, Enabled: app.presenceEnabled}.Routes()...)
	}
	return admin.New(admin.Config{
		Listen:      cfg.AdminListen,
		APIKey:      cfg.adminKey,
		OpenMetrics: cfg.AdminMetricsOpen,
		Pprof:       cfg.AdminPprof,
		Ready: func() string {
			if h.draining.Load() {
				return "draining"
			}
			if app != nil && !app.ready() {
				return "broker unavailable"
			}
			return ""
		},
		Routes: routes,
		Logger: log,
	})
}

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
		"streams":            st.Streams,
		"refused":            st.Refused,
		"rejected":           st.Rejected,
		"handshake_failures": st.HandshakeFailures,
		"handshake_timeouts": st.HandshakeTimeouts,
		"pong_timeouts":      st.PongTimeouts,
		"protocol_errors":    st.ProtocolErrors,
		"stalls":             st.Stalls,
		"write_timeouts":     st.WriteTimeouts,
		"deflate_conns":      st.DeflateConns,
		"inflated":           st.Inflated,
		"inflate_too_big":    st.InflateTooBig,
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
		doc["deflated"] = hs.Deflated
		doc["deflate_skipped"] = hs.DeflateSkipped
		doc["deflate_saved_bytes"] = hs.DeflateSaved
		doc["broker_channels"] = app.broker.Channels()
		doc["broker_ready"] = app.ready()
		if app.presence != nil {
			pc := app.presence.Counters()
			doc["presence_channels"] = pc.Channels
			doc["presence_in_grace"] = pc.InGrace
			doc["presence_events"] = pc.Emitted
			doc["presence_events_dropped"] = pc.Dropped
			doc["presence_store_errors"] = pc.StoreErrors
			doc["presence_event_drops"] = app.handler.Stats().EventDrops
		}
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
