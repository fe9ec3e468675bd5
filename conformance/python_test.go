package conformance

import (
	"fmt"
	"os/exec"
	"testing"
	"time"
)

// pythonExe is Debian's interpreter: python3-websockets is installed for it,
// not for a pyenv python3 that may come first in PATH.
const pythonExe = "/usr/bin/python3"

// pythonPeer fails t when Debian's python3-websockets is missing.
func pythonPeer(t *testing.T) string {
	t.Helper()
	skipPeer(t, "python")
	out, err := exec.Command(pythonExe, "-c", "import websockets; print(websockets.__version__)").CombinedOutput()
	if err != nil {
		missingPeer(t, "Debian python3-websockets for "+pythonExe, fmt.Errorf("%v: %s", err, out))
	}
	t.Logf("python3-websockets %s", out)
	return moduleDir(t, "python/peer.py")
}

// TestPythonPeer judges pushd with Debian's python3-websockets: echo
// sizes up to 16 MiB, fragmented sends with pings answered mid-message,
// pings with payloads, close codes.
func TestPythonPeer(t *testing.T) {
	t.Parallel()
	script := pythonPeer(t)
	p := startEcho(t)
	proxy := startRecProxy(t, p.WSAddr, 4<<20)
	argv := []string{pythonExe, "-u", script, "cases", "ws://" + proxy.addr() + "/python"}
	var want []string
	for _, kind := range []string{"text", "binary"} {
		for _, n := range echoSizes {
			want = append(want, fmt.Sprintf("echo-%s-%d", kind, n))
		}
	}
	for _, n := range echoSizes {
		argv = append(argv, fmt.Sprint(n))
	}
	want = append(want, "frag-text-65536", "frag-binary-1048576", "ping-empty", "ping-text", "ping-125")
	for _, c := range validCloseCodes {
		want = append(want, fmt.Sprintf("close-%d", c))
	}
	res := runScript(t, raceScale(2*time.Minute), nil, argv...)
	judgeScript(t, "python3-websockets", res, want)
	frames, pings := proxy.fragmentation(t)
	if frames < 3 || pings < 2 {
		t.Errorf("python: largest fragmented message went out in %d frames with %d pings between them, want >= 3 and >= 2", frames, pings)
	}
	t.Logf("%s sent a message in %d fragments with %d pings between them", "python", frames, pings)
}
