package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// machineInfo describes the host a peers run measured on.
type machineInfo struct {
	CPU       string            `json:"cpu"`
	Cores     int               `json:"cores"`
	MemGiB    float64           `json:"mem_gib"`
	Kernel    string            `json:"kernel"`
	Go        string            `json:"go"`
	Node      string            `json:"node"`
	Commit    string            `json:"commit"`
	Libraries map[string]string `json:"libraries"` // module or npm package → version
	UTC       string            `json:"utc"`
	Pushd     string            `json:"pushd"` // where the pushd binary came from
}

// describeMachine reads /proc, the toolchain versions, the commit and the
// peers' locked library versions (bench/peers/go.mod, ws-node's lock).
func describeMachine(ctx context.Context, peersRoot string) machineInfo {
	m := machineInfo{Cores: runtime.NumCPU(), Go: runtime.Version(), Libraries: map[string]string{},
		UTC: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if v, err := meminfo("MemTotal:"); err == nil {
		m.MemGiB = float64(v) / (1 << 30)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := exec.CommandContext(ctx, "node", "--version").Output(); err == nil {
		m.Node = strings.TrimSpace(string(b))
	}
	if b, err := exec.CommandContext(ctx, "git", "-C", peersRoot, "describe", "--always", "--dirty").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(b))
	}
	for mod, v := range lockedVersions(peersRoot) {
		m.Libraries[mod] = v
	}
	return m
}

// lockedVersions returns the versions of the libraries the peers are
// built with: the peers' go.mod requirements and ws in the npm lock.
func lockedVersions(peersRoot string) map[string]string {
	want := []string{"github.com/gorilla/websocket", "github.com/gobwas/ws", "github.com/lesismal/nbio", "github.com/centrifugal/centrifuge"}
	out := map[string]string{}
	if f, err := os.Open(filepath.Join(peersRoot, "go.mod")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) >= 2 && slices.Contains(want, fl[0]) {
				out[fl[0]] = fl[1]
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile(filepath.Join(peersRoot, "ws-node", "package-lock.json")); err == nil {
		s := string(b)
		if i := strings.Index(s, `"node_modules/ws": {`); i >= 0 {
			rest := s[i:]
			if j := strings.Index(rest, `"version": "`); j >= 0 {
				v := rest[j+len(`"version": "`):]
				if k := strings.IndexByte(v, '"'); k >= 0 {
					out["npm ws"] = v[:k]
				}
			}
		}
	}
	return out
}

// peerColumn is one metric of the table: how to format it and which way
// is better.
type peerColumn struct {
	title  string
	value  func(peerResult) (float64, bool) // false: not applicable
	format string
	lower  bool // lower is better
}

func peerColumns() []peerColumn {
	lat := func(get func(*latencyResult) int64) func(peerResult) (float64, bool) {
		return func(r peerResult) (float64, bool) {
			if r.Latency == nil || r.Latency.Messages == 0 {
				return 0, false
			}
			return float64(get(r.Latency)) / 1000, true
		}
	}
	return []peerColumn{
		{"bytes/idle conn (RSS slope)", func(r peerResult) (float64, bool) { return r.BytesPerConn, len(r.Plateaus) > 1 }, "%.0f", true},
		{"goroutines @top", func(r peerResult) (float64, bool) {
			return float64(r.Goroutines), r.Goroutines >= 0 && len(r.Plateaus) > 0
		}, "%.0f", true},
		{"threads @top", func(r peerResult) (float64, bool) { return float64(r.Threads), r.Threads > 0 }, "%.0f", true},
		{"deliveries/s", func(r peerResult) (float64, bool) { return r.Deliveries, r.Deliveries > 0 }, "%.0f", false},
		{"÷ raw write()", func(r peerResult) (float64, bool) { return r.Ratio, r.Ratio > 0 }, "%.3f", false},
		{"p50 ms", lat(func(l *latencyResult) int64 { return l.P50Us }), "%.2f", true},
		{"p99 ms", lat(func(l *latencyResult) int64 { return l.P99Us }), "%.2f", true},
		{"CPU s / 1M deliveries", func(r peerResult) (float64, bool) { return r.CPUPerMillion, r.Deliveries > 0 }, "%.2f", true},
		{"conns/s (ramp)", func(r peerResult) (float64, bool) { return r.ConnsPerSec, r.ConnsPerSec > 0 }, "%.0f", false},
	}
}

// leaders returns, per column, the names of the servers with the best
// value as printed (a tie at the table's precision is a shared lead; none
// when no row has the value).
func leaders(rows []peerResult, cols []peerColumn) [][]string {
	out := make([][]string, len(cols))
	for i, c := range cols {
		found, bestV := false, 0.0
		for _, r := range rows {
			v, ok := c.value(r)
			if !ok || r.Error != "" {
				continue
			}
			if !found || (c.lower && v < bestV) || (!c.lower && v > bestV) {
				found, bestV = true, v
			}
		}
		if !found {
			continue
		}
		best := fmt.Sprintf(c.format, bestV)
		for _, r := range rows {
			if v, ok := c.value(r); ok && r.Error == "" && fmt.Sprintf(c.format, v) == best {
				out[i] = append(out[i], r.Name)
			}
		}
	}
	return out
}

// pushdLeads reports whether a pushd row is among names.
func pushdLeads(names []string) bool {
	return slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "pushd") })
}

