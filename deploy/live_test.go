package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

// liveFor is the `for:` window PushdBrokerDown gets in the live test
// (the rule file's 1m would make the test slow); the promtool unit test
// covers the real window.
const liveFor = "4s"

// prom is a real Prometheus process scraping pushd and Redis.
type prom struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
	out  *strings.Builder
}

// freePort picks a free loopback port for a process that cannot listen
// on :0 and report the port back.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// liveRules copies the real rule file with PushdBrokerDown's `for:` set to
// liveFor, and fails if the rewrite did not happen.
func liveRules(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(- alert: PushdBrokerDown\n\s+expr: [^\n]+\n\s+for: )\S+`)
	if !re.Match(b) {
		t.Fatal("PushdBrokerDown's for: not found in the rule file")
	}
	b = re.ReplaceAll(b, []byte("${1}"+liveFor))
	p := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startProm runs prometheus with 1 s scrape and evaluation intervals over
// the given jobs (name -> host:port).
func startProm(t *testing.T, jobs map[string]string) *prom {
	t.Helper()
	bin := tool(t, "prometheus")
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: [%q]\nscrape_configs:\n", liveRules(t, dir))
	for name, target := range jobs {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs: [{targets: [%q]}]\n", name, target)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool(t, "promtool"), "check", "config", cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	for attempt := 0; attempt < 3; attempt++ {
		p := &prom{addr: "127.0.0.1:" + strconv.Itoa(freePort(t)), done: make(chan struct{}), out: &strings.Builder{}}
		p.cmd = exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+p.addr, "--log.level=warn")
		p.cmd.Stdout, p.cmd.Stderr = &lockedWriter{b: p.out}, &lockedWriter{b: p.out}
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = p.cmd.Wait(); close(p.done) }()
		if p.waitReady(30 * time.Second) {
			t.Cleanup(func() {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-p.done:
				case <-time.After(10 * time.Second):
					_ = p.cmd.Process.Kill()
					<-p.done
				}
			})
			return p
		}
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Logf("prometheus on %s did not start: %s", p.addr, p.out)
	}
	t.Fatal("prometheus did not start")
	return nil
}

func (p *prom) waitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return false
		default:
		}
		resp, err := http.Get("http://" + p.addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// sample is one series of an instant query's vector result.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) float() float64 {
	str, _ := s.Value[1].(string)
	f, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// query runs an instant PromQL query.
func (p *prom) query(t *testing.T, q string) ([]sample, error) {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string   `json:"resultType"`
			Result     []sample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %q: %w: %s", q, err, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s", q, r.Data.ResultType)
	}
	return r.Data.Result, nil
}

// waitFor polls cond every 250 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	last := ""
	for time.Since(start) < d {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		last = state
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v (last: %s)", what, d, last)
	return 0
}

// alertState is the state of the named alert in Prometheus: "" (none),
// "pending" or "firing".
func (p *prom) alertState(t *testing.T, name string) string {
	t.Helper()
	res, err := p.query(t, fmt.Sprintf(`ALERTS{alertname=%q}`, name))
	if err != nil {
		t.Fatal(err)
	}
	state := ""
	for _, s := range res {
		if s.Metric["alertstate"] == "firing" || state == "" {
			state = s.Metric["alertstate"]
		}
	}
	return state
}

// TestLivePrometheus runs a real pushd on a real redis-server, scraped
// (with Redis through redis_exporter) by a real Prometheus that loads the
// real rule file. Under a small load every dashboard query returns data;
// then redis-server is killed (SIGKILL) and PushdBrokerDown must fire, and
// with Redis started again on the same port it must resolve.
func TestLivePrometheus(t *testing.T) {
	bin := buildPushd(t)
	rs := redistest.Start(t, redistest.Options{})
	p := pushdtest.Start(t, bin, pushdtest.Options{Args: []string{"-demo=false", "-redis", "redis://" + rs.Addr + "/0"}})
	exporter := startRedisExporter(t, rs.Addr)
	pr := startProm(t, map[string]string{"pushd": p.AdminAddr, "redis": exporter})

	waitFor(t, 60*time.Second, "both targets up", func() (bool, string) {
		res, err := pr.query(t, `up == 1`)
		if err != nil {
			return false, err.Error()
		}
		return len(res) == 2, fmt.Sprintf("%d targets up", len(res))
	})
	if s := pr.alertState(t, "PushdBrokerDown"); s != "" {
		t.Fatalf("PushdBrokerDown is %s before Redis was touched", s)
	}

	t.Run("dashboard", func(t *testing.T) { checkDashboardLive(t, pr, p) })
	t.Run("redis_killed", func(t *testing.T) { checkBrokerAlert(t, pr, rs) })
}

// checkBrokerAlert kills redis-server, waits for PushdBrokerDown to fire,
// starts Redis again and waits for the alert to resolve.
func checkBrokerAlert(t *testing.T, pr *prom, rs *redistest.Server) {
	info := rs.MustDo(t, "INFO", "server")
	m := regexp.MustCompile(`process_id:(\d+)`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("no process_id in INFO server: %s", info)
	}
	pid, _ := strconv.Atoi(m[1])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("redis-server pid %d killed with SIGKILL", pid)
	sawPending := false
	took := waitFor(t, 90*time.Second, "PushdBrokerDown firing", func() (bool, string) {
		s := pr.alertState(t, "PushdBrokerDown")
		sawPending = sawPending || s == "pending"
		return s == "firing", "alert state " + strconv.Quote(s)
	})
	t.Logf("PushdBrokerDown fired %v after the kill (for: %s, pending seen: %v)", took, liveFor, sawPending)
	if res, err := pr.query(t, `redis_up{job="redis"} == 0 or absent(redis_up{job="redis"} == 1)`); err != nil || len(res) == 0 {
		t.Errorf("redis_exporter does not see Redis down: %v %v", res, err)
	}

	rs.Restart(t)
	took = waitFor(t, 90*time.Second, "PushdBrokerDown resolved", func() (bool, string) {
		s := pr.alertState(t, "PushdBrokerDown")
		return s == "", "alert state " + strconv.Quote(s)
	})
	t.Logf("PushdBrokerDown resolved %v after redis-server restarted", took)
}

// startRedisExporter runs Debian's prometheus-redis-exporter against the
// Redis at addr and returns its listen address.
func startRedisExporter(t *testing.T, addr string) string {
	t.Helper()
	bin := tool(t, "prometheus-redis-exporter")
	for attempt := 0; attempt < 3; attempt++ {
		listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, bin, "-redis.addr", "redis://"+addr, "-web.listen-address", listen)
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = &lockedWriter{b: out}, &lockedWriter{b: out}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop := func() { cancel(); <-done }
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := http.Get("http://" + listen + "/metrics")
			if err == nil {
				resp.Body.Close()
				t.Cleanup(stop)
				return listen
			}
			select {
			case <-done:
				deadline = time.Now()
			case <-time.After(200 * time.Millisecond):
			}
		}
		stop()
		t.Logf("redis exporter on %s did not start: %s", listen, out)
	}
	t.Fatal("prometheus-redis-exporter did not start")
	return ""
}

// checkDashboardLive puts a small load on pushd (WebSocket subscribers on
// a few channels, publications through POST /publish, a short-lived
// client every half second) and checks that every panel query returns at
// least one series with a number, above zero where the panel table says
// the query is Busy under load.
func checkDashboardLive(t *testing.T, pr *prom, p *pushdtest.Proc) {
	const conns, channels = 20, 4
	var clients []*websocket.Conn
	for i := 0; i < conns; i++ {
		c, _, err := websocket.DefaultDialer.Dial(p.URL(fmt.Sprintf("/ws?ch=load:%d", i%channels)), nil)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		clients = append(clients, c)
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	// A few handshakes that fail, so the failure series move too.
	for i := 0; i < 3; i++ {
		if c, err := net.Dial("tcp", p.WSAddr); err == nil {
			fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}
	stop := make(chan struct{})
	published := make(chan int)
	go func() {
		n, ticks := 0, 0
		defer func() { published <- n }()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				ticks++
				if ticks%10 == 0 { // a short-lived client keeps the connect and handshake series moving
					if c, _, err := websocket.DefaultDialer.Dial(p.URL("/ws?ch=churn"), nil); err == nil {
						c.Close()
					}
				}
				resp, err := http.Post(p.AdminURL(fmt.Sprintf("/publish?ch=load:%d", n%channels)), "application/json", strings.NewReader(`{"n":`+strconv.Itoa(n)+`}`))
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode/100 == 2 {
						n++
					}
				}
			}
		}
	}()
	defer func() { close(stop); t.Logf("published %d", <-published) }()

	const rateInterval = "20s"
	substitute := strings.NewReplacer(`$job`, "pushd", `$__rate_interval`, rateInterval)
	for _, panel := range Panels() {
		for _, q := range panel.Queries {
			expr := substitute.Replace(q.Expr)
			took := waitFor(t, 60*time.Second, fmt.Sprintf("panel %q query %s", panel.Title, expr), func() (bool, string) {
				res, err := pr.query(t, expr)
				if err != nil {
					return false, err.Error()
				}
				for _, s := range res {
					v := s.float()
					if !math.IsNaN(v) && (!q.Busy || v > 0) {
						return true, ""
					}
				}
				if q.Busy {
					return false, fmt.Sprintf("%d series, none above zero", len(res))
				}
				return false, fmt.Sprintf("%d series, none with a number", len(res))
			})
			t.Logf("panel %q: %s has data, busy=%v (waited %v)", panel.Title, q.Legend, q.Busy, took.Round(time.Millisecond))
		}
	}
	res, err := pr.query(t, `sum(pushd_connections{job="pushd"})`)
	if err != nil || len(res) != 1 || res[0].float() < conns {
		t.Errorf("Prometheus sees %v connections (%v), want at least %d", res, err, conns)
	}
}
