package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// scenario is one entry of the scenario table.
type scenario struct {
	name    string
	about   string        // what it measures and the invariants it checks
	timeout time.Duration // default bound on the whole scenario
	// setup registers the scenario's flags and returns its body.
	setup func(fs *flag.FlagSet) func(ctx context.Context, h *harness) (*report, error)
}

// scenarios is the scenario table. Later issues add entries here.
func scenarios() []scenario {
	return []scenario{idleScenario(), idleSSEScenario(), slowScenario(), fanoutScenario(), slowConsumersScenario(), peersScenario(), ingestScenario()}
}

// report is a scenario's outcome: printed as text, or as JSON with -json.
type report struct {
	Scenario string   `json:"scenario"`
	Command  string   `json:"command"`
	Pass     bool     `json:"pass"`
	Failures []string `json:"failures,omitempty"`
	Notes    []string `json:"notes,omitempty"`
	Seconds  float64  `json:"seconds"`
	// LoadStart and LoadEnd are the host's 1-minute load average before
	// and after the run (the end figure includes the run's own
	// processes); OthersRunnable is the mean count of other processes'
	// runnable threads during the run. Noisy is set when LoadStart or
	// OthersRunnable exceeds noisyLoad.
	LoadStart      float64 `json:"load_start"`
	LoadEnd        float64 `json:"load_end"`
	OthersRunnable float64 `json:"others_runnable_mean"`
	Noisy          bool    `json:"noisy"`
	Results        any     `json:"results"`
	text           string  // human summary (tables)
	// after, if set, runs once the report is complete (notes, noise,
	// timing) and before it is printed, e.g. to write result files.
	after func(*report) error
}

func (r *report) failf(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

func (r *report) notef(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// harness is what a scenario body gets: output, the servers to measure, and
// a way to start client processes.
type harness struct {
	stdout, stderr io.Writer
	exe            string // this binary, re-executed for -client and -refserver
	pushdBin       string
	servers        []string // which servers to measure: "pushd", "ref"
	profileDir     string
	tmp            string
}

// logf prints progress on stderr.
func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.stderr, "bench: "+format+"\n", args...)
}

// specs returns the servers to measure, in -servers order: pushd with
// pushdArgs and/or the reference server.
func (h *harness) specs(pushdArgs []string) []serverSpec {
	var s []serverSpec
	for _, name := range h.servers {
		switch name {
		case "pushd":
			s = append(s, serverSpec{name: "pushd", argv: append([]string{h.pushdBin}, pushdArgs...)})
		case "pushd-lean", "pushd-netpoll":
			// The same binary on one event-loop backend (-poller).
			argv := append([]string{h.pushdBin, "-poller", strings.TrimPrefix(name, "pushd-")}, pushdArgs...)
			s = append(s, serverSpec{name: name, argv: argv})
		case wssServer:
			wss, err := wssArgs(h.tmp)
			if err != nil {
				h.logf("%s: %v", name, err)
				continue
			}
			argv := append(append([]string{h.pushdBin}, wss...), pushdArgs...)
			s = append(s, serverSpec{name: name, argv: argv, wss: true})
		case "ref":
			s = append(s, serverSpec{name: "ref", argv: []string{h.exe, "-refserver"}})
		}
	}
	return s
}

