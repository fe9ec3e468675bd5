package redistest

import (
	"bytes"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
)

// PublishRate runs redis-benchmark's PUBLISH of a small JSON payload on
// pushd:{bench} against s (one client, 1,000 commands pipelined, like a
// batching backend) for n requests and returns its requests per second:
// the reference a forwarding benchmark reports its own rate against.
func (s *Server) PublishRate(tb testing.TB, n int) float64 {
	tb.Helper()
	Binary(tb, "redis-benchmark")
	out, err := exec.Command("redis-benchmark", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port),
		"-n", strconv.Itoa(n), "-c", "1", "-P", "1000", "-q",
		"PUBLISH", "pushd:{bench}", `{"price":123.45,"sym":"ABC"}`).CombinedOutput()
	if err != nil {
		tb.Fatalf("redis-benchmark: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`([0-9.]+) requests per second`).FindSubmatch(bytes.ReplaceAll(out, []byte("\r"), []byte("\n")))
	if m == nil {
		tb.Fatalf("redis-benchmark output: %q", out)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		tb.Fatalf("redis-benchmark rate %q: %v", m[1], err)
	}
	return v
}
