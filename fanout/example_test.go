package fanout_test

import (
	"context"
	"fmt"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/codec"
	"github.com/pushd/pushd/fanout"
)

// printSub is a Subscriber that prints each frame's payload.
type printSub struct{}

func (printSub) Queue(frame []byte) error {
	_, n, _ := codec.ParseHeader(frame)
	fmt.Printf("%s\n", frame[n:])
	return nil
}
func (printSub) Flush()                                   {}
func (printSub) Close(code ws.StatusCode, _ string) error { return nil }

// Example wires the memory broker and a hub, subscribes after a first
// publication (recovered with since=0) and publishes live. The epoch is
// fixed here; by default each channel gets a random one.
func Example() {
	mem, _ := cluster.NewMemory(cluster.MemoryConfig{NewEpoch: func() string { return "7f3ac1d2e4" }})
	hub, _ := fanout.New(fanout.Config{Broker: mem})
	mem.Attach(hub)
	ctx := context.Background()

	_, _ = mem.Publish(ctx, "login:7f3a", []byte(`{"user":42}`))
	since := uint64(0)
	_, res, _ := hub.Subscribe(ctx, printSub{}, "login:7f3a", fanout.SubscribeOptions{
		Since: &since,
		Ack: func(r fanout.SubscribeResult) []byte {
			return codec.CompileFrame(ws.OpText, fmt.Appendf(nil, "subok epoch=%s seq=%d recovered=%v", r.Epoch, r.Seq, r.Recovered))
		},
	})
	_, _ = mem.Publish(ctx, "login:7f3a", []byte(`done`))
	fmt.Println("resume point:", res.Epoch, res.Seq)
	// Output:
	// subok epoch=7f3ac1d2e4 seq=1 recovered=true
	// {"ch":"login:7f3a","epoch":"7f3ac1d2e4","seq":1,"data":{"user":42}}
	// {"ch":"login:7f3a","epoch":"7f3ac1d2e4","seq":2,"data":"done"}
	// resume point: 7f3ac1d2e4 1
}