// peerTableRows renders the comparison: a header, then one row per server
// (the leader of each column marked with *), then the raw loop.
func peerTableRows(res *peersResult) [][]string {
	cols := peerColumns()
	lead := leaders(res.Peers, cols)
	head := []string{"server"}
	for _, c := range cols {
		head = append(head, c.title)
	}
	rows := [][]string{head}
	for _, r := range res.Peers {
		row := []string{r.Name}
		for i, c := range cols {
			v, ok := c.value(r)
			cell := "–"
			if ok {
				cell = fmt.Sprintf(c.format, v)
				if slices.Contains(lead[i], r.Name) {
					cell += " *"
				}
			}
			row = append(row, cell)
		}
		if r.Error != "" {
			row[0] += " (FAILED)"
		}
		rows = append(rows, row)
	}
	raw := []string{"raw write() loop"}
	for _, c := range cols {
		switch c.title {
		case "deliveries/s":
			raw = append(raw, fmt.Sprintf("%.0f", res.Raw.SingleStats.DeliveriesSec))
		case "÷ raw write()":
			raw = append(raw, "1 (reference)")
		default:
			raw = append(raw, "")
		}
	}
	return append(rows, raw)
}

// peersText is the console summary.
func peersText(res *peersResult) string {
	s := table(peerTableRows(res))
	for _, r := range res.Peers {
		if r.Error != "" {
			s += fmt.Sprintf("%s FAILED: %s\n", r.Name, r.Error)
		}
	}
	if behind := pushdBehind(res); len(behind) > 0 {
		s += "pushd does not lead: " + strings.Join(behind, "; ") + "\n"
	}
	return s
}

// behindColumns returns the titles of the columns a non-pushd server
// leads.
func behindColumns(res *peersResult) []string {
	var out []string
	cols := peerColumns()
	for i, l := range leaders(res.Peers, cols) {
		if len(l) > 0 && !pushdLeads(l) {
			out = append(out, cols[i].title)
		}
	}
	return out
}

// pushdBehind lists the columns a non-pushd server leads, with the best
// pushd value beside the leader's.
func pushdBehind(res *peersResult) []string {
	if !slices.ContainsFunc(res.Peers, func(r peerResult) bool { return strings.HasPrefix(r.Name, "pushd") && r.Error == "" }) {
		return nil
	}
	cols := peerColumns()
	lead := leaders(res.Peers, cols)
	var out []string
	for i, c := range cols {
		if len(lead[i]) == 0 || pushdLeads(lead[i]) {
			continue
		}
		var leader, best string
		for _, r := range res.Peers {
			v, ok := c.value(r)
			if !ok {
				continue
			}
			if r.Name == lead[i][0] {
				leader = fmt.Sprintf(c.format, v)
			}
			if strings.HasPrefix(r.Name, "pushd") && r.Error == "" {
				best += fmt.Sprintf(" %s "+c.format, r.Name, v)
			}
		}
		out = append(out, fmt.Sprintf("%s: %s %s vs%s", c.title, strings.Join(lead[i], ", "), leader, best))
	}
	return out
}

// markdownTable renders rows as a GitHub table.
func markdownTable(rows [][]string) string {
	var b strings.Builder
	for i, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
		if i == 0 {
			b.WriteString("|" + strings.Repeat(" --- |", len(r)) + "\n")
		}
	}
	return b.String()
}

// writePeersResults writes dir/<date>.md and the plots beside it and
// returns the paths.
func writePeersResults(dir, date string, res *peersResult, rep *report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("results dir: %w", err)
	}
	memPNG := filepath.Join(dir, date+"-memory.png")
	latPNG := filepath.Join(dir, date+"-latency.png")
	if err := plotMemory(res, memPNG); err != nil {
		return nil, err
	}
	if err := plotLatency(res, latPNG); err != nil {
		return nil, err
	}
	md := filepath.Join(dir, date+".md")
	if err := os.WriteFile(md, []byte(peersMarkdown(res, rep, filepath.Base(memPNG), filepath.Base(latPNG))), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", md, err)
	}
	// The whole result (every round, the latency distributions) beside
	// the table, for a later look.
	js := filepath.Join(dir, date+".json")
	out := *rep
	out.Results = res
	b, err := json.MarshalIndent(&out, "", "  ")
	if err == nil {
		err = os.WriteFile(js, b, 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", js, err)
	}
	return []string{md, memPNG, latPNG, js}, nil
}

