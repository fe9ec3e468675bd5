package main

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/poller"
)

// metrics is the process's Prometheus registry, served on the admin
// listener at /metrics. Counters and gauges that the components already
// keep (poller.Stats, fanout.Stats, protocol.Stats, cluster.RedisStats)
// are read at scrape time by statsCollector: they cost nothing on the hot
// path. Only the two histograms are observed as events happen.
// No metric has a per-channel or per-user label.
type metrics struct {
	reg       *prometheus.Registry
	handshake *prometheus.HistogramVec
	fanout    prometheus.Histogram
}

// durationBuckets span 10 µs to 2.6 s, ×4 each.
func durationBuckets() []float64 { return prometheus.ExponentialBuckets(10e-6, 4, 10) }

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.handshake = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "pushd_handshake_duration_seconds",
		Help: "Time the connection handler spends on one WebSocket handshake, measured around it by cmd/pushd. " +
			"phase=upgrade: Handler.Upgrade before the 101 (URL parsing, Origin and token checks, URL-subscription permissions); " +
			"phase=open: Handler.Open right after it (URL subscriptions, broker subscribe and history lookups for since=). " +
			"Reading the request and writing the response are not included.",
		Buckets: durationBuckets(),
	}, []string{"phase"})
	m.fanout = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "pushd_fanout_duration_seconds",
		Help: "Time one delivery task takes to encode a batch of publications once and queue it to every local subscriber " +
			"of its channel (all parallel chunks), per batch (fanout.Config.ObserveDelivery).",
		Buckets: durationBuckets(),
	})
	m.reg.MustRegister(
		m.handshake,
		m.fanout,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)
	return m
}

// observeDelivery is the hub's ObserveDelivery hook.
func (m *metrics) observeDelivery(d time.Duration, _ int) { m.fanout.Observe(d.Seconds()) }

// handler serves the registry.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// buildInfo is pushd_build_info: constant 1 with the version labels.
func buildInfo() prometheus.Collector {
	v := readBuildVersion()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "pushd_build_info",
		Help:        "Always 1; the labels say which build is running (the same build info as pushd -version).",
		ConstLabels: prometheus.Labels{"version": v.Version, "revision": v.Revision, "goversion": v.Go},
	})
	g.Set(1)
	return g
}

// statsCollector turns the components' counters into metrics at scrape
// time.
type statsCollector struct {
	srv    *poller.Server
	app    *pushApp // nil with -echo
	front  *wssCert // nil without -tls-listen
	health *health
	d      *statsDescs

	mu       sync.Mutex
	capacity uint64 // high-water mark of the derived refused_capacity count
}

// attach registers the scrape-time collector over the running components.
func (m *metrics) attach(srv *poller.Server, app *pushApp, front *wssCert, h *health) {
	m.reg.MustRegister(&statsCollector{srv: srv, app: app, front: front, health: h, d: newStatsDescs()})
}

// attachJWKS exports the -jwt-jwks-url source's counters.
func (m *metrics) attachJWKS(j *auth.JWKS) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushd_jwks_refresh_errors_total", Help: "Failed JWKS refreshes (the cached keys stay in use)."},
			func() float64 { return float64(j.RefreshErrors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushd_jwks_skipped_keys_total", Help: "Keys of fetched JWK Sets skipped because they did not parse."},
			func() float64 { return float64(j.SkippedKeys()) }),
	)
}

type metricDesc struct {
	*prometheus.Desc
	kind prometheus.ValueType
}

func counter(name, help string, labels ...string) metricDesc {
	return metricDesc{prometheus.NewDesc(name, help, labels, nil), prometheus.CounterValue}
}

func gauge(name, help string, labels ...string) metricDesc {
	return metricDesc{prometheus.NewDesc(name, help, labels, nil), prometheus.GaugeValue}
}

// statsDescs are the scrape-time metrics' descriptions, built once per
// collector.
type statsDescs struct {
	conns, connsMax, accepted, upgraded, closed, hsFailures              metricDesc
	pongTimeouts, writeTimeouts, stalls, protoErrors, expired, httpResp  metricDesc
	rateCloses, authRefusals, forbidden, wssConns                        metricDesc
	tlsHandshakes, tlsRecordErrors, tlsKeyRebuilds, tlsKeysKept          metricDesc
	subs, channels, received, delivered, dropped, publishFail, fallbacks metricDesc
	slow, brokerUp, canaryAge, brokerReconnects, ready, draining         metricDesc
	drainHints, drainCloses                                              metricDesc
	brokerAffected, ingestQueued, ingestOverloaded                       metricDesc
	presenceChannels, presenceEvents, presenceDropped, presenceErrors    metricDesc
	streams                                                              metricDesc
}

