package jsclient_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	jsclient "github.com/pushd/pushd/clients/js"
	"github.com/pushd/pushd/internal/pushdtest"
)

// TestSourceIsPushdJS: the embedded module is the file in this folder.
func TestSourceIsPushdJS(t *testing.T) {
	want, err := os.ReadFile("pushd.js")
	if err != nil {
		t.Fatal(err)
	}
	if got := jsclient.Source(); !bytes.Equal(got, want) {
		t.Fatalf("Source() is %d bytes, pushd.js %d", len(got), len(want))
	}
	if !bytes.Contains(want, []byte("export function connect(")) {
		t.Fatal("pushd.js does not export connect")
	}
}

// TestNodeClient runs the client's Node tests (node --test test/) against
// the real pushd binary built from this tree: the unit tests against a
// scripted stub, the TypeScript types (tsc --strict), reconnect with full jitter after kill -9, resume with no
// loss across connection cuts, the reconnect hint and Retry-After, and the
// README's delivery guarantees table (test/faults.test.mjs: a pushd
// restart, FLUSHALL, pub/sub kill, SIGSTOP and restarts of a real
// redis-server; each row prints a ROW line with its counts). It
// fails when node or the npm packages (npm ci in clients/js) are missing,
// when any Node test fails, and when any is skipped or none ran.
func TestNodeClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (Node >= 20 is required; scripts/test.sh checks it): %v", err)
	}
	for _, m := range []string{"ws", "typescript"} {
		if _, err := os.Stat(filepath.Join("node_modules", m, "package.json")); err != nil {
			t.Fatalf("npm package %s missing in clients/js/node_modules (run: cd clients/js && npm ci): %v", m, err)
		}
	}
	bin := pushdtest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap", "test/")
	cmd.Env = append(os.Environ(), "PUSHD_BIN="+bin)
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("node --test test/ (%v):\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
	counts := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$`).FindAllSubmatch(out, -1) {
		n, _ := strconv.Atoi(string(m[2]))
		counts[string(m[1])] = n
	}
	if counts["pass"] == 0 || counts["pass"] != counts["tests"] {
		t.Fatalf("node tests: %v, want every test passed", counts)
	}
	for _, k := range []string{"fail", "cancelled", "skipped", "todo"} {
		if counts[k] != 0 {
			t.Fatalf("node tests: %d %s (%v)", counts[k], k, counts)
		}
	}
	t.Logf("node tests: %d passed", counts["pass"])
}
