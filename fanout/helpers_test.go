package fanout_test

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/codec"
	"github.com/pushd/pushd/fanout"
)

// fakeSub is a Subscriber that records frame references into a
// preallocated ring (no allocation per Queue) and enforces a byte budget
// like the poller: a frame is refused past budget unless the queue is
// empty. Flush "writes" everything unless stalled.
type fakeSub struct {
	mu      sync.Mutex
	budget  int // 0: unbounded
	pending int
	stalled bool
	ring    [][]byte
	n       int // frames queued in total
	flushes int
	closed  bool
	code    ws.StatusCode
	log     [][]byte // every frame, when keep is set
	keep    bool
	// left, when set, counts down the frames a benchmark waits for; the
	// Queue that reaches zero signals done.
	left *atomic.Int64
	done chan struct{}
}

func newFakeSub(ringSize int) *fakeSub { return &fakeSub{ring: make([][]byte, ringSize)} }

func (f *fakeSub) Queue(b []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fanout.ErrClosed
	}
	if f.budget > 0 && f.pending > 0 && f.pending+len(b) > f.budget {
		return fanout.ErrQueueFull
	}
	f.pending += len(b)
	if len(f.ring) > 0 {
		f.ring[f.n%len(f.ring)] = b
	}
	if f.keep {
		f.log = append(f.log, b)
	}
	f.n++
	if f.left != nil && f.left.Add(-1) == 0 {
		f.done <- struct{}{}
	}
	return nil
}

func (f *fakeSub) Flush() {
	f.mu.Lock()
	f.flushes++
	if !f.stalled {
		f.pending = 0
	}
	f.mu.Unlock()
}

func (f *fakeSub) Close(code ws.StatusCode, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fanout.ErrClosed
	}
	f.closed, f.code = true, code
	return nil
}

// drain simulates the socket draining a stalled queue.
func (f *fakeSub) drain() {
	f.mu.Lock()
	f.stalled = false
	f.pending = 0
	f.mu.Unlock()
}

// payloads returns the frames kept so far, each without its header.
func (f *fakeSub) payloads(t *testing.T) []string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.log))
	for _, b := range f.log {
		out = append(out, string(framePayload(t, b)))
	}
	return out
}

// framePayload parses one complete server frame and returns its payload.
func framePayload(t testing.TB, b []byte) []byte {
	t.Helper()
	h, n, err := codec.ParseHeader(b)
	if err != nil {
		t.Fatalf("bad frame % x: %v", b, err)
	}
	if !h.Fin || int64(len(b)-n) != h.Length {
		t.Fatalf("frame %q: fin=%v length %d, have %d", b, h.Fin, h.Length, len(b)-n)
	}
	return b[n:]
}

// frameSeq extracts "seq":N from a JSON push frame (0 when absent).
func frameSeq(b []byte) uint64 {
	i := bytes.Index(b, []byte(`"seq":`))
	if i < 0 {
		return 0
	}
	j := i + len(`"seq":`)
	k := j
	for k < len(b) && b[k] >= '0' && b[k] <= '9' {
		k++
	}
	v, _ := strconv.ParseUint(string(b[j:k]), 10, 64)
	return v
}

// newHub builds a memory broker and a hub attached to it. Unless mcfg
// says otherwise, every channel's epoch is "e1".
func newHub(t testing.TB, cfg fanout.Config, mcfg cluster.MemoryConfig) (*fanout.Hub, *cluster.Memory) {
	t.Helper()
	if mcfg.NewEpoch == nil {
		mcfg.NewEpoch = func() string { return "e1" }
	}
	m, err := cluster.NewMemory(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Broker = m
	h, err := fanout.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(h)
	return h, m
}

func publish(t testing.TB, m *cluster.Memory, ch, data string) uint64 {
	t.Helper()
	seq, err := m.Publish(context.Background(), ch, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func subscribe(t testing.TB, h *fanout.Hub, sub fanout.Subscriber, ch string, opts fanout.SubscribeOptions) (*fanout.Subscription, fanout.SubscribeResult) {
	t.Helper()
	s, res, err := h.Subscribe(context.Background(), sub, ch, opts)
	if err != nil {
		t.Fatalf("subscribe %q: %v", ch, err)
	}
	return s, res
}

func ackFrame(res fanout.SubscribeResult) []byte {
	return codec.CompileFrame(ws.OpText, []byte("subok:"+strconv.FormatUint(res.Seq, 10)+":"+strconv.FormatBool(res.Recovered)))
}

func u64(v uint64) *uint64 { return &v }
