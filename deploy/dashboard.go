package deploy

import (
	"encoding/json"
	"fmt"
)

// Panel is one dashboard panel: a title, a kind and its PromQL queries.
// The queries use two Grafana variables: $job (the scrape job of pushd's
// admin port) and $__rate_interval.
type Panel struct {
	Title   string
	Kind    PanelKind
	Unit    string // Grafana unit id: short, s, bytes, percentunit, ops
	Desc    string
	Queries []Query
	Width   int // grid columns out of 24 (default 12)
}

// Query is one PromQL target of a panel.
type Query struct {
	Expr   string
	Legend string
	// Busy says the query is above zero on a node under load (clients
	// connecting and subscribed, publications flowing); the live test
	// checks it. The others only have to return a number.
	Busy bool
}

// PanelKind is the Grafana panel type.
type PanelKind string

// The panel kinds the dashboard uses.
const (
	TimeSeries PanelKind = "timeseries"
	Heatmap    PanelKind = "heatmap"
	Stat       PanelKind = "stat"
)

// rate is a per-second rate over Grafana's rate interval, summed per node.
func rate(metric, by string) string {
	return fmt.Sprintf(`sum by (%s) (rate(%s{job=~"$job"}[$__rate_interval]))`, by, metric)
}

// Panels is pushd's dashboard, top to bottom. grafana/pushd.json is
// generated from it (DashboardJSON), and the deploy tests run every query
// against a real Prometheus scraping a real pushd.
func Panels() []Panel {
	return []Panel{
		{Title: "Nodes ready", Kind: Stat, Unit: "short", Width: 6,
			Desc:    "Nodes whose /readyz answers 200, of the nodes scraped.",
			Queries: []Query{{`sum(pushd_ready{job=~"$job"})`, "ready", true}, {`count(pushd_build_info{job=~"$job"})`, "nodes", true}}},
		{Title: "Connections", Kind: Stat, Unit: "short", Width: 6,
			Queries: []Query{{`sum(pushd_connections{job=~"$job"})`, "connections", true}}},
		{Title: "Broker up", Kind: Stat, Unit: "short", Width: 6,
			Desc:    "Nodes whose Redis canary round-trips (always 1 with the embedded broker).",
			Queries: []Query{{`min(pushd_broker_up{job=~"$job"})`, "min over nodes", true}}},
		{Title: "Draining", Kind: Stat, Unit: "short", Width: 6,
			Queries: []Query{{`sum(pushd_draining{job=~"$job"})`, "draining nodes", false}}},

		{Title: "Connections per node", Kind: TimeSeries, Unit: "short",
			Desc: "Connections registered with the poller, and the -max-conns cap.",
			Queries: []Query{
				{`sum by (instance) (pushd_connections{job=~"$job"})`, "{{instance}}", true},
				{`max by (instance) (pushd_connections_max{job=~"$job"})`, "cap {{instance}}", false},
			}},
		{Title: "Connect rate", Kind: TimeSeries, Unit: "ops",
			Desc: "New WebSocket connections per second, and handshakes that failed by reason.",
			Queries: []Query{
				{rate("pushd_connections_upgraded_total", "instance"), "upgraded {{instance}}", true},
				{rate("pushd_handshake_failures_total", "reason"), "failed: {{reason}}", false},
			}},
		{Title: "Subscriptions", Kind: TimeSeries, Unit: "short",
			Desc: "Live subscriptions per node, and their net change per second (subscribes minus unsubscribes).",
			Queries: []Query{
				{`sum by (instance) (pushd_subscriptions{job=~"$job"})`, "{{instance}}", true},
				{`sum by (instance) (deriv(pushd_subscriptions{job=~"$job"}[$__rate_interval]))`, "net subscribe/s {{instance}}", false},
			}},
		{Title: "Publications in, deliveries out", Kind: TimeSeries, Unit: "ops",
			Desc: "Publications the hub received from the broker, and frames queued to subscribers.",
			Queries: []Query{
				{rate("pushd_messages_received_total", "instance"), "in {{instance}}", true},
				{rate("pushd_messages_delivered_total", "instance"), "out {{instance}}", true},
			}},
		{Title: "Fan-out duration", Kind: Heatmap, Unit: "s",
			Desc: "Time one delivery task takes to encode a batch once and queue it to every local subscriber.",
			Queries: []Query{
				{`sum by (le) (rate(pushd_fanout_duration_seconds_bucket{job=~"$job"}[$__rate_interval]))`, "{{le}}", true},
			}},
		{Title: "Fan-out and handshake p99", Kind: TimeSeries, Unit: "s",
			Queries: []Query{
				{`histogram_quantile(0.99, sum by (le) (rate(pushd_fanout_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))`, "fan-out p99", true},
				{`histogram_quantile(0.99, sum by (le, phase) (rate(pushd_handshake_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))`, "handshake {{phase}} p99", true},
			}},
		{Title: "Broker state and canary age", Kind: TimeSeries, Unit: "s",
			Desc: "Age of the oldest Redis connection's canary (published every second); broker up per node; pub/sub reconnects.",
			Queries: []Query{
				{`max by (instance) (pushd_broker_canary_age_seconds{job=~"$job"})`, "canary age {{instance}}", false},
				{`min by (instance) (pushd_broker_up{job=~"$job"})`, "up {{instance}}", true},
				{rate("pushd_broker_reconnects_total", "instance"), "reconnects/s {{instance}}", false},
			}},
		{Title: "Slow consumers and drops", Kind: TimeSeries, Unit: "ops",
			Desc: "What the slow-consumer policies did, and publications not delivered, by reason.",
			Queries: []Query{
				{rate("pushd_slow_consumer_actions_total", "policy, action"), "{{policy}}: {{action}}", false},
				{rate("pushd_messages_dropped_total", "reason"), "dropped: {{reason}}", false},
				{rate("pushd_publish_failures_total", "reason"), "publish refused: {{reason}}", false},
			}},
		{Title: "Closes by code", Kind: TimeSeries, Unit: "ops",
			Queries: []Query{{rate("pushd_connections_closed_total", "code"), "{{code}}", true}}},
		{Title: "Memory", Kind: TimeSeries, Unit: "bytes",
			Queries: []Query{
				{`process_resident_memory_bytes{job=~"$job"}`, "RSS {{instance}}", true},
				{`go_memstats_heap_inuse_bytes{job=~"$job"}`, "heap in use {{instance}}", true},
			}},
		{Title: "Goroutines", Kind: TimeSeries, Unit: "short",
			Desc:    "O(event loops + pools), never O(connections): a climb is a leak.",
			Queries: []Query{{`go_goroutines{job=~"$job"}`, "{{instance}}", true}}},
		{Title: "Open files", Kind: TimeSeries, Unit: "percentunit",
			Desc:    "Open files as a share of RLIMIT_NOFILE: every connection is one.",
			Queries: []Query{{`process_open_fds{job=~"$job"} / process_max_fds{job=~"$job"}`, "{{instance}}", true}}},
	}
}

