package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/pushdtest"
)

// maxSize is the -max-frame and -max-message pushd runs with here: 16 MiB,
// the largest message of the Autobahn limits group.
const maxSize = 16 << 20

// echoSizes are the message sizes every peer sends: the edges of the 7-bit,
// 16-bit and 64-bit length encodings (RFC 6455 §5.2), 64 KiB, 1 MiB and
// 16 MiB.
var echoSizes = [...]int{0, 125, 126, 127, 128, 65535, 65536, 1 << 20, 16 << 20}

// validCloseCodes are the codes a client may send and the server must echo
// (Autobahn 7.7).
var validCloseCodes = [...]int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999}

// browserCloseCodes are the valid codes the WHATWG WebSocket API lets a
// script pass to close() (1000 and 3000-4999).
var browserCloseCodes = [...]int{1000, 3000, 3999, 4000, 4999}

// textUnit is the 17-byte unit text payloads repeat: ASCII plus 2-, 3- and
// 4-byte UTF-8 sequences. The node, python and browser peers build the same
// payloads (see node/peer.js, python/peer.py, browser/page.html).
const textUnit = "pushd é€𝄞 ~"

// textPayload returns n bytes of valid UTF-8: whole textUnit repeats, then
// 'x' padding.
func textPayload(n int) []byte {
	b := bytes.Repeat([]byte(textUnit), n/len(textUnit))
	return append(b, bytes.Repeat([]byte{'x'}, n%len(textUnit))...)
}

// binPayload returns n bytes with period 251 (a prime, so reordered or
// duplicated power-of-two chunks change the digest): b[i] = (i%251)*131+17.
func binPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((i%251)*131 + 17)
	}
	return b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// pushdBin returns the binary to judge: the one TestMain built, or
// $PUSHD_CONFORMANCE_BIN.
func pushdBin(t *testing.T) string {
	t.Helper()
	return pushdtest.Build(t)
}

// startEcho starts pushd in -echo mode with 16 MiB frame and message limits
// plus extra flags.
func startEcho(t *testing.T, extra ...string) *pushdtest.Proc {
	t.Helper()
	args := []string{"-echo", "-max-frame", fmt.Sprint(maxSize), "-max-message", fmt.Sprint(maxSize)}
	p := pushdtest.Start(t, pushdBin(t), pushdtest.Options{Args: append(args, extra...)})
	t.Cleanup(func() {
		// Stop first (idempotent) so that shutdown output is checked too.
		p.Stop(t)
		log := p.Log()
		for _, bad := range []string{"panic:", "DATA RACE", "fatal error:"} {
			if strings.Contains(log, bad) {
				t.Errorf("pushd printed %q:\n%s", bad, log)
				break
			}
		}
	})
	return p
}

// peerOptedOut reports whether PUSHD_SKIP_PEERS names peer.
func peerOptedOut(peer string) bool {
	for _, p := range strings.Split(os.Getenv("PUSHD_SKIP_PEERS"), ",") {
		if strings.TrimSpace(p) == peer {
			return true
		}
	}
	return false
}

// skipPeer skips t when PUSHD_SKIP_PEERS names peer. This is the only way a
// peer test may skip.
func skipPeer(t *testing.T, peer string) {
	t.Helper()
	if peerOptedOut(peer) {
		t.Skipf("PUSHD_SKIP_PEERS=%s skips the %s peer", os.Getenv("PUSHD_SKIP_PEERS"), peer)
	}
}

// missingPeer fails t because an independent peer is not installed.
func missingPeer(t *testing.T, what string, err error) {
	t.Helper()
	t.Fatalf("%s is not available (%v): run scripts/test.sh to install the conformance peers "+
		"(or set PUSHD_SKIP_PEERS to skip them on purpose)", what, err)
}

// moduleDir returns the directory of this package (tests run in it).
func moduleDir(t *testing.T, sub string) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, sub)
}

// scriptResult is one line of JSON printed by the node and python peers:
// one observation per case, judged by the Go test.
type scriptResult struct {
	Case      string `json:"case"`
	Kind      string `json:"kind"` // "text" or "binary" for echoes
	Size      int    `json:"size"`
	GotKind   string `json:"got_kind"`
	GotSize   int    `json:"got_size"`
	GotSHA256 string `json:"got_sha256"`
	Code      int    `json:"code"`      // close code sent by the peer
	GotCode   int    `json:"got_code"`  // close code received from pushd
	Ping      string `json:"ping"`      // hex ping payload sent
	GotPong   string `json:"got_pong"`  // hex pong payload received
	Fragments int    `json:"fragments"` // frames the message was sent in
	Protocol  string `json:"protocol"`  // negotiated subprotocol
	Error     string `json:"error"`
}

