package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/panjf2000/ants/v2"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/protocol"
)

// pushApp is the pushd.v1 server behind the poller: the embedded memory
// broker, the hub and the protocol handler. One delivery path: POST
// /publish → broker → hub → subscribers.
type pushApp struct {
	broker     *cluster.Memory
	hub        *fanout.Hub
	handler    *protocol.Handler
	maxPublish int64
}

// newPushApp wires broker, hub and handler. The hub shares the worker
// pool with netpoll's Runner: both fall back to running work elsewhere
// when it is full (netpoll: a goroutine; the hub: inline), so sharing
// never drops a task and keeps one bound on worker goroutines.
func newPushApp(cfg Config, pool *ants.Pool, log *slog.Logger) (*pushApp, error) {
	historySize := cfg.HistorySize
	if historySize == 0 {
		historySize = -1 // cluster: negative keeps none
	}
	mem, err := cluster.NewMemory(cluster.MemoryConfig{HistorySize: historySize, HistoryTTL: cfg.HistoryTTL})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	hub, err := fanout.New(fanout.Config{
		Broker:    mem,
		Pool:      pool,
		ChunkSize: cfg.ChunkSize,
		Policies:  cfg.policyRules,
		Logger:    log,
	})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	mem.Attach(hub)
	h, err := protocol.New(protocol.Config{
		Hub:              hub,
		Public:           cfg.publicPatterns,
		MaxSubscriptions: cfg.MaxSubscriptions,
		Logger:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("protocol: %w", err)
	}
	return &pushApp{broker: mem, hub: hub, handler: h, maxPublish: cfg.MaxPublishBytes}, nil
}

// run starts the hub's and the broker's sweep loops; they stop with ctx or
// shutdown.
func (a *pushApp) run(ctx context.Context, wg *sync.WaitGroup, errc chan<- error) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := a.hub.Run(ctx); err != nil {
			errc <- err
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.broker.Run(ctx); err != nil {
			errc <- err
		}
	}()
}

func (a *pushApp) shutdown(ctx context.Context) error {
	return errors.Join(a.hub.Shutdown(ctx), a.broker.Shutdown(ctx))
}
