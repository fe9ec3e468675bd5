package main

import (
	"testing"

	"github.com/pushd/pushd/poller"
)

type drainEcho struct{ poller.Echo }

func (drainEcho) Drained(*poller.Conn) {}

type respondEcho struct{ poller.Echo }

func (respondEcho) Respond(*poller.Request) (int, string, []byte, bool) { return 200, "", nil, true }

type bothEcho struct{ drainEcho }

func (bothEcho) Respond(*poller.Request) (int, string, []byte, bool) { return 200, "", nil, true }

// TestObservedHandlerCapabilities: the wrapper offers poller.Drainer and
// poller.HTTPResponder exactly when the wrapped handler does.
func TestObservedHandlerCapabilities(t *testing.T) {
	m := newMetrics()
	for _, tc := range []struct {
		name             string
		inner            poller.Handler
		drainer, respond bool
	}{
		{"echo", poller.Echo{}, false, false},
		{"drainer", drainEcho{}, true, false},
		{"responder", respondEcho{}, false, true},
		{"both", bothEcho{}, true, true},
	} {
		h := newObservedHandler(tc.inner, m)
		_, d := h.(poller.Drainer)
		r, ok := h.(poller.HTTPResponder)
		if d != tc.drainer || ok != tc.respond {
			t.Errorf("%s: Drainer %v HTTPResponder %v, want %v %v", tc.name, d, ok, tc.drainer, tc.respond)
		}
		if ok {
			if status, _, _, served := r.Respond(&poller.Request{URI: "/"}); status != 200 || !served {
				t.Errorf("%s: Respond not forwarded", tc.name)
			}
		}
	}
}
