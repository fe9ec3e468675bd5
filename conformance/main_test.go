package conformance

import (
	"fmt"
	"os"
	"testing"

	"github.com/pushd/pushd/internal/pushdtest"
)

// binEnv names a pushd binary to judge instead of building cmd/pushd.
const binEnv = "PUSHD_CONFORMANCE_BIN"

// TestMain builds cmd/pushd once (pushdtest.Main), so that every test
// judges the same binary and the package does not link it once per test.
// A path in $PUSHD_CONFORMANCE_BIN is judged instead. Nothing is built
// when no test runs (-run='^$', the benchmark smoke run).
func TestMain(m *testing.M) {
	if p := os.Getenv(binEnv); p != "" {
		if err := os.Setenv(pushdtest.BinEnv, p); err != nil {
			fmt.Fprintln(os.Stderr, "conformance:", err)
			os.Exit(1)
		}
	}
	os.Exit(pushdtest.Main(m))
}
