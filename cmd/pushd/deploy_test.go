package main_test

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pushd/pushd/internal/pushdtest"
)

// deployDir is the repository's deploy/ folder.
const deployDir = "../../deploy"

// runPushd runs the binary to completion and returns its exit code and
// output.
func runPushd(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("run %s: %v", bin, err)
		return 0, "", ""
	}
}

// TestDeployFiles checks deploy/ against the real binary and each other:
// the example config passes -check-config (and a broken one exits 2 with
// every error), the systemd unit gives the drain the time it needs and
// the descriptors pushd wants (and systemd-analyze verify accepts it), and
// the sysctl file names only real kernel keys and allows the unit's
// LimitNOFILE.
func TestDeployFiles(t *testing.T) {
	bin := pushdtest.Build(t)
	cfgPath := filepath.Join(deployDir, "pushd.yaml")
	code, _, stderr := runPushd(t, bin, "-check-config", "-config", cfgPath)
	if code != 0 || !strings.Contains(stderr, "configuration ok") {
		t.Fatalf("pushd -check-config -config deploy/pushd.yaml: exit %d\n%s", code, stderr)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("max-frames: 1\nworkers: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runPushd(t, bin, "-check-config", "-config", bad)
	if code != 2 || !strings.Contains(stderr, `unknown key "max-frames"`) || !strings.Contains(stderr, "-workers must be at least 1") {
		t.Errorf("broken config: exit %d, want 2 with both errors\n%s", code, stderr)
	}

	// The effective drain settings, as the binary sees them.
	code, printed, stderr := runPushd(t, bin, "-print-config", "-config", cfgPath)
	if code != 0 {
		t.Fatalf("-print-config: exit %d\n%s", code, stderr)
	}
	var eff map[string]any
	if err := yaml.Unmarshal([]byte(printed), &eff); err != nil {
		t.Fatalf("-print-config output is not YAML: %v\n%s", err, printed)
	}
	dur := func(key string) time.Duration {
		s, _ := eff[key].(string)
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s: %q: %v", key, s, err)
		}
		return d
	}
	drain := dur("drain-delay") + dur("drain-duration") + dur("shutdown-timeout")

	unit := readUnit(t, filepath.Join(deployDir, "pushd.service"))
	stop, err := time.ParseDuration(unit["TimeoutStopSec"])
	if err != nil {
		t.Fatalf("TimeoutStopSec %q: %v", unit["TimeoutStopSec"], err)
	}
	if stop < drain+5*time.Second {
		t.Errorf("TimeoutStopSec %v leaves no margin over drain-delay + drain-duration + shutdown-timeout = %v", stop, drain)
	}
	for key, want := range map[string]string{
		"LimitNOFILE": "1048576", "KillSignal": "SIGTERM", "Restart": "on-failure",
		"ExecStart": "/usr/local/bin/pushd -config /etc/pushd/pushd.yaml",
	} {
		if unit[key] != want {
			t.Errorf("pushd.service %s=%q, want %q", key, unit[key], want)
		}
	}
	if !strings.Contains(unit["RestrictAddressFamilies"], "AF_UNIX") {
		t.Errorf("RestrictAddressFamilies %q lacks AF_UNIX (the unit allows local sockets)", unit["RestrictAddressFamilies"])
	}
	verifyUnit(t, bin, cfgPath)

	sysctl := readSysctl(t, filepath.Join(deployDir, "sysctl.d", "99-pushd.conf"))
	num := func(key string) uint64 {
		f := strings.Fields(sysctl[key])
		if len(f) == 0 {
			t.Fatalf("99-pushd.conf lacks %s", key)
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			t.Fatalf("%s = %q", key, sysctl[key])
		}
		return v
	}
	limit, _ := strconv.ParseUint(unit["LimitNOFILE"], 10, 64)
	if num("fs.nr_open") < limit || num("fs.file-max") < num("fs.nr_open") {
		t.Errorf("fs.nr_open %d / fs.file-max %d must allow LimitNOFILE %d", num("fs.nr_open"), num("fs.file-max"), limit)
	}
	if num("net.core.somaxconn") < 4096 {
		t.Errorf("net.core.somaxconn %d is below pushd's listen backlog 4096", num("net.core.somaxconn"))
	}
	// The example's listening ports sit below the ephemeral range.
	low := num("net.ipv4.ip_local_port_range")
	for _, key := range []string{"listen", "admin-listen"} {
		addr, _ := eff[key].(string)
		_, port, err := net.SplitHostPort(addr)
		p, _ := strconv.ParseUint(port, 10, 16)
		if err != nil || p >= low {
			t.Errorf("%s %q is inside ip_local_port_range (from %d)", key, addr, low)
		}
	}
	for key := range sysctl {
		if strings.HasPrefix(key, "-") {
			continue // optional key (nf_conntrack)
		}
		if _, err := os.Stat(filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))); err != nil {
			t.Errorf("99-pushd.conf: %s is not a kernel setting here: %v", key, err)
		}
	}
}

// readUnit returns the [Service] section's settings (the last value of a
// repeated key).
func readUnit(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: bad line %q", path, line)
			}
			out[k] = v
		}
	}
	return out
}

// readSysctl returns key → value of a sysctl.d file.
func readSysctl(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out
}

// verifyUnit runs systemd-analyze verify on the unit with the binary and
// config paths pointed at this build; any complaint fails. Hosts without
// systemd-analyze only get readUnit's checks (logged).
func verifyUnit(t *testing.T, bin, cfgPath string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze not installed: pushd.service checked by parsing only")
		return
	}
	b, err := os.ReadFile(filepath.Join(deployDir, "pushd.service"))
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("/usr/local/bin/pushd", bin, "/etc/pushd/pushd.yaml", abs).Replace(string(b))
	unit := filepath.Join(t.TempDir(), "pushd.service")
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify pushd.service: %v\n%s", err, out)
	}
}
