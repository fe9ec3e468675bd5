package srcaddr

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Plan describes a load run for Preflight.
type Plan struct {
	// Conns is how many connections this process will hold at once.
	Conns int
	// Sources is the number of source addresses (len of a ParseList result).
	Sources int
	// Destinations is the number of distinct destination ip:port pairs.
	Destinations int
	// LocalServer means the server end of every connection is on this host
	// too (loopback), so the host-wide file count doubles.
	LocalServer bool
	// Headroom is the number of descriptors the process needs besides the
	// connections (stdio, epoll, pipes, logs). 0 means 64.
	Headroom int
}

// Severity ranks a Problem.
type Severity int

// Severities, least to most severe.
const (
	// Warn marks a limit that is close enough to hurt (slow connect(2)).
	Warn Severity = iota + 1
	// Fail marks a limit the plan cannot fit in.
	Fail
)

// String returns "warn" or "fail".
func (s Severity) String() string {
	switch s {
	case Warn:
		return "warn"
	case Fail:
		return "fail"
	default:
		return "Severity(" + strconv.Itoa(int(s)) + ")"
	}
}

// Problem is one finding of Preflight: which check, what was measured, and
// the exact command or change that fixes it.
type Problem struct {
	Severity Severity
	Check    string // e.g. "RLIMIT_NOFILE", "fs.nr_open"
	Detail   string
	Fix      string
}

// String formats p for a terminal.
func (p Problem) String() string {
	return fmt.Sprintf("%s: %s: %s\n    fix: %s", p.Severity, p.Check, p.Detail, p.Fix)
}

// Host is where Preflight reads limits from; the zero value means this
// process and /proc. Tests point ProcDir at a fake tree.
type Host struct {
	// ProcDir is the proc filesystem root ("/proc" when empty).
	ProcDir string
	// Nofile returns RLIMIT_NOFILE (Nofile when nil).
	Nofile func() (Rlimit, error)
	// Pid is shown in fix commands (os.Getpid() when 0).
	Pid int
}

// Preflight checks this process and host for p and returns every problem
// found, most severe first within each check. An empty result means the
// plan fits. It does not change anything; call RaiseNofile first if the
// soft limit may be below the hard one.
func Preflight(p Plan) []Problem { return Host{}.Preflight(p) }

// Preflight is the package-level Preflight against h.
func (h Host) Preflight(p Plan) []Problem {
	if h.ProcDir == "" {
		h.ProcDir = "/proc"
	}
	if h.Nofile == nil {
		h.Nofile = Nofile
	}
	if h.Pid == 0 {
		h.Pid = os.Getpid()
	}
	if p.Headroom <= 0 {
		p.Headroom = 64
	}
	need := uint64(p.Conns + p.Headroom)
	var probs []Problem
	probs = append(probs, h.checkNofile(need)...)
	probs = append(probs, h.checkNrOpen(need)...)
	probs = append(probs, h.checkFileMax(p)...)
	probs = append(probs, h.checkPorts(p)...)
	return probs
}

func (h Host) checkNofile(need uint64) []Problem {
	lim, err := h.Nofile()
	if err != nil {
		return []Problem{{Warn, "RLIMIT_NOFILE", err.Error(), "check `ulimit -n` and `ulimit -Hn` by hand"}}
	}
	switch {
	case lim.Hard < need:
		return []Problem{{Fail, "RLIMIT_NOFILE",
			fmt.Sprintf("hard limit %d < %d needed (soft %d)", lim.Hard, need, lim.Soft),
			fmt.Sprintf("as root: `prlimit --pid %d --nofile=%d:%d`, or start from a shell after `ulimit -Hn %d && ulimit -n %d`; "+
				"permanently: `* - nofile %d` in /etc/security/limits.conf or LimitNOFILE=%d in the systemd unit; "+
				"or split the connections over %d processes",
				h.Pid, need, need, need, need, need, need, (need+lim.Hard-1)/max(lim.Hard, 1))}}
	case lim.Soft < need:
		return []Problem{{Fail, "RLIMIT_NOFILE",
			fmt.Sprintf("soft limit %d < %d needed (hard %d allows it)", lim.Soft, need, lim.Hard),
			fmt.Sprintf("call srcaddr.RaiseNofile() in the program, or run `ulimit -n %d` before starting it", lim.Hard)}}
	}
	return nil
}

