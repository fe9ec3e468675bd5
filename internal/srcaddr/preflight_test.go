package srcaddr

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeProc writes a minimal /proc tree with the given values.
func fakeProc(t *testing.T, nrOpen, fileMax, fileNr, portRange string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"sys/fs/nr_open":                   nrOpen,
		"sys/fs/file-max":                  fileMax,
		"sys/fs/file-nr":                   fileNr,
		"sys/net/ipv4/ip_local_port_range": portRange,
	}
	for name, v := range files {
		if v == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPreflight(t *testing.T) {
	type proc struct{ nrOpen, fileMax, fileNr, ports string }
	okProc := proc{"1048576", "2466170", "1000\t0\t2466170", "32768\t60999"}
	tests := []struct {
		name   string
		proc   proc
		lim    Rlimit
		plan   Plan
		want   []string // "severity check" in order; nil means no problems
		fixHas string   // substring of the first problem's Fix
		detHas string   // substring of the first problem's Detail
	}{
		{name: "fits", proc: okProc, lim: Rlimit{20000, 20000},
			plan: Plan{Conns: 19000, Sources: 254, Destinations: 1, LocalServer: true}},
		{name: "soft below hard", proc: okProc, lim: Rlimit{1024, 20000},
			plan: Plan{Conns: 19000, Sources: 254, Destinations: 1},
			want: []string{"fail RLIMIT_NOFILE"}, fixHas: "ulimit -n 20000", detHas: "soft limit 1024 < 19064"},
		{name: "hard too low", proc: okProc, lim: Rlimit{20000, 20000},
			plan: Plan{Conns: 50000, Sources: 254, Destinations: 1},
			want: []string{"fail RLIMIT_NOFILE"}, fixHas: "prlimit --pid 42 --nofile=50064:50064", detHas: "hard limit 20000 < 50064"},
		{name: "nr_open", proc: proc{"20000", "2466170", "1000 0 1", "32768 60999"}, lim: Rlimit{1 << 20, 1 << 20},
			plan: Plan{Conns: 50000, Sources: 254, Destinations: 1},
			want: []string{"fail fs.nr_open"}, fixHas: "sysctl -w fs.nr_open=50064"},
		{name: "file-max local doubles", proc: proc{"1048576", "30000", "1000 0 30000", "32768 60999"}, lim: Rlimit{20000, 20000},
			plan: Plan{Conns: 19000, Sources: 254, Destinations: 1, LocalServer: true},
			want: []string{"fail fs.file-max"}, fixHas: "sysctl -w fs.file-max=78128", detHas: "2 per connection"},
		{name: "file-max remote fits", proc: proc{"1048576", "30000", "1000 0 30000", "32768 60999"}, lim: Rlimit{20000, 20000},
			plan: Plan{Conns: 19000, Sources: 254, Destinations: 1}},
		{name: "ports one source", proc: proc{"1048576", "2466170", "0 0 1", "50000 59999"}, lim: Rlimit{20000, 20000},
			plan: Plan{Conns: 19000, Sources: 1, Destinations: 1},
			want: []string{"fail net.ipv4.ip_local_port_range"}, fixHas: "at least 2 source addresses", detHas: "need 19000 per pair"},
		{name: "ports crowded", proc: proc{"1048576", "2466170", "0 0 1", "50000 59999"}, lim: Rlimit{20000, 20000},
			plan: Plan{Conns: 19000, Sources: 2, Destinations: 1},
			want: []string{"warn net.ipv4.ip_local_port_range"}, detHas: "9500 of 10000 ports"},
		{name: "ports two destinations", proc: proc{"1048576", "2466170", "0 0 1", "50000 59999"}, lim: Rlimit{20000, 20000},
			plan: Plan{Conns: 19000, Sources: 2, Destinations: 2}},
		{name: "missing proc files", proc: proc{}, lim: Rlimit{20000, 20000},
			plan: Plan{Conns: 10, Sources: 1, Destinations: 1},
			want: []string{"warn fs.nr_open", "warn fs.file-max", "warn net.ipv4.ip_local_port_range"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := Host{
				ProcDir: fakeProc(t, tc.proc.nrOpen, tc.proc.fileMax, tc.proc.fileNr, tc.proc.ports),
				Nofile:  func() (Rlimit, error) { return tc.lim, nil },
				Pid:     42,
			}
			probs := h.Preflight(tc.plan)
			var got []string
			for _, p := range probs {
				got = append(got, p.Severity.String()+" "+p.Check)
			}
			if strings.Join(got, ";") != strings.Join(tc.want, ";") {
				t.Fatalf("problems = %q, want %q\n%v", got, tc.want, probs)
			}
			if len(probs) == 0 {
				return
			}
			if !strings.Contains(probs[0].Fix, tc.fixHas) || !strings.Contains(probs[0].Detail, tc.detHas) {
				t.Fatalf("problem = %s\nwant fix containing %q and detail containing %q", probs[0], tc.fixHas, tc.detHas)
			}
		})
	}
}

// TestPreflightThisHost runs the real checks against /proc for a plan every
// CI host can carry.
func TestPreflightThisHost(t *testing.T) {
	for _, p := range Preflight(Plan{Conns: 100, Sources: 1, Destinations: 1, LocalServer: true}) {
		if p.Severity == Fail {
			t.Errorf("%s", p)
		}
	}
}
