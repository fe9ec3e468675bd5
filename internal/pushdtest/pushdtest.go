package pushdtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Stats mirrors the JSON document served by pushd's admin GET /stats.
type Stats struct {
	Conns             int64            `json:"conns"`
	Goroutines        int              `json:"goroutines"`
	RlimitNofile      uint64           `json:"rlimit_nofile"`
	MaxConns          int64            `json:"max_conns"`
	Accepted          uint64           `json:"accepted"`
	Upgraded          uint64           `json:"upgraded"`
	Refused           uint64           `json:"refused"`
	HandshakeFailures uint64           `json:"handshake_failures"`
	HandshakeTimeouts uint64           `json:"handshake_timeouts"`
	PongTimeouts      uint64           `json:"pong_timeouts"`
	Closed            map[string]int64 `json:"closed_by_code"`
	RSSBytes          uint64           `json:"rss_bytes"`
	HeapInuse         uint64           `json:"heap_inuse"`

	// Fan-out (pushd.v1 mode).
	Subscriptions    int64  `json:"subscriptions"`
	Channels         int64  `json:"channels"`
	Published        uint64 `json:"published"`
	Delivered        uint64 `json:"delivered"`
	SlowDisconnects  uint64 `json:"slow_disconnects"`
	Dropped          uint64 `json:"dropped"`
	GapNotices       uint64 `json:"gap_notices"`
	Conflated        uint64 `json:"conflated"`
	MailboxOverflows uint64 `json:"mailbox_overflows"`
	PublishRefused   uint64 `json:"publish_refused"`
	PoolFallbacks    uint64 `json:"pool_fallbacks"`
}

// BinEnv names the pushd binary that Main built for the whole test binary
// (or that a caller set before Main, to judge another binary).
const BinEnv = "PUSHDTEST_BIN"

// pushdPkg is the package Build and Main compile.
const pushdPkg = "github.com/pushd/pushd/cmd/pushd"

// Build returns the path of a pushd binary built from cmd/pushd: the one
// Main built for the whole test binary when the package's TestMain calls
// Main, else a fresh build into the test's temp dir. The Go build cache
// makes a fresh build cheap to compile, but it still links a new binary
// (1.5–3 s of CPU), once per call.
func Build(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(BinEnv); p != "" {
		return p
	}
	return BuildPackage(tb, pushdPkg, "pushd")
}

// Main is a TestMain body: it builds cmd/pushd once, into a temp dir
// removed when the tests end, so that every Build in this test binary
// returns that one binary (handed over through $PUSHDTEST_BIN; a path
// already set there is used as is), then runs the tests and returns
// m.Run's exit code. Nothing is built when no test runs (-run='^$', the
// benchmark smoke run). Use it as:
//
//	func TestMain(m *testing.M) { os.Exit(pushdtest.Main(m)) }
func Main(m *testing.M) int {
	flag.Parse()
	if os.Getenv(BinEnv) != "" || flag.Lookup("test.run").Value.String() == "^$" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "pushdtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushdtest:", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	bin := filepath.Join(dir, "pushd")
	if out, err := exec.Command("go", "build", "-o", bin, pushdPkg).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "pushdtest: go build %s: %v\n%s", pushdPkg, err, out)
		return 1
	}
	if err := os.Setenv(BinEnv, bin); err != nil {
		fmt.Fprintln(os.Stderr, "pushdtest:", err)
		return 1
	}
	return m.Run()
}

// BuildPackage compiles the main package pkg to a binary called name in a
// temp dir and returns its path.
func BuildPackage(tb testing.TB, pkg, name string) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = os.Environ()
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Options tune Start.
type Options struct {
	// Args are extra pushd flags. -listen and -admin-listen default to
	// 127.0.0.1:0 unless present here.
	Args []string
	// Wrapper is a command prefix, e.g. []string{"prlimit", "--nofile=256:256"}.
	Wrapper []string
	// StartTimeout bounds the wait for the listening lines (default 15 s).
	StartTimeout time.Duration
}

// Errors of Launch; wrapped with the process output.
var (
	// ErrExited means the process exited before logging its listeners.
	ErrExited = errors.New("pushdtest: process exited before listening")
	// ErrStartTimeout means the listeners were not logged in time.
	ErrStartTimeout = errors.New("pushdtest: timed out waiting for listeners")
)

// Proc is a running pushd process (or any server that logs the same
// "listening" lines, such as bench's reference servers).
type Proc struct {
	Cmd       *exec.Cmd
	WSAddr    string // host:port of the WebSocket listener
	AdminAddr string // host:port of the admin listener

	mu    sync.Mutex
	lines []string // output, the last maxLines lines
	done  chan struct{}
	err   error
}

// maxLines bounds the output a Proc keeps.
const maxLines = 10000