// DashboardJSON renders Panels as a Grafana dashboard (schemaVersion 39)
// with a Prometheus data source variable and a job variable.
func DashboardJSON() ([]byte, error) {
	ds := map[string]any{"type": "prometheus", "uid": "${datasource}"}
	var panels []any
	x, y, rowH := 0, 0, 0
	for i, p := range Panels() {
		w, h := p.Width, 8
		if w == 0 {
			w = 12
		}
		if p.Kind == Stat {
			h = 4
		}
		if x+w > 24 {
			x, y = 0, y+rowH
			rowH = 0
		}
		targets := make([]any, len(p.Queries))
		for j, q := range p.Queries {
			t := map[string]any{"datasource": ds, "expr": q.Expr, "legendFormat": q.Legend, "refId": string(rune('A' + j))}
			if p.Kind == Heatmap {
				t["format"] = "heatmap"
			}
			targets[j] = t
		}
		panel := map[string]any{
			"id": i + 1, "type": string(p.Kind), "title": p.Title, "description": p.Desc,
			"datasource":  ds,
			"gridPos":     map[string]int{"x": x, "y": y, "w": w, "h": h},
			"fieldConfig": map[string]any{"defaults": map[string]any{"unit": p.Unit}, "overrides": []any{}},
			"targets":     targets,
		}
		if p.Kind == Heatmap {
			panel["options"] = map[string]any{"calculate": false, "yAxis": map[string]any{"unit": p.Unit}}
		}
		panels = append(panels, panel)
		x += w
		rowH = max(rowH, h)
	}
	dash := map[string]any{
		"title": "pushd", "uid": "pushd", "tags": []string{"pushd", "websocket"},
		"schemaVersion": 39, "version": 1, "editable": true, "graphTooltip": 1,
		"time":    map[string]string{"from": "now-1h", "to": "now"},
		"refresh": "30s",
		"templating": map[string]any{"list": []any{
			map[string]any{"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
			map[string]any{"name": "job", "label": "Job", "type": "query", "datasource": ds,
				"query":      map[string]any{"query": "label_values(pushd_build_info, job)", "refId": "job"},
				"definition": "label_values(pushd_build_info, job)",
				"includeAll": true, "multi": true, "allValue": ".*", "refresh": 2,
				"current": map[string]any{"text": "All", "value": "$__all"}},
		}},
		"panels": panels,
	}
	b, err := json.MarshalIndent(dash, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	return append(b, '\n'), nil
}
