package deploy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite grafana/pushd.json from Panels")

const dashboardFile = "grafana/pushd.json"

// TestDashboardGenerated checks that grafana/pushd.json is what
// DashboardJSON generates from the typed panel table (run with -update to
// rewrite it), and that it has the panels the dashboard promises.
func TestDashboardGenerated(t *testing.T) {
	want, err := DashboardJSON()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(dashboardFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what Panels generates: run go test -run TestDashboardGenerated -update .", dashboardFile)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(got, &dash); err != nil {
		t.Fatal(err)
	}
	titles := map[string]bool{}
	for _, p := range dash.Panels {
		titles[p.Title] = true
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
	for _, want := range []string{
		"Connections per node", "Connect rate", "Subscriptions", "Publications in, deliveries out",
		"Fan-out duration", "Broker state and canary age", "Slow consumers and drops",
		"Memory", "Goroutines", "Open files",
	} {
		if !titles[want] {
			t.Errorf("dashboard has no %q panel", want)
		}
	}
}