// Start runs the pushd binary at bin and waits until both listeners are up.
// The process is stopped (SIGTERM, then SIGKILL after 5 s) when tb ends.
func Start(tb testing.TB, bin string, o Options) *Proc {
	tb.Helper()
	args := append([]string(nil), o.Args...)
	if !hasFlag(args, "log-format") {
		args = append(args, "-log-format", "json")
	}
	argv := append(append([]string(nil), o.Wrapper...), bin)
	argv = append(argv, args...)
	timeout := o.StartTimeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	p, err := Launch(context.Background(), argv, timeout)
	if err != nil {
		tb.Fatalf("start %v: %v", argv, err)
	}
	tb.Cleanup(func() { p.Stop(tb) })
	return p
}

// Launch runs argv, adding -listen and -admin-listen on 127.0.0.1:0 unless
// present, and waits until both listening lines were logged. It is not
// tied to a test: bench uses it for pushd and its reference servers. The
// child gets SIGKILL if this process dies; stop it with Shutdown.
func Launch(ctx context.Context, argv []string, timeout time.Duration) (*Proc, error) {
	argv = append([]string(nil), argv...)
	if !hasFlag(argv[1:], "listen") {
		argv = append(argv, "-listen", "127.0.0.1:0")
	}
	if !hasFlag(argv[1:], "admin-listen") {
		argv = append(argv, "-admin-listen", "127.0.0.1:0")
	}
	p := &Proc{Cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	p.Cmd.Stderr = pw
	p.Cmd.Stdout = pw
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	addrs := make(chan [2]string, 1)
	go p.scan(pr, addrs)
	go func() {
		p.err = p.Cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-addrs:
		p.WSAddr, p.AdminAddr = a[0], a[1]
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%w: %v\n%s", ErrExited, p.err, p.Tail(40))
	case <-t.C:
		p.Shutdown()
		return nil, fmt.Errorf("%w (%v)\n%s", ErrStartTimeout, timeout, p.Tail(40))
	case <-ctx.Done():
		p.Shutdown()
		return nil, ctx.Err()
	}
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// scan keeps the process output and reports the two listening addresses
// once both are logged.
func (p *Proc) scan(r io.Reader, addrs chan<- [2]string) {
	var ws, admin string
	sent := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.lines = append(p.lines, line)
		if len(p.lines) > maxLines {
			p.lines = p.lines[len(p.lines)-maxLines:]
		}
		p.mu.Unlock()
		if sent {
			continue
		}
		var rec struct {
			Msg  string `json:"msg"`
			Kind string `json:"kind"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "listening" {
			continue
		}
		switch rec.Kind {
		case "ws":
			ws = rec.Addr
		case "admin":
			admin = rec.Addr
		}
		if ws != "" && admin != "" {
			addrs <- [2]string{ws, admin}
			sent = true
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// Tail returns the last n lines the process printed.
func (p *Proc) Tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lines
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Log returns what the process printed (its last 10,000 lines).
func (p *Proc) Log() string { return p.Tail(maxLines) }

// URL returns the ws:// URL of path on the WebSocket listener.
func (p *Proc) URL(path string) string { return "ws://" + p.WSAddr + path }

// AdminURL returns the http:// URL of path on the admin listener.
func (p *Proc) AdminURL(path string) string { return "http://" + p.AdminAddr + path }

// Pid returns the process id of pushd (of the wrapper when one is used;
// prlimit execs pushd, so the pid is the same).
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Stats fetches and decodes GET /stats.
func (p *Proc) Stats(tb testing.TB) Stats {
	tb.Helper()
	s, err := p.FetchStats(context.Background())
	if err != nil {
		tb.Fatalf("stats: %v", err)
	}
	return s
}

// FetchStats is Stats without the test helper, for bench programs.
func (p *Proc) FetchStats(ctx context.Context) (Stats, error) {
	return FetchStats(ctx, p.AdminAddr)
}

// FetchStats fetches GET /stats from the admin listener at addr.
func FetchStats(ctx context.Context, addr string) (Stats, error) {
	var s Stats
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stats", nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("GET /stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /stats: status %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("decode /stats: %w", err)
	}
	return s, nil
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop is Shutdown for tests: it logs when the process had to be killed.
func (p *Proc) Stop(tb testing.TB) {
	if p.Shutdown() {
		tb.Logf("pushd did not stop within 5 s of SIGTERM; killed")
	}
}

// Shutdown sends SIGTERM and waits up to 5 s before SIGKILL. It reports
// whether the kill was needed, and is idempotent.
func (p *Proc) Shutdown() (killed bool) {
	if p.Exited() {
		return false
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		return false
	case <-t.C:
		_ = p.Cmd.Process.Kill()
		<-p.done
		return true
	}
}