// peersMarkdown is the results file.
func peersMarkdown(res *peersResult, rep *report, memPNG, latPNG string) string {
	var b strings.Builder
	m := res.Machine
	top := res.Plateaus[len(res.Plateaus)-1]
	fmt.Fprintf(&b, "# pushd and its peers, %s\n\n", m.UTC[:10])
	fmt.Fprintf(&b, "`%s` (commit %s, %s, %.0f s wall; pushd: %s).\n\n", strings.Replace(rep.Command, " peers -only ", " -peers ", 1), m.Commit, m.UTC, res.WallSecs, m.Pushd)
	fmt.Fprintf(&b, "Machine: %s, %d cores, %.1f GiB, Linux %s; %s; Node %s. Servers, the client process and the\n"+
		"publisher share the host (loopback only), one server at a time.\n\n", m.CPU, m.Cores, m.MemGiB, m.Kernel, m.Go, m.Node)
	if rep.Noisy {
		fmt.Fprintf(&b, "**Noisy run**: other processes kept %.1f threads runnable on average (load average %.2f at the start, "+
			"%.2f at the end); discount the timing columns.\n\n", rep.OthersRunnable, rep.LoadStart, rep.LoadEnd)
	}
	b.WriteString(markdownTable(peerTableRows(res)))
	b.WriteString("\n`*` marks the best value of each column.\n\n")
	b.WriteString("| server | what runs | bytes on the wire per publication |\n| --- | --- | --- |\n")
	for _, r := range res.Peers {
		fmt.Fprintf(&b, "| %s | %s | %d |\n", r.Name, r.About, len(r.Frame))
	}
	var libs []string
	for k, v := range m.Libraries {
		libs = append(libs, k+" "+v)
	}
	slices.Sort(libs)
	fmt.Fprintf(&b, "\nLibraries: %s.\n\n", strings.Join(libs, ", "))
	fmt.Fprintf(&b, "![memory vs connections](%s)\n\n![latency CDF](%s)\n\n", memPNG, latPNG)
	b.WriteString("## How each column is measured\n\n")
	fmt.Fprintf(&b, "- **bytes/idle conn**: RSS slope between %d and %d idle connections, all subscribed to one channel "+
		"(pushd: `/ws?ch=bench&format=raw`), after the server's count settled and a forced GC / FreeOSMemory "+
		"(Node: `global.gc()`). Kernel socket memory is not in RSS and not counted.\n", res.Plateaus[0], top)
	b.WriteString("- **goroutines / threads @top**: the server's `runtime.NumGoroutine()` (Go servers) and `Threads:` " +
		"of /proc/<pid>/status at the top plateau.\n")
	fmt.Fprintf(&b, "- **deliveries/s**: %d subscribers of one channel, one %d-byte publication (POST /publish); "+
		"%d subscribers ÷ (last subscriber's complete frame − the instant before the POST), median of the rounds; "+
		"the client is one process with every socket in one epoll loop, checking every byte. **÷ raw write()**: that "+
		"rate over a plain write(2) loop pushing the same frame to %d TCP sockets from one thread, measured at the start "+
		"and the end of this run (median of %d rounds: %.0f/s).\n",
		top, len(res.Payload), top, top, len(res.Raw.Single), res.Raw.SingleStats.DeliveriesSec)
	fmt.Fprintf(&b, "- **p50/p99**: %d connections, each on its own channel; %d publications/s round robin over those channels "+
		"for %.0f s by 8 concurrent HTTP publishers; payload `\"@<scheduled send time>\"`; latency = receipt − scheduled "+
		"time (a publisher that falls behind shows as latency), HDR histogram.\n", res.LatConns, res.LatRate, res.LatSecs)
	b.WriteString("- **CPU s / 1M deliveries**: the server's utime+stime (/proc/<pid>/stat) over the measured broadcast rounds " +
		"(HTTP publish included) ÷ deliveries × 10⁶.\n")
	fmt.Fprintf(&b, "- **conns/s (ramp)**: %d upgrades (and, for centrifuge, its connect command) ÷ the client's time to open "+
		"them, 64 at a time from many 127.0.x.y sources.\n\n", top)
	b.WriteString("Every server first passed a smoke check (subscribe, publish, receive) before it was measured; a row that " +
		"failed any check says FAILED.\n\n")
	if behind := pushdBehind(res); len(behind) > 0 {
		b.WriteString("## Where pushd does not lead\n\n")
		for _, s := range behind {
			b.WriteString("- " + s + "\n")
		}
		b.WriteString("\nThe pushd profiles behind those columns (taken after the measured windows, so the profiler's cost is in no number above):\n\n")
		var kinds []string
		for _, col := range behindColumns(res) {
			for _, k := range profileKinds(col) {
				if !slices.Contains(kinds, k) {
					kinds = append(kinds, k)
				}
			}
		}
		for _, k := range kinds {
			for _, r := range res.Peers {
				if prof := r.Profiles[k]; prof != "" {
					fmt.Fprintf(&b, "%s, %s\n```\n%s```\n\n", r.Name, firstLine(prof), restLines(prof))
				}
			}
		}
	}
	b.WriteString("## Run notes\n\n")
	for _, n := range rep.Notes {
		b.WriteString("- " + strings.ReplaceAll(n, "\n", " ") + "\n")
	}
	for _, r := range res.Peers {
		if r.Error != "" {
			fmt.Fprintf(&b, "- %s FAILED: %s\n", r.Name, strings.ReplaceAll(r.Error, "\n", " "))
		}
	}
	return b.String()
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func restLines(s string) string {
	_, r, _ := strings.Cut(s, "\n")
	return r
}
