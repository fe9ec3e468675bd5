package conformance

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binEnv names the pushd binary every test in this package judges.
const binEnv = "PUSHD_CONFORMANCE_BIN"

// TestMain builds cmd/pushd once, so that every test judges the same
// binary (and the package does not link it once per test), and hands the
// path to the tests through $PUSHD_CONFORMANCE_BIN. A path already set
// there is used as is. Nothing is built when no test runs (-run='^$', the
// benchmark smoke run).
func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(binEnv) != "" || flag.Lookup("test.run").Value.String() == "^$" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "pushd-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
	bin := filepath.Join(dir, "pushd")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/pushd/pushd/cmd/pushd").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: go build ./cmd/pushd: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	if err := os.Setenv(binEnv, bin); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
