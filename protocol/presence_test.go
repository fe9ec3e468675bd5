package protocol

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/presence"
)

// frames returns the recorder's frames as strings.
func (r *recorder) texts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.frames))
	for i, f := range r.frames {
		out[i] = string(f)
	}
	return out
}

func (r *recorder) waitFor(t *testing.T, sub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, f := range r.texts() {
			if strings.Contains(f, sub) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no frame with %q in %q", sub, r.texts())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPresenceOps: subscribing to a presence channel makes a token's
// user present (anonymous connections only counted); the presence ops
// answer by channel permission; join and leave events reach the other
// subscribers; a reconnect within the grace period emits nothing.
func TestPresenceOps(t *testing.T) {
	var h *Handler
	var mu sync.Mutex
	var events []presence.Event
	tr, err := presence.NewTracker(presence.Config{
		Store: presence.NewMemoryStore(), Flush: 10 * time.Millisecond, Grace: 300 * time.Millisecond,
		EventChannels: []string{"room:*"},
		Emit: func(ev presence.Event) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
			h.PresenceEvent(ev)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tr.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	e := newEnv(t, Config{Public: []string{"room:*", "plain"}, Presence: tr, PresenceChannels: []string{"room:*"}})
	h = e.h
	user := func(sub string) (*session, *recorder) {
		r := &recorder{}
		return newSession(e.h, r, urlRequest{}, auth.Grant{Subject: sub}), r
	}
	alice, ra := user("alice")
	bob, rb := user("bob")
	anon, _ := e.session(fanout.FormatJSON)
	for _, s := range []*session{alice, bob, anon} {
		e.h.handle(s, ws.OpText, []byte(`{"op":"sub","ch":"room:1"}`))
	}
	ra.waitFor(t, `{"op":"join","ch":"room:1","user":"bob"}`)
	e.h.handle(anon, ws.OpText, []byte(`{"op":"presence_stats","ch":"room:1"}`))
	e.h.handle(anon, ws.OpText, []byte(`{"op":"presence","ch":"room:1","limit":10}`))
	e.h.handle(anon, ws.OpText, []byte(`{"op":"presence","ch":"plain"}`))
	e.h.handle(anon, ws.OpText, []byte(`{"op":"presence","ch":"room:1","limit":0}`))
	e.h.handle(anon, ws.OpText, []byte(`{"op":"presence","ch":"room:1","cursor":-1}`))
	got := anon.w.(*recorder).texts()
	for _, want := range []string{
		`{"op":"presence_stats","ch":"room:1","conns":3,"users":2}`,
		`{"op":"presence","ch":"room:1","users":["alice","bob"],"cursor":0}`,
		`{"op":"err","ch":"plain","code":404,"reason":"presence is not enabled for this channel"}`,
		`"limit\" must be an integer from 1 to 1000"`,
		`"cursor\" must be an integer`,
	} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("no %s in %q", want, got)
		}
	}
	// Not allowed to subscribe: 403, even on a presence channel.
	e.h.cfg.PresenceChannels = append(e.h.cfg.PresenceChannels, "secret:*")
	e.h.handle(anon, ws.OpText, []byte(`{"op":"presence","ch":"secret:1"}`))
	anon.w.(*recorder).waitFor(t, `"ch":"secret:1","code":403`)

	// bob reconnects within the grace period: no leave, no join.
	bob.closeAll()
	bob2, _ := user("bob")
	e.h.handle(bob2, ws.OpText, []byte(`{"op":"sub","ch":"room:1"}`))
	time.Sleep(600 * time.Millisecond) // two grace periods
	// bob leaves for good: alice gets the leave after the grace.
	bob2.closeAll()
	ra.waitFor(t, `{"op":"leave","ch":"room:1","user":"bob"}`)
	mu.Lock()
	var kinds []string
	for _, ev := range events {
		kinds = append(kinds, ev.Kind.String()+":"+ev.User)
	}
	mu.Unlock()
	if strings.Join(kinds, ",") != "join:alice,join:bob,leave:bob" && strings.Join(kinds, ",") != "join:bob,join:alice,leave:bob" {
		t.Fatalf("events %v: want one join each and one leave of bob (the reconnect within grace emits nothing)", kinds)
	}
	if n := strings.Count(strings.Join(rb.texts(), ""), `"op":"join"`); n == 0 {
		t.Fatalf("bob got no join event: %q", rb.texts())
	}
	// unsub makes alice leave too; the anonymous connection is only counted.
	e.h.handle(alice, ws.OpText, []byte(`{"op":"unsub","ch":"room:1"}`))
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := tr.Stats(context.Background(), "room:1")
		if st == (presence.Stats{Conns: 1, Users: 0}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats after everyone but the anonymous one left: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