func newStatsDescs() *statsDescs {
	return &statsDescs{
		conns:            gauge("pushd_connections", "Connections registered with the poller (handshaking, open or closing)."),
		connsMax:         gauge("pushd_connections_max", "The connection cap (-max-conns); above it clients get 503."),
		accepted:         counter("pushd_connections_accepted_total", "TCP connections accepted."),
		upgraded:         counter("pushd_connections_upgraded_total", "Connections upgraded to WebSocket."),
		closed:           counter("pushd_connections_closed_total", "Upgraded connections closed, by close code (1006: TCP went away without one; codes outside pushd's table are counted as other).", "code"),
		hsFailures:       counter("pushd_handshake_failures_total", "Connections that never became WebSockets, by reason: malformed (bad or oversized upgrade request), rejected (refused by the handler: path, Origin, token, channels), timeout (-handshake-timeout), refused_capacity (-max-conns, EMFILE), refused_per_ip (-max-conns-per-ip), refused_rate (-connect-rate), tls (wss handshake failed), tls_plaintext (plain HTTP sent to the wss port, answered 400).", "reason"),
		pongTimeouts:     counter("pushd_pong_timeouts_total", "Connections closed because they stayed silent after a ping."),
		writeTimeouts:    counter("pushd_write_timeouts_total", "Connections closed because their socket stayed full for -write-timeout."),
		stalls:           counter("pushd_socket_stalls_total", "Times a connection's socket send buffer filled up."),
		protoErrors:      counter("pushd_protocol_errors_total", "Connections closed for a WebSocket protocol error."),
		expired:          counter("pushd_tokens_expired_total", "Connections closed with 4003 when their token expired."),
		httpResp:         counter("pushd_http_responses_total", "Plain HTTP GETs answered on the WebSocket listener (the demo's files)."),
		streams:          counter("pushd_streams_opened_total", "SSE (/sse) and NDJSON (/stream) streams opened; also counted in pushd_connections_upgraded_total."),
		rateCloses:       counter("pushd_rate_limit_closes_total", "Connections closed with 1008 for exceeding -max-message-rate."),
		authRefusals:     counter("pushd_auth_refusals_total", "Upgrades refused by the token or Origin check (401/403; also counted as rejected handshakes)."),
		forbidden:        counter("pushd_forbidden_subscribes_total", "Subscribe requests refused with 403."),
		wssConns:         gauge("pushd_wss_connections", "Connections on the wss listener (TLS terminated by pushd on its event loops)."),
		tlsHandshakes:    counter("pushd_tls_handshakes_total", "wss TLS handshakes completed, by whether a session ticket resumed them.", "resumed"),
		tlsRecordErrors:  counter("pushd_tls_record_errors_total", "Established wss connections ended by TLS: a record that did not decrypt, a renegotiation attempt, the peer's close_notify."),
		tlsKeyRebuilds:   counter("pushd_tls_key_rebuilds_total", "AES-GCM states rebuilt for a wss connection direction idle longer than 2 s (idle connections hold only the key)."),
		tlsKeysKept:      counter("pushd_tls_keys_kept_total", "TLS 1.3 AES-GCM wss connections that kept crypto/tls's own AES-GCM state (its layout or the key check did not match)."),
		subs:             gauge("pushd_subscriptions", "Live subscriptions on this node."),
		channels:         gauge("pushd_channels", "Channels with local state on this node."),
		received:         counter("pushd_messages_received_total", "Publications received by the hub from the broker."),
		delivered:        counter("pushd_messages_delivered_total", "Frames queued to subscribers (pushes and recovered history)."),
		dropped:          counter("pushd_messages_dropped_total", "Publications not delivered, by reason: slow_consumer (the drop policy skipped a push to a slow subscriber), mailbox_overflow (a channel's fan-out fell a whole mailbox behind), broker_lost (Redis: seqs no longer in the stream when recovering), ingest_channel / ingest_node (the Redis ingest shed a publication, gap notice sent: the channel's / the node's queued bytes were over budget), ingest_conflated (a conflating channel's queued publication replaced by a newer one).", "reason"),
		publishFail:      counter("pushd_publish_failures_total", "Publications refused to the publisher, by reason: backpressure (the channel's mailbox is full: 503), broker_unavailable (Redis path down: 503), broker_error (Redis answered an error).", "reason"),
		fallbacks:        counter("pushd_fanout_pool_fallbacks_total", "Fan-out chunks run inline because the worker pool was full."),
		slow:             counter("pushd_slow_consumer_actions_total", "What the slow-consumer policies did: policy=disconnect action=close (4001), policy=drop action=drop|gap_notice, policy=conflate action=conflate (a push held back, sent later or superseded).", "policy", "action"),
		brokerUp:         gauge("pushd_broker_up", "1 while the broker path works (Redis: the canary round-trips); always 1 with the embedded memory broker."),
		canaryAge:        gauge("pushd_broker_canary_age_seconds", "Age of the oldest Redis connection's last canary; always 0 with the embedded memory broker (it has no canary)."),
		brokerReconnects: counter("pushd_broker_reconnects_total", "Redis pub/sub sessions started after the first (Redis brokers only)."),
		brokerAffected:   counter("pushd_broker_affected_channels_total", "Channels whose Redis subscription broke (carried by a pub/sub connection when its session ended); each is resynced from its stream or its subscribers told recovered:false (Redis brokers only)."),
		ingestQueued:     gauge("pushd_broker_ingest_queued_bytes", "Bytes received from Redis pub/sub and not yet handed to delivery (Redis brokers only)."),
		ingestOverloaded: gauge("pushd_broker_ingest_overloaded", "1 while the Redis ingest shed publications within the last 10 s (Redis brokers only); sustained 1 means the node cannot deliver what it is sent."),
		ready:            gauge("pushd_ready", "1 when /readyz answers 200: not draining and the broker path works."),
		draining:         gauge("pushd_draining", "1 from SIGTERM/SIGINT on (/readyz answers 503)."),
		drainHints:       counter("pushd_drain_reconnect_hints_total", "Reconnect hints sent by the drain."),
		drainCloses:      counter("pushd_drain_closes_total", "Connections closed by the paced drain."),
		presenceChannels: gauge("pushd_presence_channels", "Presence channels this node has members, connections or pending changes in (-presence only)."),
		presenceEvents:   counter("pushd_presence_events_total", "Join/leave events this node emitted to the cluster (-presence-events only)."),
		presenceDropped:  counter("pushd_presence_events_dropped_total", "Join/leave events not delivered, by reason: rate (over -presence-event-rate on the emitting node), queue_full (a subscriber's queue was full on this node).", "reason"),
		presenceErrors:   counter("pushd_presence_store_errors_total", "Failed presence writes to the store (Redis unreachable); the node's entries are rewritten at the next heartbeat that succeeds."),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	d := c.d
	for _, m := range []metricDesc{
		d.conns, d.connsMax, d.accepted, d.upgraded, d.closed, d.hsFailures,
		d.pongTimeouts, d.writeTimeouts, d.stalls, d.protoErrors, d.expired, d.httpResp,
		d.rateCloses, d.authRefusals, d.forbidden, d.wssConns,
		d.tlsHandshakes, d.tlsRecordErrors, d.tlsKeyRebuilds, d.tlsKeysKept,
		d.subs, d.channels, d.received, d.delivered, d.dropped, d.publishFail, d.fallbacks,
		d.slow, d.brokerUp, d.canaryAge, d.brokerReconnects, d.brokerAffected, d.ingestQueued,
		d.ingestOverloaded, d.ready, d.draining,
		d.drainHints, d.drainCloses, d.streams,
		d.presenceChannels, d.presenceEvents, d.presenceDropped, d.presenceErrors,
	} {
		ch <- m.Desc
	}
}

// closeCodeLabels are the close codes counted under their own label;
// every other code (clients choose theirs) is "other", so a client
// cannot grow the label set.
func closeCodeLabel(code int) string {
	switch code {
	case 1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 4001, 4003:
		return strconv.Itoa(code)
	}
	return "other"
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	emit := func(m metricDesc, v float64, labels ...string) {
		if cm, err := prometheus.NewConstMetric(m.Desc, m.kind, v, labels...); err == nil {
			ch <- cm
		}
	}
	st := c.srv.Stats()
	emit(d.conns, float64(st.Conns))
	emit(d.connsMax, float64(st.MaxConns))
	emit(d.accepted, float64(st.Accepted))
	emit(d.upgraded, float64(st.Upgraded))
	emit(d.streams, float64(st.Streams))
	closed := map[string]uint64{"1000": 0, "1001": 0, "1006": 0}
	for code, n := range st.ClosedByCode {
		closed[closeCodeLabel(int(code))] += n
	}
	for code, n := range closed {
		emit(d.closed, float64(n), code)
	}
	emit(d.hsFailures, float64(st.HandshakeFailures), "malformed")
	emit(d.hsFailures, float64(st.Rejected), "rejected")
	emit(d.hsFailures, float64(st.HandshakeTimeouts), "timeout")
	emit(d.hsFailures, float64(c.refusedCapacity(st)), "refused_capacity")
	emit(d.hsFailures, float64(st.RefusedPerIP), "refused_per_ip")
	emit(d.hsFailures, float64(st.RefusedRate), "refused_rate")
	emit(d.pongTimeouts, float64(st.PongTimeouts))
	emit(d.writeTimeouts, float64(st.WriteTimeouts))
	emit(d.stalls, float64(st.Stalls))
	emit(d.protoErrors, float64(st.ProtocolErrors))
	emit(d.expired, float64(st.Expired))
	emit(d.httpResp, float64(st.HTTPResponses))
	if c.front != nil {
		emit(d.hsFailures, float64(st.TLSFailures), "tls")
		emit(d.hsFailures, float64(st.TLSPlaintext), "tls_plaintext")
		emit(d.wssConns, float64(st.TLSConns))
		emit(d.tlsHandshakes, float64(st.TLSHandshakes-st.TLSResumed), "false")
		emit(d.tlsHandshakes, float64(st.TLSResumed), "true")
		emit(d.tlsRecordErrors, float64(st.TLSRecordErrors))
		emit(d.tlsKeyRebuilds, float64(st.TLSKeyRebuilds))
		emit(d.tlsKeysKept, float64(st.TLSKeysKept))
	}
	draining := c.health.draining.Load()
	emit(d.draining, b2f(draining))
	emit(d.drainHints, float64(c.health.hints.Load()))
	emit(d.drainCloses, float64(c.health.closes.Load()))
	brokerUp := true
	if c.app != nil {
		c.collectApp(emit, d)
		brokerUp = c.app.ready()
	}
	emit(d.brokerUp, b2f(brokerUp))
	emit(d.ready, b2f(brokerUp && !draining))
}

// collectApp emits the pushd.v1 metrics (hub, protocol handler, broker).
func (c *statsCollector) collectApp(emit func(metricDesc, float64, ...string), d *statsDescs) {
	hs := c.app.hub.Stats()
	emit(d.subs, float64(hs.Subscriptions))
	emit(d.channels, float64(hs.Channels))
	emit(d.received, float64(hs.Published))
	emit(d.delivered, float64(hs.Delivered))
	emit(d.dropped, float64(hs.Dropped), "slow_consumer")
	emit(d.dropped, float64(hs.Overflowed), "mailbox_overflow")
	emit(d.publishFail, float64(hs.Refused), "backpressure")
	emit(d.fallbacks, float64(hs.PoolFallbacks))
	emit(d.slow, float64(hs.SlowDisconnects), "disconnect", "close")
	emit(d.slow, float64(hs.Dropped), "drop", "drop")
	emit(d.slow, float64(hs.GapNotices), "drop", "gap_notice")
	emit(d.slow, float64(hs.Conflated), "conflate", "conflate")
	ps := c.app.handler.Stats()
	emit(d.rateCloses, float64(ps.RateLimitCloses))
	emit(d.authRefusals, float64(ps.AuthRefusals))
	emit(d.forbidden, float64(ps.Forbidden))
	if c.app.presence != nil {
		pc := c.app.presence.Counters()
		emit(d.presenceChannels, float64(pc.Channels))
		emit(d.presenceEvents, float64(pc.Emitted))
		emit(d.presenceDropped, float64(pc.Dropped), "rate")
		emit(d.presenceDropped, float64(ps.EventDrops), "queue_full")
		emit(d.presenceErrors, float64(pc.StoreErrors))
	}
	var lost, unavailable, failed float64
	if rb, ok := c.app.broker.(*cluster.Redis); ok {
		rs := rb.Stats()
		lost, unavailable, failed = float64(rs.Lost), float64(rs.PublishUnavailable), float64(rs.PublishFailed)
		emit(d.canaryAge, min(rs.CanaryAge.Seconds(), 1e9))
		emit(d.brokerReconnects, float64(rs.Reconnects))
		emit(d.brokerAffected, float64(rs.AffectedChannels))
		emit(d.ingestQueued, float64(rs.IngestQueuedBytes))
		emit(d.ingestOverloaded, b2f(rs.Overloaded))
		emit(d.dropped, float64(rs.ShedChannel), "ingest_channel")
		emit(d.dropped, float64(rs.ShedNode), "ingest_node")
		emit(d.dropped, float64(rs.Conflated), "ingest_conflated")
	} else {
		emit(d.canaryAge, 0)
	}
	emit(d.dropped, lost, "broker_lost")
	emit(d.publishFail, unavailable, "broker_unavailable")
	emit(d.publishFail, failed, "broker_error")
}

// refusedCapacity is Refused minus its per-IP and rate parts. The three
// counters are read one after the other while refusals happen, so the
// difference is kept as a high-water mark: a counter must never go down.
func (c *statsCollector) refusedCapacity(st poller.Stats) uint64 {
	var v uint64
	if parts := st.RefusedPerIP + st.RefusedRate; st.Refused > parts {
		v = st.Refused - parts
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.capacity = max(c.capacity, v)
	return c.capacity
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
