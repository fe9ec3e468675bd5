package deploy

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// rulesFile is the real rule file; promtool and the live test load it.
const rulesFile = "prometheus/pushd-rules.yml"

// tool returns the path of a binary scripts/test.sh installs, or fails.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (%v): run scripts/test.sh install (apt-get install prometheus prometheus-redis-exporter)", name, err)
	}
	return p
}

func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(tool(t, "promtool"), "check", "rules", rulesFile).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("promtool check rules: %v", err)
	}
}

// TestPromtoolTestRules runs the unit tests and checks there is one for
// every alert of the rule file.
func TestPromtoolTestRules(t *testing.T) {
	out, err := exec.Command(tool(t, "promtool"), "test", "rules", "prometheus/pushd-rules.test.yml").CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("promtool test rules: %v", err)
	}
	tests, err := os.ReadFile("prometheus/pushd-rules.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	tested := map[string]bool{}
	for _, m := range regexp.MustCompile(`alertname: (\w+)`).FindAllStringSubmatch(string(tests), -1) {
		tested[m[1]] = true
	}
	alerts := alertNames(t)
	for _, a := range alerts {
		if !tested[a] {
			t.Errorf("alert %s has no promtool unit test", a)
		}
	}
	readme, err := os.ReadFile("prometheus/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		if !strings.Contains(string(readme), "### "+a+"\n") {
			t.Errorf("alert %s has no runbook section (### %s) in prometheus/README.md", a, a)
		}
	}
}

func alertNames(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\w+)$`).FindAllStringSubmatch(string(b), -1) {
		names = append(names, m[1])
	}
	if len(names) < 9 {
		t.Fatalf("found %d alerts in %s, want at least 9", len(names), rulesFile)
	}
	return names
}

// metricRef finds the metric names a rule or a panel uses: pushd's own,
// and the Go and process collectors' ones.
var metricRef = regexp.MustCompile(`\b(?:pushd|process|go)_[a-z0-9_]+\b`)

// TestMetricNamesExist checks that every metric name the rules and the
// dashboard use is on the real binary's /metrics, so a rename fails here.
func TestMetricNamesExist(t *testing.T) {
	bin := buildPushd(t)
	// With Redis: some metrics exist only on the Redis broker.
	rs := redistest.Start(t, redistest.Options{})
	p := pushdtest.Start(t, bin, pushdtest.Options{Args: []string{"-demo=false", "-redis", "redis://" + rs.Addr + "/0"}})
	have := scrapeNames(t, p.AdminURL("/metrics"))
	used := usedMetricNames(t)
	if len(used) < 25 {
		t.Fatalf("found only %d metric names in the rules and the dashboard: the extraction is broken", len(used))
	}
	for _, n := range used {
		if !have[n] {
			t.Errorf("metric %s is used by a rule or a panel but pushd does not export it", n)
		}
	}
	t.Logf("%d metric names used, all exported (pushd exports %d)", len(used), len(have))
}

func usedMetricNames(t *testing.T) []string {
	t.Helper()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	text := string(rules)
	for _, p := range Panels() {
		for _, q := range p.Queries {
			text += "\n" + q.Expr
		}
	}
	set := map[string]bool{}
	for _, n := range metricRef.FindAllString(text, -1) {
		set[n] = true
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// scrapeNames reads the metric names (histograms' _bucket, _sum and
// _count series included) from a /metrics page.
func scrapeNames(t *testing.T, u string) map[string]bool {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) < 50 {
		t.Fatalf("only %d metric names on %s", len(names), u)
	}
	return names
}

var buildOnce struct {
	sync.Once
	dir string
	bin string
	err error
}

// buildPushd compiles cmd/pushd in the server module (the parent folder),
// with the server's own go.mod, once per test binary.
func buildPushd(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildOnce.dir, buildOnce.err = os.MkdirTemp("", "pushd-deploy-")
		if buildOnce.err != nil {
			return
		}
		buildOnce.bin = filepath.Join(buildOnce.dir, "pushd")
		cmd := exec.Command("go", "build", "-o", buildOnce.bin, "./cmd/pushd")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("go build ./cmd/pushd: %w\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildOnce.dir != "" {
		os.RemoveAll(buildOnce.dir)
	}
	os.Exit(code)
}

// lockedWriter serializes a child process's stdout and stderr into one
// builder.
type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() > 1<<20 {
		return len(p), nil // bounded: keep the first MiB
	}
	return w.b.Write(p)
}
