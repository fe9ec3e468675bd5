package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// userHZ is the unit of utime/stime in /proc/<pid>/stat. The kernel reports
// these in USER_HZ, which is 100 on every Linux ABI Go supports.
const userHZ = 100

// buildPushd compiles cmd/pushd into dir and returns the binary path. It
// must run inside the pushd module (go run ./bench from the repo).
func buildPushd(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "pushd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/pushd/pushd/cmd/pushd")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cmd/pushd (run bench from the pushd module): %w\n%s", err, b)
	}
	return out, nil
}

// serverSpec says how to start one server under test.
type serverSpec struct {
	name string   // "pushd" or "ref"
	argv []string // full command line, without -listen/-admin-listen
}

// serverProc is a running server process that logs slog JSON lines
// {"msg":"listening","kind":"ws"|"admin","addr":...} on stderr.
type serverProc struct {
	name      string
	cmd       *exec.Cmd
	wsAddr    string
	adminAddr string
	done      chan struct{}
	waitErr   error

	mu   sync.Mutex
	logs []string // last lines of output
}

// maxLogLines bounds how much server output is kept for error reports.
const maxLogLines = 200

// startServer starts spec on 127.0.0.1:0 and waits until both listeners are
// logged. The process gets SIGKILL if bench dies (Pdeathsig).
func startServer(ctx context.Context, spec serverSpec, timeout time.Duration) (*serverProc, error) {
	argv := append(append([]string(nil), spec.argv...), "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0")
	s := &serverProc{name: spec.name, cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	addrs := make(chan [2]string, 1)
	go s.scan(pr, addrs)
	go func() {
		s.waitErr = s.cmd.Wait()
		pw.Close()
		close(s.done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-addrs:
		s.wsAddr, s.adminAddr = a[0], a[1]
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s: %w before listening: %v\n%s", spec.name, ErrExited, s.waitErr, s.tail(40))
	case <-t.C:
		s.stop()
		return nil, fmt.Errorf("%s: %w waiting for listeners\n%s", spec.name, ErrTimeout, s.tail(40))
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

// scan keeps the last output lines and reports both listener addresses.
func (s *serverProc) scan(r io.Reader, addrs chan<- [2]string) {
	var ws, admin string
	sent := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		s.mu.Lock()
		s.logs = append(s.logs, line)
		if len(s.logs) > maxLogLines {
			s.logs = s.logs[len(s.logs)-maxLogLines:]
		}
		s.mu.Unlock()
		if sent {
			continue
		}
		var rec struct{ Msg, Kind, Addr string }
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

// tail returns the last n output lines.
func (s *serverProc) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logs
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func (s *serverProc) pid() int { return s.cmd.Process.Pid }

// stop sends SIGTERM, waits up to 5 s, then SIGKILLs. Idempotent.
func (s *serverProc) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

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
