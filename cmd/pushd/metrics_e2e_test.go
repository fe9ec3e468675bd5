package main_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// metricNames are the names README "Metrics" lists; /metrics of the real
// binary must show every one (issue #9 acceptance 5).
var metricNames = []string{
	"pushd_build_info",
	"pushd_connections",
	"pushd_connections_max",
	"pushd_connections_accepted_total",
	"pushd_connections_upgraded_total",
	"pushd_streams_opened_total",
	"pushd_connections_closed_total",
	"pushd_handshake_failures_total",
	"pushd_handshake_duration_seconds",
	"pushd_subscriptions",
	"pushd_channels",
	"pushd_messages_received_total",
	"pushd_messages_delivered_total",
	"pushd_messages_dropped_total",
	"pushd_publish_failures_total",
	"pushd_fanout_duration_seconds",
	"pushd_fanout_pool_fallbacks_total",
	"pushd_slow_consumer_actions_total",
	"pushd_broker_up",
	"pushd_broker_canary_age_seconds",
	"pushd_ready",
	"pushd_draining",
	"pushd_drain_reconnect_hints_total",
	"pushd_drain_closes_total",
	"pushd_pong_timeouts_total",
	"pushd_write_timeouts_total",
	"pushd_socket_stalls_total",
	"pushd_protocol_errors_total",
	"pushd_tokens_expired_total",
	"pushd_rate_limit_closes_total",
	"pushd_auth_refusals_total",
	"pushd_forbidden_subscribes_total",
	"pushd_http_responses_total",
	"process_open_fds",
	"process_max_fds",
	"process_resident_memory_bytes",
	"go_goroutines",
	"go_memstats_heap_inuse_bytes",
}

// allowedLabels are every label a pushd_ metric may have: none names a
// channel or a user.
var allowedLabels = map[string]bool{
	"code": true, "reason": true, "phase": true, "policy": true, "action": true,
	"version": true, "revision": true, "goversion": true,
}

// parseMetrics scrapes and parses /metrics.
func parseMetrics(t *testing.T, p *pushdtest.Proc) map[string]*dto.MetricFamily {
	t.Helper()
	text := scrape(t, p)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, text)
	}
	return fams
}

// metricValue is the value of name's sample whose labels include want
// (counter, gauge, or a histogram's sample count); ok false when absent.
func metricValue(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// TestMetricsEndToEnd drives the real binary (memory broker) through a
// subscription, three publications, a refused and a malformed handshake
// and a normal close, then requires every listed metric name on
// /metrics, values that moved accordingly, and no label outside the
// bounded set (no channel or user names).
func TestMetricsEndToEnd(t *testing.T) {
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-policy", "feed:*=drop"}})
	sub, _, err := websocket.DefaultDialer.Dial(p.URL("/ws?ch=news-secret-channel"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		resp, err := http.Post(p.AdminURL("/publish?ch=news-secret-channel"), "application/json", strings.NewReader(`{"n":1}`))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("publish %d: %v %v", i, resp, err)
		}
		resp.Body.Close()
		_ = sub.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := sub.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	if _, resp, err := websocket.DefaultDialer.Dial(p.URL("/elsewhere"), nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("upgrade on /elsewhere: %v %v", resp, err)
	}
	c, err := net.Dial("tcp", p.WSAddr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("NOT HTTP AT ALL\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Read(make([]byte, 512))
	c.Close()
	_ = sub.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Second))
	_ = sub.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, _ = sub.ReadMessage()
	sub.Close()

	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams = parseMetrics(t, p)
		if v, _ := metricValue(fams, "pushd_connections_closed_total", "code", "1000"); v >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pushd_connections_closed_total{code=\"1000\"} never reached 1")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, name := range metricNames {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"pushd_build_info", nil, 1},
		{"pushd_connections_accepted_total", nil, 3},
		{"pushd_connections_upgraded_total", nil, 1},
		{"pushd_messages_received_total", nil, 3},
		{"pushd_messages_delivered_total", nil, 3},
		{"pushd_fanout_duration_seconds", nil, 3},
		{"pushd_handshake_duration_seconds", []string{"phase", "upgrade"}, 2},
		{"pushd_handshake_duration_seconds", []string{"phase", "open"}, 1},
		{"pushd_handshake_failures_total", []string{"reason", "rejected"}, 1},
		{"pushd_handshake_failures_total", []string{"reason", "malformed"}, 1},
		{"pushd_broker_up", nil, 1},
		{"pushd_ready", nil, 1},
		{"process_open_fds", nil, 1},
		{"process_max_fds", nil, 1},
	} {
		v, ok := metricValue(fams, c.name, c.labels...)
		if !ok || v < c.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", c.name, c.labels, v, ok, c.min)
		}
	}
	for _, reason := range []string{"timeout", "refused_capacity", "refused_per_ip", "refused_rate"} {
		if _, ok := metricValue(fams, "pushd_handshake_failures_total", "reason", reason); !ok {
			t.Errorf("pushd_handshake_failures_total{reason=%q} missing", reason)
		}
	}
	if v, ok := metricValue(fams, "pushd_broker_canary_age_seconds"); !ok || v != 0 {
		t.Errorf("memory broker: canary age %v (present %v), want 0", v, ok)
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "pushd_") {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !allowedLabels[l.GetName()] || strings.Contains(l.GetValue(), "news") {
					t.Errorf("%s has label %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// TestMetricsRedisBroker: with -redis the broker metrics follow the real
// Redis canary: up 1 and a canary younger than a few seconds; once Redis
// is stopped, up turns 0 and /readyz 503.
func TestMetricsRedisBroker(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	p := pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: []string{"-redis", "redis://" + rs.Addr + "/0"}})
	waitReady(t, p, 200, 15*time.Second)
	fams := parseMetrics(t, p)
	up, _ := metricValue(fams, "pushd_broker_up")
	age, ok := metricValue(fams, "pushd_broker_canary_age_seconds")
	if up != 1 || !ok || age < 0 || age > 5 {
		t.Fatalf("redis broker: up %v, canary age %v (present %v)", up, age, ok)
	}
	if _, ok := metricValue(fams, "pushd_broker_reconnects_total"); !ok {
		t.Error("pushd_broker_reconnects_total missing with -redis")
	}
	rs.Stop()
	waitReady(t, p, 503, 20*time.Second)
	fams = parseMetrics(t, p)
	if up, _ := metricValue(fams, "pushd_broker_up"); up != 0 {
		t.Errorf("pushd_broker_up %v with Redis stopped, want 0", up)
	}
	if r, _ := metricValue(fams, "pushd_ready"); r != 0 {
		t.Errorf("pushd_ready %v with Redis stopped, want 0", r)
	}
}
