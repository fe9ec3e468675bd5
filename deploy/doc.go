// Package deploy checks pushd's deployment files against real tools: the
// Helm chart in helm/pushd is linted and rendered by Helm v4 as a library
// and every object decodes strictly into k8s.io/api types; the Prometheus
// rules in prometheus/ pass promtool and fire against a real Prometheus
// scraping a real pushd and redis-server; the Grafana dashboard in
// grafana/pushd.json is generated from the typed panel table in
// dashboard.go and every panel's query returns data from that Prometheus.
//
// It is a module of its own so that Helm and the Kubernetes libraries never
// enter the server module's go.mod. Its tests build cmd/pushd from the
// repository root (the parent folder) and need redis-server, prometheus and
// promtool on PATH (scripts/test.sh installs them); a missing tool fails
// the test, it never skips.
//
// Regenerate the dashboard after changing the panel table with
//
//	go test -run TestDashboardGenerated -update .
package deploy
