package main

import (
	"errors"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestFailedRunIsNotOK: a run that fails (nothing listens at the target,
// so no connection is held) exits 1, and neither the printed report nor
// the JSON calls it OK; the error carries the command's name once.
func TestFailedRunIsNotOK(t *testing.T) {
	t.Parallel()
	// A port that was just free on loopback: connect gets ECONNREFUSED.
	// (Nothing is restarted on it; any listener that takes it in the gap
	// answers no WebSocket upgrade, which fails the run the same way.)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	js := filepath.Join(t.TempDir(), "failed.json")
	code, out, errs := runInProcess(t, "-target", "ws://"+addr+"/ws", "-conns", "5", "-ramp", "1000/s",
		"-rate", "0", "-duration", "1s", "-max-attempts", "1", "-handshake-timeout", "2s", "-json", js)
	if code != ExitRunError {
		t.Fatalf("exit %d, want %d\n%s\n%s", code, ExitRunError, out, errs)
	}
	line := regexp.MustCompile(`(?m)^SLO .*$`).FindString(out)
	if !strings.Contains(line, "NOT JUDGED (exit 1)") || strings.Contains(line, " OK") {
		t.Fatalf("report's SLO line %q for a failed run (exit 1):\n%s", line, out)
	}
	r := readReport(t, js)
	if r.ExitCode != ExitRunError || strings.HasPrefix(r.Verdict, "OK") || !r.Partial {
		t.Fatalf("JSON exit_code %d verdict %q partial %v", r.ExitCode, r.Verdict, r.Partial)
	}
	if !strings.Contains(errs, "loadtest: no connection was held") || strings.Contains(errs, "loadtest: loadtest:") {
		t.Fatalf("stderr should name the error once with one prefix:\n%s", errs)
	}
	t.Logf("SLO line: %s", line)
}

// TestDecide: the verdict and the exit code come from one place.
func TestDecide(t *testing.T) {
	runErr := errors.New("boom")
	for _, tc := range []struct {
		name   string
		sloOK  bool
		err    error
		code   int
		prefix string
	}{
		{"held", true, nil, ExitOK, "OK (exit 0)"},
		{"failed", true, runErr, ExitRunError, "NOT JUDGED (exit 1): the run failed: boom"},
		{"breached", false, nil, ExitSLOBreach, "BREACHED (exit 3): p99"},
		{"breached and failed", false, runErr, ExitSLOBreach, "BREACHED (exit 3): p99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Report{SLO: SLOResult{OK: tc.sloOK}}
			if !tc.sloOK {
				r.SLO.Breaches = []string{"p99 2ms > 1µs"}
			}
			r.decide(tc.err)
			if r.ExitCode != tc.code || !strings.HasPrefix(r.Verdict, tc.prefix) {
				t.Errorf("exit %d verdict %q, want %d %q…", r.ExitCode, r.Verdict, tc.code, tc.prefix)
			}
		})
	}
}

// TestUsageHasExamples: -help shows the common SRE runs, each parseable.
func TestUsageHasExamples(t *testing.T) {
	code, _, errs := runInProcess(t, "-help")
	if code != ExitUsage {
		t.Fatalf("-help exit %d", code)
	}
	for _, want := range []string{"ramp and hold", "broadcast storm", "reconnect storm", "-target value"} {
		if !strings.Contains(errs, want) {
			t.Errorf("-help lacks %q:\n%s", want, errs)
		}
	}
	// Every example command line parses and validates.
	cmds := regexp.MustCompile(`(?m)^  loadtest ((?:.*\\\n)*.*)$`).FindAllStringSubmatch(usageHead, -1)
	if len(cmds) != 6 {
		t.Fatalf("found %d example command lines in the usage text, want 6", len(cmds))
	}
	for _, cmd := range cmds {
		args := strings.Fields(strings.ReplaceAll(cmd[1], "\\\n", " "))
		if args[0] == "merge" { // would read Redis; merge's flags: TestShardedVerdictMatchesSingle
			continue
		}
		if _, err := parseOptions(args, &strings.Builder{}); err != nil {
			t.Errorf("example %q: %v", args, err)
		}
	}
}
