package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/presence"
	"github.com/pushd/pushd/protocol"
)

// pushApp is the pushd.v1 server behind the poller: the broker (the
// embedded memory broker, or Redis with -redis / -redis-sentinel / -redis-cluster), the hub
// and the protocol handler. One delivery path: POST /publish → broker →
// hub → subscribers.
type pushApp struct {
	broker     appBroker
	redis      redis.UniversalClient // nil with the memory broker; closed after the broker
	hub        *fanout.Hub
	handler    *protocol.Handler
	auth       *authHolder // nil without tokens and Origin policy
	maxPublish int64
	control    appControl        // server API calls to every node (control.go)
	jwksCancel func()            // stops the -jwt-jwks-url refresh goroutine
	presence   *presence.Tracker // nil without -presence
	// presencePatterns are the -presence channel patterns.
	presencePatterns []string
	log              *slog.Logger
}

// appBroker is what the process needs of a cluster broker.
type appBroker interface {
	fanout.Broker
	Attach(h fanout.PublicationHandler)
	Run(ctx context.Context) error
	Shutdown(ctx context.Context) error
	Channels() int
}

// ready reports whether the broker path works (/readyz). The memory broker
// is always ready; the Redis broker follows its canary.
func (a *pushApp) ready() bool {
	if r, ok := a.broker.(interface{ Ready() bool }); ok {
		return r.Ready()
	}
	return true
}

// brokerReady returns the broker's readiness check, nil for a broker that
// is always ready (the memory broker).
func brokerReady(br appBroker) func() bool {
	if r, ok := br.(interface{ Ready() bool }); ok {
		return r.Ready
	}
	return nil
}

// newBroker builds the memory broker, or the Redis broker and its client
// when -redis, -redis-sentinel or -redis-cluster is set.
func newBroker(cfg Config, historySize int, log *slog.Logger) (appBroker, redis.UniversalClient, error) {
	if !cfg.redis.enabled() {
		mem, err := cluster.NewMemory(cluster.MemoryConfig{HistorySize: historySize, HistoryTTL: cfg.HistoryTTL})
		return mem, nil, err
	}
	// go-redis logs through a process-wide logger (pool dial errors while
	// Redis is down): route it into slog, rate-limited.
	redis.SetLogger(&redisLogger{log: log, limit: newRateLimit(5, time.Second)})
	client := cfg.redis.client()
	rb, err := cluster.NewRedis(cluster.RedisConfig{
		Client:      client,
		HistorySize: historySize,
		HistoryTTL:  cfg.HistoryTTL,
		Logger:      log,

		PubSubConns:        cfg.RedisPubSubConns,
		IngestChannelBytes: cfg.RedisIngestChannelBytes,
		IngestNodeBytes:    cfg.RedisIngestNodeBytes,
	})
	if err != nil {
		_ = client.Close()
		return nil, nil, err
	}
	return rb, client, nil
}

// newPushApp wires broker, hub and handler. The hub shares the worker
// pool with netpoll's Runner: both fall back to running work elsewhere
// when it is full (netpoll: a goroutine; the hub: inline), so sharing
// never drops a task and keeps one bound on worker goroutines.
func newPushApp(cfg Config, pool *ants.Pool, m *metrics, log *slog.Logger) (*pushApp, error) {
	historySize := cfg.HistorySize
	if historySize == 0 {
		historySize = -1 // cluster: negative keeps none
	}
	br, rc, err := newBroker(cfg, historySize, log)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	hub, err := fanout.New(fanout.Config{
		Broker:    br,
		Pool:      pool,
		ChunkSize: cfg.ChunkSize,
		Policies:  cfg.policyRules,
		Deflate:   cfg.deflateConfig(),
		Logger:    log,
		// The fan-out duration histogram: one Observe per delivered batch.
		ObserveDelivery: m.observeDelivery,
	})
	if err != nil {
		if rc != nil {
			_ = rc.Close()
		}
		return nil, fmt.Errorf("hub: %w", err)
	}
	br.Attach(hub)
	pcfg := protocol.Config{
		Hub:              hub,
		Public:           cfg.publicPatterns,
		MaxSubscriptions: cfg.MaxSubscriptions,
		MaxMessageRate:   cfg.MaxMessageRate,
		MaxMessageBurst:  cfg.MaxMessageBurst,
		// New connections wait for the broker path (/readyz's condition):
		// 503 + Retry-After until Redis is reached, and while it is lost.
		Ready:  brokerReady(br),
		Logger: log,
	}
	var holder *authHolder
	jwksCtx, jwksCancel := context.WithCancel(context.Background())
	if cfg.JWTJWKSURL != "" {
		// The JWKS refresh goroutine lives until shutdown (jwksCancel).
		if cfg.jwks, err = auth.NewJWKS(jwksCtx, auth.JWKSConfig{URL: cfg.JWTJWKSURL, Refresh: cfg.JWTJWKSRefresh, Logger: log}); err != nil {
			jwksCancel()
			return nil, fmt.Errorf("auth: %w", err)
		}
		m.attachJWKS(cfg.jwks)
	}
	a, err := cfg.authenticator()
	if err != nil {
		jwksCancel()
		return nil, fmt.Errorf("auth: %w", err)
	}
	if a != nil {
		holder = &authHolder{jwks: cfg.jwks}
		holder.cur.Store(a)
		pcfg.Auth = holder
	}
	app := &pushApp{broker: br, redis: rc, hub: hub, auth: holder, maxPublish: cfg.MaxPublishBytes, log: log, jwksCancel: jwksCancel, presencePatterns: cfg.presencePatterns}
	if app.presence, err = app.newPresence(cfg, log); err != nil {
		jwksCancel()
		return nil, fmt.Errorf("presence: %w", err)
	}
	if app.presence != nil {
		pcfg.Presence, pcfg.PresenceChannels = app.presence, cfg.presencePatterns
	}
	if app.handler, err = protocol.New(pcfg); err != nil {
		jwksCancel()
		return nil, fmt.Errorf("protocol: %w", err)
	}
	if app.control, err = app.newControl(log); err != nil {
		return nil, fmt.Errorf("control channel: %w", err)
	}
	return app, nil
}

// run starts the hub's and the broker's sweep loops; they stop with ctx or
// shutdown.
func (a *pushApp) run(ctx context.Context, wg *sync.WaitGroup, errc chan<- error) {
	a.runControl(ctx, wg, errc)
	if a.presence != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.presence.Run(ctx); err != nil {
				errc <- err
			}
		}()
	}
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
	a.jwksCancel()
	var perr error
	if a.presence != nil {
		// First: it removes this node's members while Redis is still open.
		perr = a.presence.Shutdown(ctx)
	}
	err := errors.Join(perr, a.control.Shutdown(ctx), a.hub.Shutdown(ctx), a.broker.Shutdown(ctx))
	if a.redis != nil {
		err = errors.Join(err, a.redis.Close())
	}
	return err
}

// redisLogger routes go-redis's internal log lines into slog, at most a
// few per second (a Redis outage makes every pool dial log).
type redisLogger struct {
	log   *slog.Logger
	limit *rateLimit
}

func (l *redisLogger) Printf(_ context.Context, format string, v ...any) {
	if l.limit.allow() {
		l.log.Warn("go-redis", "line", fmt.Sprintf(format, v...))
	}
}
