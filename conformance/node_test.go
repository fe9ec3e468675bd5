package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// nodePeer returns the node binary and the peer script, failing t when
// Node or the npm packages are missing.
func nodePeer(t *testing.T) (node, script string) {
	t.Helper()
	skipPeer(t, "node")
	node, err := exec.LookPath("node")
	if err != nil {
		missingPeer(t, "node (Node >= 20.18.1)", err)
	}
	dir := moduleDir(t, "node")
	for _, m := range []string{"ws", "undici"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", m, "package.json")); err != nil {
			missingPeer(t, "npm package "+m+" in conformance/node/node_modules", err)
		}
	}
	return node, filepath.Join(dir, "peer.js")
}

// TestNodePeers judges pushd with the npm clients ws and undici: echo
// sizes, fragmented sends with pings between the fragments and pong
// payloads (ws only: undici has the browser API), and close codes.
func TestNodePeers(t *testing.T) {
	t.Parallel()
	node, script := nodePeer(t)
	p := startEcho(t)
	for _, client := range []string{"ws", "undici"} {
		t.Run(client, func(t *testing.T) {
			t.Parallel()
			// The peer goes through a recording proxy so the test can
			// see the frames ws really sent.
			proxy := startRecProxy(t, p.WSAddr, 4<<20)
			argv := []string{node, script, client, "cases", "ws://" + proxy.addr() + "/" + client}
			var want []string
			for _, kind := range []string{"text", "binary"} {
				for _, n := range echoSizes {
					want = append(want, fmt.Sprintf("echo-%s-%d", kind, n))
				}
			}
			for _, n := range echoSizes {
				argv = append(argv, fmt.Sprint(n))
			}
			codes := browserCloseCodes[:]
			if client == "ws" {
				codes = validCloseCodes[:]
				want = append(want, "frag-text-65536", "frag-binary-1048576", "ping-empty", "ping-text", "ping-125")
			}
			for _, c := range codes {
				want = append(want, fmt.Sprintf("close-%d", c))
			}
			res := runScript(t, raceScale(2*time.Minute), nil, argv...)
			judgeScript(t, client, res, want)
			if client == "ws" {
				frames, pings := proxy.fragmentation(t)
				if frames < 3 || pings < 2 {
					t.Errorf("ws: largest fragmented message went out in %d frames with %d pings between them, want >= 3 and >= 2", frames, pings)
				}
				t.Logf("%s sent a message in %d fragments with %d pings between them", "ws", frames, pings)
			}
		})
	}
}