func (h Host) checkNrOpen(need uint64) []Problem {
	v, err := readUint(filepath.Join(h.ProcDir, "sys/fs/nr_open"))
	if err != nil {
		return []Problem{{Warn, "fs.nr_open", err.Error(), "check `sysctl fs.nr_open` by hand"}}
	}
	if v < need {
		return []Problem{{Fail, "fs.nr_open",
			fmt.Sprintf("per-process ceiling %d < %d needed: no RLIMIT_NOFILE can exceed it", v, need),
			fmt.Sprintf("as root: `sysctl -w fs.nr_open=%d` (persist in /etc/sysctl.d/), then raise RLIMIT_NOFILE", need)}}
	}
	return nil
}

func (h Host) checkFileMax(p Plan) []Problem {
	fileMax, err := readUint(filepath.Join(h.ProcDir, "sys/fs/file-max"))
	if err != nil {
		return []Problem{{Warn, "fs.file-max", err.Error(), "check `sysctl fs.file-max` by hand"}}
	}
	var inUse uint64
	if b, err := os.ReadFile(filepath.Join(h.ProcDir, "sys/fs/file-nr")); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			inUse, _ = strconv.ParseUint(f[0], 10, 64)
		}
	}
	perConn := uint64(1)
	if p.LocalServer {
		perConn = 2
	}
	want := inUse + perConn*uint64(p.Conns) + uint64(p.Headroom)
	if fileMax < want {
		return []Problem{{Fail, "fs.file-max",
			fmt.Sprintf("host-wide file limit %d < %d (%d in use + %d per connection × %d)", fileMax, want, inUse, perConn, p.Conns),
			fmt.Sprintf("as root: `sysctl -w fs.file-max=%d` (persist in /etc/sysctl.d/)", 2*want)}}
	}
	return nil
}

func (h Host) checkPorts(p Plan) []Problem {
	path := filepath.Join(h.ProcDir, "sys/net/ipv4/ip_local_port_range")
	b, err := os.ReadFile(path)
	if err != nil {
		return []Problem{{Warn, "net.ipv4.ip_local_port_range", err.Error(), "check `sysctl net.ipv4.ip_local_port_range` by hand"}}
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return []Problem{{Warn, "net.ipv4.ip_local_port_range", fmt.Sprintf("cannot parse %q", b), "check it by hand"}}
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return []Problem{{Warn, "net.ipv4.ip_local_port_range", fmt.Sprintf("cannot parse %q", b), "check it by hand"}}
	}
	ports := hi - lo + 1
	pairs := max(p.Sources, 1) * max(p.Destinations, 1)
	perPair := (p.Conns + pairs - 1) / pairs
	const fixRange = "as root: `sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"`"
	if perPair > ports {
		needSrc := (p.Conns + ports*max(p.Destinations, 1) - 1) / (ports * max(p.Destinations, 1))
		return []Problem{{Fail, "net.ipv4.ip_local_port_range",
			fmt.Sprintf("%d ephemeral ports (%d-%d) per (source, destination) pair, but %d conns over %d sources × %d destinations need %d per pair",
				ports, lo, hi, p.Conns, p.Sources, p.Destinations, perPair),
			fmt.Sprintf("use at least %d source addresses (e.g. 127.0.1.0/24 gives 254) with IP_BIND_ADDRESS_NO_PORT, or %s", needSrc, fixRange)}}
	}
	if perPair > ports/2 {
		return []Problem{{Warn, "net.ipv4.ip_local_port_range",
			fmt.Sprintf("%d of %d ports per (source, destination) pair in use: connect(2) port search slows down as the range fills", perPair, ports),
			"add source addresses, or " + fixRange}}
	}
	return nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return v, nil
}
