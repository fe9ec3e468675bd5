package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pushd/pushd/internal/srcaddr"
)

// The client side runs in its own process (bench -client ...) so the server
// under test is measured alone. It talks to the parent in JSON lines:
// commands on stdin, events on stdout. It exits when stdin closes, when told
// to, or after -max-life, whichever comes first.

// clientCmd is one command from the parent.
type clientCmd struct {
	Cmd   string `json:"cmd"`             // "open", "quit"
	Total int    `json:"total,omitempty"` // open: connections to hold in total
	Ms    int64  `json:"ms,omitempty"`    // dribble: how long; arm: timeout
	// fanout client only
	Target  string `json:"target,omitempty"`  // open: host:port
	Path    string `json:"path,omitempty"`    // open: upgrade request path
	Raw     bool   `json:"raw,omitempty"`     // open: plain TCP, no upgrade
	Bytes   int    `json:"bytes,omitempty"`   // arm: bytes each connection must receive
	Frame   []byte `json:"frame,omitempty"`   // arm: the bytes expected (frame × repeat)
	Capture bool   `json:"capture,omitempty"` // arm: done at the first byte; keep one read
	// Add (open) keeps the connections already open and adds Total more;
	// Hello (open) is a text message sent after each upgrade, whose reply
	// frame is read before the connection counts as open (a protocol's
	// connect command). Path may hold "{i}", replaced by the connection's
	// index (personal channels). See peersclient.go.
	Add   bool   `json:"add,omitempty"`
	Hello string `json:"hello,omitempty"`
}

// clientEvent is one line from the client process.
type clientEvent struct {
	Event   string         `json:"event"` // "opened", "phase", "result", "error", "bye"
	Name    string         `json:"name,omitempty"`
	Open    int            `json:"open,omitempty"`
	Failed  int            `json:"failed,omitempty"`
	Errors  map[string]int `json:"errors,omitempty"`
	Millis  int64          `json:"ms,omitempty"`
	Message string         `json:"message,omitempty"`
	Slow    *slowResult    `json:"slow,omitempty"`
	Samples []echoSample   `json:"samples,omitempty"`
	Fanout  *fanoutRound   `json:"fanout,omitempty"`
	// Consumers is the consumers client's result.
	Consumers *consumersResult `json:"consumers,omitempty"`
	// Latency is the fanout client's "collect" result.
	Latency *latencyResult `json:"latency,omitempty"`
}

// clientFlags are the flags shared by both client modes.
type clientFlags struct {
	target      string
	path        string
	sources     string
	concurrency int
	hsTimeout   time.Duration
	maxLife     time.Duration
	tls         bool   // dial the target over TLS (wss)
	sse         bool   // open Server-Sent Events streams (GET path, 200 text/event-stream) instead of upgrading
	hello       string // set per "open" command, not a flag
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.target, "target", "", "server host:port (required)")
	fs.StringVar(&c.path, "path", "/ws", "upgrade request path; {rand} becomes a random id per connection (a personal channel each)")
	fs.StringVar(&c.sources, "sources", "127.0.1.0/24", "source addresses (list/CIDRs)")
	fs.IntVar(&c.concurrency, "concurrency", 64, "concurrent dials+handshakes")
	fs.DurationVar(&c.hsTimeout, "hs-timeout", 10*time.Second, "dial+handshake timeout per connection")
	fs.DurationVar(&c.maxLife, "max-life", 15*time.Minute, "exit after this long no matter what")
	fs.BoolVar(&c.tls, "tls", false, "connect over TLS (wss; the certificate is not verified)")
	fs.BoolVar(&c.sse, "sse", false, "open SSE streams (plain GET of -path, expect 200 text/event-stream) instead of WebSocket upgrades")
}

// eventWriter serializes events onto stdout.
type eventWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *eventWriter) send(e clientEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.enc.Encode(e)
}

