package fanout_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
)

// TestResumeAcrossEpochs: a resume with the channel's epoch recovers
// exactly the missed publications; one with another epoch (the stream was
// recreated: a restart, a flush) is told recovered:false and gets every
// retained publication of the current epoch from its start, never
// filtered as duplicates of the old numbering.
func TestResumeAcrossEpochs(t *testing.T) {
	h, m := newHub(t, fanout.Config{}, cluster.MemoryConfig{NewEpoch: func() string { return "new" }})
	for _, p := range []string{"1", "2", "3"} {
		publish(t, m, "ep", p)
	}
	for _, tc := range []struct {
		name      string
		since     uint64
		epoch     string
		recovered bool
		want      []string
	}{
		{"same epoch", 1, "new", true, []string{"2", "3"}},
		{"no epoch", 1, "", true, []string{"2", "3"}},
		{"old epoch, since above top", 5, "old", false, []string{"1", "2", "3"}},
		{"old epoch, since below top", 2, "old", false, []string{"1", "2", "3"}},
		{"old epoch, since 0", 0, "old", false, []string{"1", "2", "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeSub(0)
			f.keep = true
			s, res := subscribe(t, h, f, "ep", fanout.SubscribeOptions{Format: fanout.FormatRaw, Since: u64(tc.since), Epoch: tc.epoch, Ack: ackFrame})
			defer h.Unsubscribe(s)
			if res.Epoch != "new" || res.Seq != 3 || res.Recovered != tc.recovered {
				t.Errorf("result %+v, want epoch new seq 3 recovered %v", res, tc.recovered)
			}
			if got := f.payloads(t)[1:]; !slices.Equal(got, tc.want) {
				t.Errorf("recovered %q, want %q", got, tc.want)
			}
		})
	}
}

// epochBroker is a Broker whose history is set by the test, so that a test
// can hand the hub publications of a recreated stream directly.
type epochBroker struct {
	mu sync.Mutex
	hr fanout.HistoryResult
}

func (b *epochBroker) Publish(context.Context, string, []byte) (uint64, error) { return 0, nil }
func (b *epochBroker) Subscribe(context.Context, string) error                 { return nil }
func (b *epochBroker) Unsubscribe(context.Context, string) error               { return nil }
func (b *epochBroker) History(context.Context, string, *uint64) (fanout.HistoryResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hr, nil
}

// TestLiveEpochChange: subscribers that joined at (e1, 5) receive the
// recreated stream's publications (e2, 1..3) instead of dropping them as
// duplicates, and a subscriber joining afterwards on the fast path resumes
// from (e2, 3).
func TestLiveEpochChange(t *testing.T) {
	b := &epochBroker{hr: fanout.HistoryResult{Top: 5, Epoch: "e1", Recovered: true}}
	h, err := fanout.New(fanout.Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeSub(0)
	f.keep = true
	subscribe(t, h, f, "ch", fanout.SubscribeOptions{Format: fanout.FormatRaw, Since: u64(5), Epoch: "e1", Ack: ackFrame})
	h.HandlePublication(fanout.Publication{Channel: "ch", Epoch: "e1", Seq: 5, Data: []byte("dup")})
	h.HandlePublication(fanout.Publication{Channel: "ch", Epoch: "e1", Seq: 6, Data: []byte("6")})
	for i, d := range []string{"a", "b", "c"} {
		h.HandlePublication(fanout.Publication{Channel: "ch", Epoch: "e2", Seq: uint64(i + 1), Data: []byte(d)})
	}
	if got, want := f.payloads(t), []string{"subok:5:true", "6", "a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("frames %q, want %q", got, want)
	}
	g := newFakeSub(0)
	g.keep = true
	_, res := subscribe(t, h, g, "ch", fanout.SubscribeOptions{Format: fanout.FormatRaw})
	if res.Epoch != "e2" || res.Seq != 3 {
		t.Errorf("fast path result %+v, want (e2, 3)", res)
	}
	h.HandlePublication(fanout.Publication{Channel: "ch", Epoch: "e2", Seq: 4, Data: []byte("d")})
	if got := g.payloads(t); !slices.Equal(got, []string{"d"}) {
		t.Errorf("late subscriber frames %q", got)
	}
}
