package protocol

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/codec"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/poller"
	"github.com/pushd/pushd/presence"
)

// recorder is a wire that keeps every frame (budget: unbounded).
type recorder struct {
	mu     sync.Mutex
	frames [][]byte
	closed ws.StatusCode
}

func (r *recorder) Send(b []byte) error { return r.Queue(b) }
func (r *recorder) Flush()              {}
func (r *recorder) Queue(b []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed != 0 {
		return poller.ErrClosed
	}
	r.frames = append(r.frames, b)
	return nil
}
func (r *recorder) Close(code ws.StatusCode, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed != 0 {
		return poller.ErrClosed
	}
	r.closed = code
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.frames)
}

// reply decodes frame i as a JSON reply.
func (r *recorder) reply(t testing.TB, i int) map[string]any {
	t.Helper()
	r.mu.Lock()
	b := r.frames[i]
	r.mu.Unlock()
	h, n, err := codec.ParseHeader(b)
	if err != nil || h.OpCode != ws.OpText || int64(len(b)-n) != h.Length {
		t.Fatalf("frame %d is not one text frame: %v % x", i, err, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b[n:], &m); err != nil {
		t.Fatalf("frame %d %q is not JSON: %v", i, b[n:], err)
	}
	return m
}

type testEnv struct {
	h   *Handler
	hub *fanout.Hub
	mem *cluster.Memory
}

func newEnv(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	mem, err := cluster.NewMemory(cluster.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := fanout.New(fanout.Config{Broker: mem})
	if err != nil {
		t.Fatal(err)
	}
	mem.Attach(hub)
	cfg.Hub = hub
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{h: h, hub: hub, mem: mem}
}

func (e *testEnv) session(format fanout.Format) (*session, *recorder) {
	r := &recorder{}
	return newSession(e.h, r, urlRequest{format: format}, auth.Grant{}), r
}

func TestSessionOps(t *testing.T) {
	e := newEnv(t, Config{Public: []string{"room:*", "news"}, MaxSubscriptions: 2, MaxErrors: 5})
	s, r := e.session(fanout.FormatJSON)
	steps := []struct {
		in   string
		want string // substring of the reply
	}{
		{`{"op":"ping"}`, `"op":"pong"`},
		{`{"op":"sub","ch":"room:1"}`, `"op":"subok","ch":"room:1","epoch":"`},
		{`{"op":"sub","ch":"room:1"}`, `"code":400`},
		{`{"op":"sub","ch":"secret"}`, `"code":403`},
		{`{"op":"sub","ch":"news","since":0}`, `"op":"subok","ch":"news"`},
		{`{"op":"sub","ch":"room:2"}`, `"code":429`},
		{`{"op":"unsub","ch":"room:9"}`, `"code":404`},
		{`{"op":"unsub","ch":"room:1"}`, `"op":"unsubok","ch":"room:1"`},
	}
	for i, st := range steps {
		e.h.handle(s, ws.OpText, []byte(st.in))
		if r.count() != i+1 {
			t.Fatalf("step %d %s: %d frames, want %d", i, st.in, r.count(), i+1)
		}
		r.mu.Lock()
		got := string(r.frames[i])
		r.mu.Unlock()
		if !strings.Contains(got, st.want) {
			t.Errorf("step %d %s: reply %q, want ~%q", i, st.in, got, st.want)
		}
	}
	// A push on news reaches the session; room:1 was unsubscribed.
	_, _ = e.mem.Publish(context.Background(), "room:1", []byte(`1`))
	_, _ = e.mem.Publish(context.Background(), "news", []byte(`{"a":1}`))
	if r.count() != len(steps)+1 || !regexp.MustCompile(`{"ch":"news","epoch":"[0-9a-f]{10}","seq":1,"data":{"a":1}}$`).Match(r.frames[len(steps)]) {
		t.Fatalf("push: %q", r.frames[len(steps):])
	}
	// The subok of room:1 named the epoch of its (memory) stream and the
	// resume point.
	if m := r.reply(t, 1); m["seq"] != 0.0 || m["recovered"] != true || len(m["epoch"].(string)) != 10 {
		t.Errorf("subok %v", m)
	}
	// Binary and repeated abuse: err replies, then 1008.
	e.h.handle(s, ws.OpBinary, []byte{1, 2})
	if m := r.reply(t, r.count()-1); m["code"] != 400.0 {
		t.Errorf("binary message reply %v", m)
	}
	for range 10 {
		e.h.handle(s, ws.OpText, []byte(`{`))
	}
	if r.closed != StatusPolicyViolation {
		t.Errorf("closed with %d after repeated errors, want 1008", r.closed)
	}
	s.closeAll()
	if st := e.hub.Stats(); st.Subscriptions != 0 {
		t.Errorf("subscriptions after close: %d", st.Subscriptions)
	}
}

// FuzzRequest feeds newline-separated messages to one session: the parser
// never panics, every message gets exactly one well-formed reply (until
// the 1008 close), and refusals are {"op":"err"} with a known code.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"op":"ping"}`,
		`{"op":"sub","ch":"room:1","since":123}`,
		`{"op":"sub","ch":"room:1","since":123,"epoch":"6752a3b10f4240"}`,
		`{"op":"sub","ch":"room:1","epoch":"6752a3b10f4240"}`,
		`{"op":"sub","ch":"room:1","since":1,"epoch":"a:b"}`,
		`{"op":"sub","ch":"room:1","since":1,"epoch":["x"]}`,
		"{\"op\":\"sub\",\"ch\":\"a\"}\n{\"op\":\"unsub\",\"ch\":\"a\"}\n{\"op\":\"unsub\",\"ch\":\"a\"}",
		`{"op":"sub","ch":"a","since":99999999999999999999999}`,
		`{"op":"sub","ch":"a","since":-0}`,
		`{"op":"sub","ch":"a","since":1e3}`,
		`{"op":"frobnicate"}`,
		`{"op":"sub","ch":"\u0000"}`,
		`{"op":"sub","ch":"é"}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
		`{"op":"sub","ch":"a","op":"ping"}`,
		`{"OP":"PING"}`,
		"\xff\xfe",
		`null`,
		"{\"op\":\"sub\",\"ch\":\"room:1\"}\n{\"op\":\"presence\",\"ch\":\"room:1\",\"cursor\":1,\"limit\":5}\n{\"op\":\"presence_stats\",\"ch\":\"room:1\"}",
		`{"op":"presence","ch":"room:1","limit":1001}`,
		`{"op":"presence","ch":"plain","cursor":"x"}`,
	} {
		f.Add([]byte(seed))
	}
	// Presence on room:* through a Tracker that is not run (Join and Leave
	// only count; the ops read the store).
	tr, err := presence.NewTracker(presence.Config{Store: presence.NewMemoryStore()})
	if err != nil {
		f.Fatal(err)
	}
	e := newEnv(f, Config{MaxSubscriptions: 4, MaxErrors: 50, Presence: tr, PresenceChannels: []string{"room:*"}})
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := ParseRequest(data); err != nil {
			re, ok := err.(*RequestError)
			if !ok || re.Code != CodeBadRequest || re.Reason == "" {
				t.Fatalf("ParseRequest error %#v", err)
			}
		}
		s, r := e.session(fanout.FormatJSON)
		defer s.closeAll()
		for i, msg := range bytes.Split(data, []byte("\n")) {
			before := r.count()
			e.h.handle(s, ws.OpText, msg)
			if r.closed != 0 {
				if r.closed != StatusPolicyViolation {
					t.Fatalf("closed with %d", r.closed)
				}
				return
			}
			if got := r.count() - before; got != 1 {
				t.Fatalf("message %d %q: %d replies, want 1", i, msg, got)
			}
			m := r.reply(t, before)
			switch m["op"] {
			case "pong", "subok", "unsubok", "presence", "presence_stats":
			case "err":
				switch m["code"] {
				case 400.0, 403.0, 404.0, 429.0:
				default:
					t.Fatalf("err code %v", m["code"])
				}
				if reason, _ := m["reason"].(string); reason == "" {
					t.Fatalf("err without reason: %v", m)
				}
			default:
				t.Fatalf("message %q: unexpected reply %v", msg, m)
			}
		}
	})
}

// BenchmarkParseRequest measures the op parser (encoding/json).
func BenchmarkParseRequest(b *testing.B) {
	for _, in := range []string{`{"op":"ping"}`, `{"op":"sub","ch":"room:12345","since":123456}`} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, err := ParseRequest([]byte(in)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
