package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/admin"
	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/presence"
)

// appControl is the server API's control channel: Redis pub/sub with
// -redis, -redis-sentinel or -redis-cluster, a direct call with the memory broker.
type appControl interface {
	admin.Controller
	Run(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// localControl adapts cluster.LocalControl (nothing to run).
type localControl struct{ cluster.LocalControl }

func (localControl) Run(context.Context) error      { return nil }
func (localControl) Shutdown(context.Context) error { return nil }

// newControl builds the control channel whose messages a's handler runs.
func (a *pushApp) newControl(log *slog.Logger) (appControl, error) {
	if a.redis == nil {
		return &localControl{cluster.LocalControl{Handle: a.handleControl}}, nil
	}
	return cluster.NewRedisControl(cluster.RedisControlConfig{Client: a.redis, Handle: a.handleControl, Logger: log})
}

// handleControl runs one server API call on this node's connections.
func (a *pushApp) handleControl(m cluster.ControlMsg) {
	var n int
	switch m.Op {
	case cluster.ControlPresenceJoin, cluster.ControlPresenceLeave:
		kind := presence.KindJoin
		if m.Op == cluster.ControlPresenceLeave {
			kind = presence.KindLeave
		}
		a.handler.PresenceEvent(presence.Event{Kind: kind, Channel: m.Ch, User: m.User})
		return // events are frequent: not logged
	case cluster.ControlDisconnect:
		n = a.handler.DisconnectUser(m.User, ws.StatusCode(m.Code), m.Reason, m.AfterMs)
	case cluster.ControlSubscribe:
		n = a.handler.SubscribeUser(m.User, m.Ch)
	case cluster.ControlUnsubscribe:
		reason := m.Reason
		if reason == "" {
			reason = "unsubscribed by the server"
		}
		n = a.handler.UnsubscribeUser(m.User, m.Ch, reason)
	}
	a.log.Info("server API call", "op", m.Op, "user", m.User, "ch", m.Ch, "connections", n)
}

// runControl starts the control channel's goroutine (Redis).
func (a *pushApp) runControl(ctx context.Context, wg *sync.WaitGroup, errc chan<- error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.control.Run(ctx); err != nil {
			errc <- err
		}
	}()
}

// nodeInfo is GET /api/node.
func (a *pushApp) nodeInfo() any {
	hs := a.hub.Stats()
	return map[string]any{
		"users":         a.handler.Users(),
		"channels":      hs.Channels,
		"subscriptions": hs.Subscriptions,
		"broker_ready":  a.ready(),
	}
}