// runScript runs argv with a timeout, feeds it nothing on stdin and decodes
// its stdout as JSON lines. Stderr is logged on failure.
func runScript(t *testing.T, timeout time.Duration, env []string, argv ...string) []scriptResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s: %v in %v", strings.Join(argv, " "), errOrOK(err), time.Since(start).Round(time.Millisecond))
	if ctx.Err() != nil {
		t.Fatalf("%s timed out after %v\nstdout:\n%s\nstderr:\n%s", argv[0], timeout, stdout.String(), stderr.String())
	}
	if err != nil {
		t.Fatalf("%s failed: %v\nstdout:\n%s\nstderr:\n%s", argv[0], err, stdout.String(), stderr.String())
	}
	var out []scriptResult
	dec := json.NewDecoder(&stdout)
	for {
		var r scriptResult
		if err := dec.Decode(&r); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decode %s output: %v\nstderr:\n%s", argv[0], err, stderr.String())
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		t.Fatalf("%s printed no results\nstderr:\n%s", argv[0], stderr.String())
	}
	return out
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// judgeScript checks the results printed by a scripted peer. It requires
// every case in want to be present exactly once.
func judgeScript(t *testing.T, peer string, res []scriptResult, want []string) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range res {
		seen[r.Case]++
		t.Run(r.Case, func(t *testing.T) { judgeOne(t, peer, r) })
	}
	for _, c := range want {
		if seen[c] != 1 {
			t.Errorf("%s: case %q reported %d times, want once", peer, c, seen[c])
		}
	}
}

func judgeOne(t *testing.T, peer string, r scriptResult) {
	t.Helper()
	if r.Error != "" {
		t.Fatalf("%s %s: %s", peer, r.Case, r.Error)
	}
	switch {
	case strings.HasPrefix(r.Case, "echo") || strings.HasPrefix(r.Case, "frag"):
		var want []byte
		switch r.Kind {
		case "text":
			want = textPayload(r.Size)
		case "binary":
			want = binPayload(r.Size)
		default:
			t.Fatalf("%s %s: unknown kind %q", peer, r.Case, r.Kind)
		}
		if r.GotKind != r.Kind || r.GotSize != r.Size || r.GotSHA256 != digest(want) {
			t.Errorf("%s %s: sent %s %d B, got %s %d B sha256 %s (want %s)",
				peer, r.Case, r.Kind, r.Size, r.GotKind, r.GotSize, r.GotSHA256, digest(want))
		}
		if strings.HasPrefix(r.Case, "frag") && r.Fragments < 2 {
			t.Errorf("%s %s: message went out in %d frame(s), want a fragmented send", peer, r.Case, r.Fragments)
		}
		if r.Ping != "" && r.GotPong != r.Ping {
			t.Errorf("%s %s: ping %q between fragments got pong %q", peer, r.Case, r.Ping, r.GotPong)
		}
	case strings.HasPrefix(r.Case, "ping"):
		if r.GotPong != r.Ping {
			t.Errorf("%s %s: ping payload %q, pong payload %q", peer, r.Case, r.Ping, r.GotPong)
		}
	case strings.HasPrefix(r.Case, "close"):
		if r.GotCode != r.Code {
			t.Errorf("%s %s: closed with %d, pushd answered %d", peer, r.Case, r.Code, r.GotCode)
		}
	case strings.HasPrefix(r.Case, "subprotocol-"):
		if want := strings.TrimPrefix(r.Case, "subprotocol-"); r.Protocol != want {
			t.Errorf("%s: offered %s, negotiated %q", peer, want, r.Protocol)
		}
	case strings.HasPrefix(r.Case, "server-close"):
		if r.GotCode != 1001 {
			t.Errorf("%s %s: pushd closed with %d, want 1001", peer, r.Case, r.GotCode)
		}
	default:
		t.Fatalf("%s: unknown case %q", peer, r.Case)
	}
}

// raceScale stretches time bounds when the race detector slows this
// process (the pushd binary itself is built without -race).
func raceScale(d time.Duration) time.Duration {
	if raceEnabled {
		d *= 2
	}
	if runtime.NumCPU() < 2 {
		d *= 2
	}
	return d
}