// parseServers validates the -servers list.
func parseServers(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		switch f = strings.TrimSpace(f); f {
		case "pushd", "pushd-lean", "pushd-netpoll", wssServer, "ref":
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		case "":
		default:
			return nil, fmt.Errorf("%w: unknown server %q in -servers (pushd, pushd-lean, pushd-netpoll, pushd-wss, ref)", ErrUsage, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: -servers is empty", ErrUsage)
	}
	return out, nil
}

// find returns the index of the result of server name, or -1.
func find[T any](results []T, name string, server func(T) string) int {
	return slices.IndexFunc(results, func(r T) bool { return server(r) == name })
}

func runScenarios(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	list := fs.Bool("list", false, "list scenarios with their flags and exit")
	asJSON := fs.Bool("json", false, "print the report as JSON on stdout (the text summary goes to stderr)")
	servers := fs.String("servers", "pushd,ref", "servers to measure, in order: pushd, ref (net/http + gorilla, goroutine per connection)")
	pushdBin := fs.String("pushd-bin", "", "use this pushd binary instead of building cmd/pushd")
	profileDir := fs.String("profile-dir", "", "save pushd pprof profiles here (default: a temp dir, kept only on failure)")
	timeout := fs.Duration("timeout", 0, "bound on the scenario (default: the scenario's own)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go -C bench run . [flags] <scenario> [scenario flags]   (-list for scenarios)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2, nil
	}
	table := scenarios()
	if *list {
		printList(stdout, table)
		return 0, nil
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2, fmt.Errorf("%w: scenario name required", ErrUsage)
	}
	var sc *scenario
	for i := range table {
		if table[i].name == fs.Arg(0) {
			sc = &table[i]
		}
	}
	if sc == nil {
		return 2, fmt.Errorf("%w: unknown scenario %q (try -list)", ErrUsage, fs.Arg(0))
	}
	sfs := flag.NewFlagSet("bench "+sc.name, flag.ContinueOnError)
	sfs.SetOutput(stderr)
	body := sc.setup(sfs)
	if err := sfs.Parse(fs.Args()[1:]); err != nil {
		return 2, nil
	}
	srvs, err := parseServers(*servers)
	if err != nil {
		return 2, err
	}
	if *timeout == 0 {
		*timeout = sc.timeout
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	exe, err := os.Executable()
	if err != nil {
		return 1, fmt.Errorf("own executable: %w", err)
	}
	tmp, err := os.MkdirTemp("", "pushd-bench-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	h := &harness{stdout: stdout, stderr: stderr, exe: exe, pushdBin: *pushdBin, servers: srvs, profileDir: *profileDir, tmp: tmp}
	if h.pushdBin == "" && slices.ContainsFunc(srvs, func(n string) bool { return strings.HasPrefix(n, "pushd") }) {
		h.logf("building cmd/pushd")
		if h.pushdBin, err = buildPushd(ctx, tmp); err != nil {
			return 1, err
		}
	}
	if h.profileDir != "" {
		if err := os.MkdirAll(h.profileDir, 0o755); err != nil {
			return 1, fmt.Errorf("-profile-dir: %w", err)
		}
	}
	loadStart, loadStartText := loadAvg()
	h.logf("host load average at start: %s", loadStartText)
	others := &otherLoad{}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		others.run(sampleCtx, 500*time.Millisecond)
	}()
	start := time.Now()
	rep, err := body(ctx, h)
	stopSampling()
	<-sampled
	loadEnd, loadEndText := loadAvg()
	h.logf("host load average at end: %s", loadEndText)
	if err != nil {
		return 1, fmt.Errorf("%s: %w", sc.name, err)
	}
	rep.LoadStart, rep.LoadEnd = loadStart, loadEnd
	note, noisy := noiseNote(loadStart, loadStartText, loadEndText, others)
	rep.Noisy = noisy
	rep.OthersRunnable, _, _ = others.result()
	rep.notef("%s", note)
	rep.Scenario = sc.name
	rep.Command = "go -C bench run . " + strings.Join(args, " ")
	rep.Seconds = time.Since(start).Seconds()
	if rep.after != nil {
		if err := rep.after(rep); err != nil {
			rep.failf("%v", err)
		}
	}
	rep.Pass = len(rep.Failures) == 0
	printReport(h, rep, *asJSON)
	if !rep.Pass {
		return 1, nil
	}
	return 0, nil
}

func printList(w io.Writer, table []scenario) {
	for _, sc := range table {
		fmt.Fprintf(w, "%s (timeout %v)\n", sc.name, sc.timeout)
		for _, l := range strings.Split(sc.about, "\n") {
			fmt.Fprintf(w, "    %s\n", l)
		}
		fs := flag.NewFlagSet(sc.name, flag.ContinueOnError)
		sc.setup(fs)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fmt.Fprintln(w)
	}
}

func printReport(h *harness, r *report, asJSON bool) {
	text := h.stdout
	if asJSON {
		text = h.stderr
	}
	fmt.Fprintf(text, "\n== %s: %s\n", r.Scenario, r.Command)
	fmt.Fprint(text, r.text)
	for _, n := range r.Notes {
		fmt.Fprintf(text, "note: %s\n", n)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(text, "FAIL: %s\n", f)
	}
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	if r.Noisy {
		verdict += fmt.Sprintf(" [noisy run: load average %.2f at start, %.2f at end; other processes' runnable threads mean %.2f]",
			r.LoadStart, r.LoadEnd, r.OthersRunnable)
	}
	fmt.Fprintf(text, "%s (%.1f s)\n", verdict, r.Seconds)
	if asJSON {
		enc := json.NewEncoder(h.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	}
}

// table renders rows with aligned columns.
func table(rows [][]string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
	return b.String()
}

// clientProc is a running bench -client process.
type clientProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan clientEvent
	done   chan struct{}

	mu     sync.Mutex
	errout []string
}

// startClient starts "bench -client mode args..." and returns once it runs.
func (h *harness) startClient(mode string, args []string) (*clientProc, error) {
	argv := append([]string{"-client", mode}, args...)
	c := &clientProc{cmd: exec.Command(h.exe, argv...), events: make(chan clientEvent, 16), done: make(chan struct{})}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	c.stdin = stdin
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start client: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(c.events)
		dec := json.NewDecoder(stdout)
		for {
			var e clientEvent
			if err := dec.Decode(&e); err != nil {
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
			c.events <- e
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			if len(c.errout) < maxClientErrLines {
				c.errout = append(c.errout, sc.Text())
			}
			c.mu.Unlock()
		}
	}()
	go func() {
		wg.Wait()
		_ = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *clientProc) send(cmd clientCmd) error {
	b, _ := json.Marshal(cmd)
	if _, err := c.stdin.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("client stdin: %w", err)
	}
	return nil
}

// next returns the next event within timeout. An "error" event becomes an
// error; so does the process exiting.
func (c *clientProc) next(ctx context.Context, timeout time.Duration) (clientEvent, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case e, ok := <-c.events:
		if !ok {
			c.mu.Lock()
			defer c.mu.Unlock()
			return e, fmt.Errorf("client: %w\n%s", ErrExited, strings.Join(c.errout, "\n"))
		}
		if e.Event == "error" {
			return e, errors.New("client: " + e.Message)
		}
		return e, nil
	case <-t.C:
		return clientEvent{}, fmt.Errorf("client: %w after %v", ErrTimeout, timeout)
	case <-ctx.Done():
		return clientEvent{}, ctx.Err()
	}
}

// expect is next that also checks the event name.
func (c *clientProc) expect(ctx context.Context, timeout time.Duration, event string) (clientEvent, error) {
	e, err := c.next(ctx, timeout)
	if err == nil && e.Event != event {
		err = fmt.Errorf("client: got event %q (%s), want %q", e.Event, e.Name, event)
	}
	return e, err
}

// stop closes the client's stdin (it closes its connections and exits),
// then kills it after 10 s. Idempotent.
func (c *clientProc) stop() {
	_ = c.stdin.Close()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// profileTop saves pushd's profile at path (an admin URL path) and returns
// the first lines of `go tool pprof -top`, so a failing run says where the
// bytes or the CPU go.
func (h *harness) profileTop(ctx context.Context, s *serverProc, path, name string, lines int) (string, error) {
	dir := h.profileDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "pushd-bench-prof-"); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("profile dir: %w", err)
	}
	file := filepath.Join(dir, name)
	if err := s.saveProfile(ctx, path, file); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", file).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w\n%s", err, out)
	}
	ls := strings.Split(string(out), "\n")
	if len(ls) > lines {
		ls = ls[:lines]
	}
	return "profile saved to " + file + "\n" + strings.Join(ls, "\n") + "\n", nil
}
