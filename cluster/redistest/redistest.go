// Package redistest starts real redis-server processes for tests: one
// standalone server or a Redis Cluster of primaries, each on a free
// loopback port with its files in a test temp dir, stopped when the test
// ends. A missing redis-server fails the test (scripts/test.sh installs
// it); it never skips. It must never be imported by non-test code paths of
// the pushd binary.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Options tune Start.
type Options struct {
	// AOF turns appendonly on (restart tests).
	AOF bool
	// Cluster starts the server with cluster-enabled yes.
	Cluster bool
	// Args are extra redis-server arguments ("--name", "value", ...).
	Args []string
	// TLSCert, TLSKey and TLSCA, when set, make the server speak TLS only
	// (tls-port; no plain port) with that certificate; clients are not
	// asked for one. Do talks TLS to it, trusting TLSCA.
	TLSCert, TLSKey, TLSCA string
	// SentinelConf, when set, starts a sentinel (redis-server
	// sentinel.conf --sentinel) whose config file holds these lines.
	SentinelConf string
}

// Server is a running redis-server.
type Server struct {
	Addr string // 127.0.0.1:port
	Port int
	Dir  string

	opts Options
	cmd  *exec.Cmd
	done chan struct{}
}

// Binary returns the path of name (redis-server, redis-cli,
// redis-benchmark) or fails the test telling how to install it.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("%s not found (%v): run scripts/test.sh, which installs redis-server with apt-get", name, err)
	}
	return p
}

// Start runs a redis-server on a free loopback port.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	Binary(tb, "redis-server")
	s := &Server{Dir: tb.TempDir(), opts: o}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		s.Port = freePort(tb)
		s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
		if err = s.start(); err == nil {
			tb.Cleanup(func() { s.Stop() })
			return s
		}
	}
	tb.Fatalf("redis-server did not start: %v", err)
	return nil
}

func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) start() error {
	args := []string{
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.Dir,
		"--save", "", "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
		"--logfile", "redis.log",
	}
	if s.opts.TLSCert != "" {
		args[1] = "0"
		args = append(args, "--tls-port", strconv.Itoa(s.Port), "--tls-cert-file", s.opts.TLSCert,
			"--tls-key-file", s.opts.TLSKey, "--tls-ca-cert-file", s.opts.TLSCA, "--tls-auth-clients", "no")
	}
	if s.opts.SentinelConf != "" {
		// The sentinel rewrites its file (known replicas, epochs).
		conf := filepath.Join(s.Dir, "sentinel.conf")
		if err := os.WriteFile(conf, []byte(s.opts.SentinelConf), 0o600); err != nil {
			return err
		}
		args = append([]string{conf, "--sentinel"}, args...)
		args = slices.DeleteFunc(args, func(a string) bool { return a == "--save" })
		// "--save" "" became a lone "": drop it too.
		args = slices.DeleteFunc(args, func(a string) bool { return a == "" })
	}
	if s.opts.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if s.opts.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
	}
	args = append(args, s.opts.Args...)
	s.cmd = exec.Command("redis-server", args...)
	s.cmd.Dir = s.Dir
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(s.cmd, s.done)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("redis-server on %s exited", s.Addr)
		default:
		}
		if out, err := s.Do("PING"); err == nil && out == "PONG" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Stop()
	return fmt.Errorf("redis-server on %s did not answer PING", s.Addr)
}

// Stop terminates the server (SIGTERM, SIGKILL after 5 s) and waits.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(termSignal)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Restart stops the server and starts it again on the same port and dir
// (with AOF the data survives).
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		tb.Fatalf("restart: %v", err)
	}
}

// Do runs one command through redis-cli and returns its trimmed output.
// Arguments are passed as is (no shell).
func (s *Server) Do(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port)}
	if s.opts.TLSCert != "" {
		base = append(base, "--tls", "--cacert", s.opts.TLSCA)
	}
	cmd := exec.CommandContext(ctx, "redis-cli", append(base, args...)...)
	out, err := cmd.CombinedOutput()
	res := strings.TrimSpace(string(out))
	if err != nil {
		return res, fmt.Errorf("redis-cli %v: %w: %s", args, err, res)
	}
	if strings.HasPrefix(res, "ERR") || strings.HasPrefix(res, "(error)") {
		return res, fmt.Errorf("redis-cli %v: %s", args, res)
	}
	return res, nil
}

// MustDo is Do failing the test on error.
func (s *Server) MustDo(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := s.Do(args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Cluster is a running Redis Cluster of primaries without replicas.
type Cluster struct {
	Nodes []*Server
}

// Addrs returns the primaries' host:port addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// StartCluster starts n cluster-enabled servers, joins them with
// redis-cli --cluster create --cluster-replicas 0 and waits for
// cluster_state:ok on every node.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	Binary(tb, "redis-cli")
	c := &Cluster{}
	for i := 0; i < n; i++ {
		c.Nodes = append(c.Nodes, Start(tb, Options{Cluster: true}))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range c.Nodes {
		for {
			info, _ := s.Do("CLUSTER", "INFO")
			if clusterOK(info) {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("cluster node %s not ok: %s", s.Addr, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

func clusterOK(info string) bool {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "cluster_state:ok" {
			return true
		}
	}
	return false
}

// Signal sends sig to the running redis-server: SIGSTOP and SIGCONT pause
// and resume it (a hung server as its clients see it), SIGKILL crashes it.
func (s *Server) Signal(sig os.Signal) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("redistest: server not running")
	}
	return s.cmd.Process.Signal(sig)
}
