package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pushd/pushd/internal/pushdtest"
)

// userHZ is the unit of utime/stime in /proc/<pid>/stat. The kernel reports
// these in USER_HZ, which is 100 on every Linux ABI Go supports.
const userHZ = 100

// buildPushd compiles cmd/pushd into dir and returns the binary path. It
// builds inside the server module (see pushdModuleDir), so the binary has
// exactly the server module's dependencies.
func buildPushd(ctx context.Context, dir string) (string, error) {
	root, err := pushdModuleDir(ctx)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "pushd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/pushd")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cmd/pushd in %s: %w\n%s", root, err, b)
	}
	return out, nil
}

// pushdModuleDir returns the directory of the server module that bench's
// go.mod replaces github.com/pushd/pushd with (the repository root). It must
// run inside the bench module: go -C bench run . (or cd bench; go run .).
func pushdModuleDir(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/pushd/pushd").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		return "", fmt.Errorf("go list -m github.com/pushd/pushd: run bench inside its module (go -C bench run .): %v", err)
	}
	return dir, nil
}

// serverSpec says how to start one server under test.
type serverSpec struct {
	name string   // "pushd" or "ref"
	argv []string // full command line, without -listen/-admin-listen
	wss  bool     // clients connect to the wss listener, over TLS
}

// maxClientErrLines bounds the client-process stderr kept for error reports.
const maxClientErrLines = 200

// serverProc is a running server process that logs slog JSON lines
// {"msg":"listening","kind":"ws"|"admin","addr":...} on stderr; pushdtest
// starts and watches it, the same way the end-to-end tests do.
type serverProc struct {
	*pushdtest.Proc
	name      string
	wsAddr    string
	adminAddr string
	wss       bool // wsAddr is the wss listener (clients pass -tls)
}

// startServer starts spec on 127.0.0.1:0 and waits until both listeners are
// logged. The process gets SIGKILL if bench dies.
func startServer(ctx context.Context, spec serverSpec, timeout time.Duration) (*serverProc, error) {
	argv := spec.argv
	if strings.HasPrefix(spec.name, "pushd") && !slices.Contains(argv, "-admin-pprof") {
		// bench reads profiles and releases memory through the admin
		// listener's debug routes, which pushd serves only when asked.
		argv = append(argv[:len(argv):len(argv)], "-admin-pprof")
	}
	p, err := pushdtest.Launch(ctx, argv, timeout)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.name, err)
	}
	sp := &serverProc{Proc: p, name: spec.name, wsAddr: p.WSAddr, adminAddr: p.AdminAddr, wss: spec.wss}
	if strings.HasPrefix(spec.name, "pushd") {
		// pushd refuses upgrades (503) until its broker path works (a
		// Redis broker: the first canary); wait for /readyz.
		if err := sp.waitReady(ctx, timeout); err != nil {
			p.Shutdown()
			return nil, err
		}
	}
	if spec.wss {
		if sp.wsAddr, err = wssListenAddr(p.Tail(200)); err != nil {
			p.Shutdown()
			return nil, fmt.Errorf("%s: %w", spec.name, err)
		}
	}
	return sp, nil
}

// waitReady polls GET /readyz until it answers 200 or timeout passes.
func (s *serverProc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.adminAddr+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := adminClient().Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%w: %s /readyz not 200 within %v", ErrTimeout, s.name, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *serverProc) tail(n int) string { return s.Tail(n) }

func (s *serverProc) pid() int { return s.Pid() }

// stop sends SIGTERM, waits up to 5 s, then SIGKILLs. Idempotent.
func (s *serverProc) stop() { s.Shutdown() }

// serverStats is the part of GET /stats bench reads (pushd and ref both
// serve it).
type serverStats struct {
	Conns      int64  `json:"conns"`
	Goroutines int    `json:"goroutines"`
	Refused    uint64 `json:"refused"`
	Upgraded   uint64 `json:"upgraded"`
	RSSBytes   uint64 `json:"rss_bytes"`
	HeapInuse  uint64 `json:"heap_inuse"`
}

// adminClient has short timeouts so a hung server fails the run instead of
// hanging it.
func adminClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

func (s *serverProc) stats(ctx context.Context) (serverStats, error) {
	var st serverStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.adminAddr+"/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := adminClient().Do(req)
	if err != nil {
		return st, fmt.Errorf("%s GET /stats: %w", s.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s GET /stats: %s", s.name, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("%s decode /stats: %w", s.name, err)
	}
	return st, nil
}

// freeOSMemory asks the server to return freed memory to the OS so RSS
// reflects live memory.
func (s *serverProc) freeOSMemory(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.adminAddr+"/debug/freeosmemory", nil)
	if err != nil {
		return err
	}
	resp, err := adminClient().Do(req)
	if err != nil {
		return fmt.Errorf("%s POST /debug/freeosmemory: %w", s.name, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s POST /debug/freeosmemory: %s", s.name, resp.Status)
	}
	return nil
}

// saveProfile fetches path (e.g. "/debug/pprof/heap") from the admin
// listener into file.
func (s *serverProc) saveProfile(ctx context.Context, path, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.adminAddr+path, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("%s GET %s: %w", s.name, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s GET %s: %s", s.name, path, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s GET %s: %w", s.name, path, err)
	}
	return os.WriteFile(file, b, 0o644)
}

// memStats reads the runtime.MemStats fields ("# Name = value" lines)
// from the heap profile's debug=1 text.
func (s *serverProc) memStats(ctx context.Context) (map[string]uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.adminAddr+"/debug/pprof/heap?debug=1", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s GET heap?debug=1: %w", s.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s GET heap?debug=1: %s", s.name, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s GET heap?debug=1: %w", s.name, err)
	}
	return parseMemStats(b), nil
}