func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "bench -client: mode idle|slow|echo|fanout|consumers required")
		return 2
	}
	mode, args := args[0], args[1:]
	fs := flag.NewFlagSet("bench -client "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	var sf slowFlags
	if mode == "slow" || mode == "echo" {
		sf.register(fs)
	}
	var cfl consumerFlags
	if mode == "consumers" {
		cfl.register(fs)
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cf.target == "" {
		fmt.Fprintln(stderr, "bench -client: -target required")
		return 2
	}
	out := &eventWriter{enc: json.NewEncoder(stdout)}
	if _, err := srcaddr.RaiseNofile(); err != nil {
		out.send(clientEvent{Event: "error", Message: err.Error()})
		return 1
	}
	srcs, err := srcaddr.ParseList(cf.sources)
	if err != nil {
		out.send(clientEvent{Event: "error", Message: err.Error()})
		return 1
	}
	d, err := srcaddr.NewDialer(srcs, cf.hsTimeout)
	if err != nil {
		out.send(clientEvent{Event: "error", Message: err.Error()})
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, cf.maxLife)
	defer cancel()
	switch mode {
	case "idle":
		return runIdleClient(ctx, cf, d, out)
	case "slow":
		return runSlowClient(ctx, cf, sf, d, out)
	case "echo":
		return runEchoClient(ctx, cf, sf, d, out)
	case "fanout":
		return runFanoutClient(ctx, cf, d, out)
	case "consumers":
		return runConsumersClient(ctx, cf, cfl, d, out)
	default:
		fmt.Fprintf(stderr, "bench -client: unknown mode %q\n", mode)
		return 2
	}
}

// wsConn is an upgraded client connection.
type wsConn struct {
	c  net.Conn
	br *bufio.Reader
}

// openConns opens n upgraded connections with cf.concurrency workers and
// returns those that succeeded plus failure counts by reason.
func openConns(ctx context.Context, cf clientFlags, d *srcaddr.Dialer, n int) ([]wsConn, map[string]int) {
	return dialAll(ctx, n, cf.concurrency, func() (wsConn, error) { return dialUpgrade(ctx, cf, d) })
}

// dialAll runs dial n times on up to concurrency goroutines (stopping early
// when ctx ends) and returns the results that succeeded plus failure counts
// by reason.
func dialAll[T any](ctx context.Context, n, concurrency int, dial func() (T, error)) ([]T, map[string]int) {
	var (
		mu   sync.Mutex
		ok   = make([]T, 0, n)
		errs = map[string]int{}
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(concurrency, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				v, err := dial()
				mu.Lock()
				if err != nil {
					errs[reason(err)]++
				} else {
					ok = append(ok, v)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ok, errs
}

func dialUpgrade(ctx context.Context, cf clientFlags, d *srcaddr.Dialer) (wsConn, error) {
	dctx, cancel := context.WithTimeout(ctx, cf.hsTimeout)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", cf.target)
	if err != nil {
		return wsConn{}, err
	}
	if cf.tls {
		tc := tls.Client(c, clientTLS())
		if err := tc.HandshakeContext(dctx); err != nil {
			c.Close()
			return wsConn{}, err
		}
		c = tc
	}
	path := cf.path
	if strings.Contains(path, "{rand}") {
		// One channel per connection (personal channels): a random id,
		// unique among a run's connections with overwhelming probability.
		path = strings.ReplaceAll(path, "{rand}", strconv.FormatUint(rand.Uint64(), 36))
	}
	var br *bufio.Reader
	if cf.sse {
		br, err = sseOpen(c, cf.target, path, cf.hsTimeout)
	} else {
		br, err = handshake(c, cf.target, path, cf.hsTimeout)
	}
	if err == nil && cf.hello != "" {
		err = sayHello(c, br, cf.hello, cf.hsTimeout)
	}
	if err != nil {
		c.Close()
		return wsConn{}, err
	}
	return wsConn{c: c, br: br}, nil
}

// reason buckets an error for reports.
func reason(err error) string {
	var se syscall.Errno
	switch {
	case errors.Is(err, ErrStatus):
		return err.Error()
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.As(err, &se):
		return se.Error()
	default:
		s := err.Error()
		if len(s) > 80 {
			s = s[:80]
		}
		return s
	}
}

// runIdleClient holds idle upgraded connections: "open" grows the set to the
// requested total, "quit" (or stdin EOF) closes everything.
func runIdleClient(ctx context.Context, cf clientFlags, d *srcaddr.Dialer, out *eventWriter) int {
	cmds := make(chan clientCmd)
	go readCmds(os.Stdin, cmds)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for {
		cmd, code, done := nextCmd(ctx, cmds, out, "client", clientEvent{Event: "bye", Open: len(held)})
		if done {
			return code
		}
		if cmd.Cmd != "open" {
			out.send(clientEvent{Event: "error", Message: "unknown command " + cmd.Cmd})
			continue
		}
		start := time.Now()
		failed := 0
		errs := map[string]int{}
		if want := cmd.Total - len(held); want > 0 {
			conns, e := openConns(ctx, cf, d, want)
			for _, c := range conns {
				// Idle clients keep only the socket: nothing is buffered
				// after the 101 and the server sends nothing while idle.
				held = append(held, c.c)
			}
			errs = e
			failed = want - len(conns)
		}
		out.send(clientEvent{Event: "opened", Open: len(held), Failed: failed, Errors: errs,
			Millis: time.Since(start).Milliseconds()})
	}
}

// nextCmd waits for the parent's next command. done reports that the
// client must stop, with exit status code: 0 after the parent said quit or
// closed stdin (bye is sent), 1 when ctx ended (an error naming who is
// sent).
func nextCmd(ctx context.Context, cmds <-chan clientCmd, out *eventWriter, who string, bye clientEvent) (cmd clientCmd, code int, done bool) {
	var ok bool
	select {
	case cmd, ok = <-cmds:
	case <-ctx.Done():
		out.send(clientEvent{Event: "error", Message: who + ": " + ctx.Err().Error()})
		return cmd, 1, true
	}
	if !ok || cmd.Cmd == "quit" {
		out.send(bye)
		return cmd, 0, true
	}
	return cmd, 0, false
}

// readCmds decodes JSON lines from r until EOF, then closes cmds.
func readCmds(r io.Reader, cmds chan<- clientCmd) {
	defer close(cmds)
	dec := json.NewDecoder(r)
	for {
		var c clientCmd
		if err := dec.Decode(&c); err != nil {
			return
		}
		cmds <- c
	}
}
