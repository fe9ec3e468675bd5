package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/pushdtest"
)

// startPushd starts the real pushd binary (embedded memory broker) on
// 127.0.0.1:0.
func startPushd(t *testing.T, args ...string) *pushdtest.Proc {
	t.Helper()
	return pushdtest.Start(t, pushdtest.Build(t), pushdtest.Options{Args: args})
}

func readReport(t *testing.T, path string) Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields() // the file matches the documented struct exactly
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("report does not match the Report schema: %v\n%s", err, b)
	}
	if r.Schema != ReportVersion {
		t.Fatalf("schema %q", r.Schema)
	}
	return r
}

func runInProcess(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestRunAgainstPushd is acceptance 4: the tool, in this process, against
// a real pushd on 127.0.0.1:0 publishing through POST /publish; then the
// same run with an impossible p99 exits with the SLO code.
func TestRunAgainstPushd(t *testing.T) {
	t.Parallel()
	p := startPushd(t)
	js := filepath.Join(t.TempDir(), "report.json")
	base := []string{"-target", p.URL("/ws"), "-publish-url", p.AdminURL("/publish"),
		"-conns", "200", "-ramp", "2000/s", "-rate", "400", "-groups", "4", "-group-rate", "20",
		"-duration", "2s", "-seed", "11", "-progress", "1s"}
	code, out, errs := runInProcess(t, append(base, "-json", js, "-min-delivery", "1")...)
	if code != ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	r := readReport(t, js)
	if r.Held != 200 || r.Failed != 0 || r.OpenAtEnd != 200 {
		t.Fatalf("held %d failed %d open %d", r.Held, r.Failed, r.OpenAtEnd)
	}
	// 400/s for 2 s to 200 personal channels, 20/s to 4 groups of 50.
	if r.PublishedPersonal < 700 || r.PublishedGroup < 35 {
		t.Fatalf("published %d personal, %d group", r.PublishedPersonal, r.PublishedGroup)
	}
	if want := r.PublishedPersonal + r.PublishedGroup*50; r.Expected != want {
		t.Fatalf("expected %d deliveries, want %d", r.Expected, want)
	}
	if r.DeliveryRatio != 1.0 || r.Duplicates != 0 || r.Gaps != 0 {
		t.Fatalf("delivery %v dup %d gaps %d\n%s", r.DeliveryRatio, r.Duplicates, r.Gaps, out)
	}
	if r.Latency.P99 <= 0 || r.Latency.P999 < r.Latency.P99 || r.Latency.Count != int64(r.PublishedPersonal) || r.GroupLatency.P99 <= 0 {
		t.Fatalf("latency %+v group %+v", r.Latency, r.GroupLatency)
	}
	if r.ConnectLatency.Count != 200 || r.SubscribeLatency.Count != 200 {
		t.Fatalf("connect %+v subscribe %+v", r.ConnectLatency, r.SubscribeLatency)
	}
	if !r.SLO.OK || !strings.Contains(out, "SLO               OK") {
		t.Fatalf("SLO %+v\n%s", r.SLO, out)
	}
	if r.ExitCode != ExitOK || r.Verdict != "OK (exit 0)" {
		t.Fatalf("report exit_code %d verdict %q, the command exited %d", r.ExitCode, r.Verdict, code)
	}
	// Rates are over the send window (-duration 2s), not send + drain.
	if r.SendSeconds < 1.9 || r.WindowSeconds < r.SendSeconds {
		t.Fatalf("send window %.2fs, window with drain %.2fs", r.SendSeconds, r.WindowSeconds)
	}
	if want := float64(r.Delivered) / r.SendSeconds; r.MsgsPerSec != want {
		t.Fatalf("msgs_per_sec %.1f, want delivered/send_seconds %.1f", r.MsgsPerSec, want)
	}
	if want := float64(r.PublishedPersonal+r.PublishedGroup) / r.SendSeconds; r.PublishedPerSec != want {
		t.Fatalf("published_per_sec %.1f, want %.1f", r.PublishedPerSec, want)
	}
	if !strings.Contains(errs, "seed 11") {
		t.Fatalf("seed not printed:\n%s", errs)
	}
	t.Logf("\n%s", out)

	js2 := filepath.Join(t.TempDir(), "slo.json")
	code, out, _ = runInProcess(t, append(base, "-duration", "1s", "-json", js2, "-max-p99", "1us")...)
	if code != ExitSLOBreach {
		t.Fatalf("impossible p99: exit %d, want %d\n%s", code, ExitSLOBreach, out)
	}
	if r := readReport(t, js2); r.SLO.OK || len(r.SLO.Breaches) != 1 || !strings.HasPrefix(r.SLO.Breaches[0], "p99") || r.ExitCode != ExitSLOBreach {
		t.Fatalf("SLO %+v exit_code %d", r.SLO, r.ExitCode)
	}
	if !strings.Contains(out, "SLO               BREACHED (exit 3): p99") {
		t.Fatalf("the report's SLO line does not match exit 3:\n%s", out)
	}
}

// buildLoadtest builds this command (for -workers, which re-executes the
// binary, and for prlimit).
func buildLoadtest(t *testing.T) string {
	t.Helper()
	return pushdtest.BuildPackage(t, "github.com/pushd/pushd/loadtest", "loadtest")
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestWorkersMerge runs two worker processes from two source addresses
// and checks the merged report.
func TestWorkersMerge(t *testing.T) {
	t.Parallel()
	p := startPushd(t)
	bin := buildLoadtest(t)
	js := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(bin, "-target", p.URL("/ws"), "-publish-url", p.AdminURL("/publish"),
		"-conns", "300", "-workers", "2", "-ramp", "3000", "-rate", "300", "-duration", "1s",
		"-src", "127.0.3.1,127.0.3.2", "-json", js, "-min-delivery", "1", "-seed", "5")
	out, err := cmd.CombinedOutput()
	if code := exitCode(t, err); code != ExitOK {
		t.Fatalf("exit %d\n%s", code, out)
	}
	r := readReport(t, js)
	if r.Workers != 2 || r.Held != 300 || r.DeliveryRatio != 1 || r.Latency.Count != int64(r.PublishedPersonal) || r.PublishedPersonal < 250 {
		t.Fatalf("workers %d held %d delivery %v latency %+v published %d\n%s", r.Workers, r.Held, r.DeliveryRatio, r.Latency, r.PublishedPersonal, out)
	}
	if r.UserBytesPerConn <= 0 || r.ConnStructBytes <= 0 {
		t.Fatalf("memory per conn %v / %d", r.UserBytesPerConn, r.ConnStructBytes)
	}
}

// TestPreflight is acceptance 3: a run that cannot fit stops before
// dialing and prints the fix.
func TestPreflight(t *testing.T) {
	t.Parallel()
	p := startPushd(t)
	bin := buildLoadtest(t)
	cases := []struct {
		name string
		argv []string
		want []string
	}{
		{"nofile", []string{"prlimit", "--nofile=256:256", bin, "-conns", "1000"},
			[]string{"fail: RLIMIT_NOFILE: hard limit 256 < 1064", "fix:", "`-workers 6`"}},
		{"ports", []string{bin, "-conns", "200000", "-workers", "20"},
			[]string{"fail: net.ipv4.ip_local_port_range", "fix: use at least", "-src 127.0.1.0/24"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			argv := append(tc.argv, "-target", p.URL("/ws"), "-publish-url", p.AdminURL("/publish"))
			out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
			if code := exitCode(t, err); code != ExitUsage {
				t.Fatalf("exit %d, want %d\n%s", code, ExitUsage, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(string(out), "nothing was started") {
				t.Errorf("output lacks the no-start notice:\n%s", out)
			}
		})
	}
	if s := p.Stats(t); s.Accepted != 0 {
		t.Fatalf("pushd accepted %d connections: preflight let the run start", s.Accepted)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-target", "ws://127.0.0.1:1/ws", "-rate", "10"},
		{"-target", "http://127.0.0.1:1/ws", "-rate", "0"},
		{"-target", "ws://127.0.0.1:1/ws", "-rate", "0", "-insecure"},                                // TLS flags need wss://
		{"-target", "wss://127.0.0.1:1/ws", "-rate", "0", "-token", "a", "-token-file", "/dev/null"}, // exclusive
		{"-target", "wss://127.0.0.1:1/ws", "-rate", "0", "-jwt-hs256-secret-file", "/dev/null"},     // empty secret
		{"-target", "ws://127.0.0.1:1/ws", "-rate", "0", "-conns", "3000000"},
	} {
		if code, _, errs := runInProcess(t, args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d\n%s", args, code, ExitUsage, errs)
		}
	}
}
