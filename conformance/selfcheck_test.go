package conformance

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// gorillaReferenceEcho is a reference echo server built on gorilla's
// server side, written after gorilla's examples/autobahn (UTF-8 checked in
// application code). It exists only so TestRawClientSelfCheck can show that
// the raw-frame client and its expectations agree with an independent
// server; it never judges pushd.
func gorillaReferenceEcho(t *testing.T) string {
	t.Helper()
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadLimit(maxSize)
		c.SetCloseHandler(func(code int, _ string) error {
			if code == websocket.CloseNoStatusReceived {
				code = websocket.CloseNormalClosure
			}
			return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		})
		for {
			mt, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			if mt == websocket.TextMessage && !utf8.Valid(b) {
				_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInvalidFramePayloadData, ""), time.Now().Add(time.Second))
				return
			}
			if err := c.WriteMessage(mt, b); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// gorillaDeviations are the raw cases gorilla's server is known to get
// wrong (see /work/shared/CONFORMANCE.md §4); the self-check leaves them out.
func gorillaDeviations() map[string]string {
	return map[string]string{
		"violations/64-bit-length-msb-fails":                    "drops TCP without a close frame",
		"7-close/7.3.2-one-byte-close-payload-fails":            "takes a 1-byte close payload as no status",
		"7-close/7.5.1-invalid-utf8-reason-fails":               "closes with 1002, not 1007",
		"7-close/7.5.x-truncated-utf8-reason-fails":             "closes with 1002, not 1007",
		"6-utf8/6.4.1-fail-fast-fragment":                       "checks UTF-8 only on whole messages",
		"6-utf8/6.4.2-fail-fast-inside-code-point":              "checks UTF-8 only on whole messages",
		"6-utf8/6.4.3-fail-fast-within-frame":                   "checks UTF-8 only on whole messages",
		"6-utf8/6.4.4-fail-fast-within-frame-inside-code-point": "checks UTF-8 only on whole messages",
		"6-utf8/6.4.x-fail-fast-long-message":                   "checks UTF-8 only on whole messages",
		"6-utf8/6.4.x-fail-fast-long-fragmented-message":        "checks UTF-8 only on whole messages",
	}
}

// TestRawClientSelfCheck runs the raw-frame cases against gorilla's server
// instead of pushd: every case gorilla implements must pass, which shows
// a failure against pushd is pushd's and not the raw client's.
func TestRawClientSelfCheck(t *testing.T) {
	t.Parallel()
	runRawGroups(t, gorillaReferenceEcho(t), gorillaDeviations())
}