// parseMemStats collects "# Name = 123" lines; "# Stack = inuse / sys"
// (also MSpan, MCache) gives NameInuse and NameSys.
func parseMemStats(b []byte) map[string]uint64 {
	out := map[string]uint64{}
	for _, line := range bytes.Split(b, []byte("\n")) {
		name, val, ok := strings.Cut(strings.TrimPrefix(string(line), "# "), " = ")
		if !ok || len(line) < 2 || line[0] != '#' || strings.ContainsAny(name, " []") {
			continue
		}
		if inuse, sys, two := strings.Cut(val, " / "); two {
			a, err1 := strconv.ParseUint(strings.TrimSpace(inuse), 10, 64)
			c, err2 := strconv.ParseUint(strings.TrimSpace(sys), 10, 64)
			if err1 == nil && err2 == nil {
				out[name+"Inuse"], out[name+"Sys"] = a, c
			}
			continue
		}
		if v, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// procRSS returns VmRSS of pid in bytes.
func procRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	return kBField(b, "VmRSS:")
}

// meminfo returns a /proc/meminfo field (e.g. "Slab:") in bytes.
func meminfo(key string) (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("read meminfo: %w", err)
	}
	return kBField(b, key)
}

// kBField finds "key   1234 kB" in b and returns bytes.
func kBField(b []byte, key string) (uint64, error) {
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(key)) {
			continue
		}
		f := strings.Fields(string(line[len(key):]))
		if len(f) == 0 {
			break
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", key, err)
		}
		return v * 1024, nil
	}
	return 0, fmt.Errorf("%s not found", key)
}

// procCPU returns utime+stime of pid as a duration.
func procCPU(pid int) (time.Duration, error) {
	u, s, err := procCPUSplit(pid)
	return u + s, err
}

// procCPUSplit returns utime and stime of pid.
func procCPUSplit(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read stat: %w", err)
	}
	// comm (field 2) may contain spaces; the fields after it start after
	// the last ')'. utime and stime are fields 14 and 15 overall, i.e. the
	// 12th and 13th after comm.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("parse stat: %d fields", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("parse stat utime/stime %q %q", f[11], f[12])
	}
	return time.Duration(ut) * time.Second / userHZ, time.Duration(st) * time.Second / userHZ, nil
}

// serverListeners parses a reference server's -listen and -admin-listen
// flags and opens both listeners, logging JSON to stderr. On failure it
// returns nil listeners and the exit code (2 usage, 1 listen error).
func serverListeners(name string, args []string, stderr io.Writer) (ln, aln net.Listener, log *slog.Logger, code int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "WebSocket (or raw TCP) listener")
	adminListen := fs.String("admin-listen", "127.0.0.1:0", "admin listener (/stats and the server's commands)")
	if err := fs.Parse(args); err != nil {
		return nil, nil, nil, 2
	}
	log = slog.New(slog.NewJSONHandler(stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "err", err)
		return nil, nil, nil, 1
	}
	aln, err = net.Listen("tcp", *adminListen)
	if err != nil {
		ln.Close()
		log.Error("listen admin", "err", err)
		return nil, nil, nil, 1
	}
	return ln, aln, log, 0
}
