package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/presence"
	"github.com/pushd/pushd/protocol"
)

// presenceFlags registers the presence flags (package presence).
func presenceFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Presence, "presence", "", "comma-separated channel patterns with presence: who is subscribed (token sub; anonymous connections counted, not listed), cluster-wide; ops presence/presence_stats, GET /api/presence and /api/presence/stats (empty: none)")
	fs.StringVar(&c.PresenceEvents, "presence-events", "", "comma-separated patterns of presence channels whose subscribers get join/leave events (empty: none)")
	fs.DurationVar(&c.PresenceHeartbeat, "presence-heartbeat", presence.DefaultHeartbeat, "how often a node refreshes its presence entries in Redis; a dead node's members vanish within two heartbeats")
	fs.DurationVar(&c.PresenceGrace, "presence-grace", 2*time.Second, "a user whose last connection left stays present this long; a reconnect within it emits neither leave nor join (0: none)")
	fs.Float64Var(&c.PresenceEventRate, "presence-event-rate", presence.DefaultEventRate, "join/leave events per second a node may emit (burst twice that); the excess is dropped and counted")
}

// validatePresence parses the presence patterns.
func (c *Config) validatePresence() []error {
	var errs []error
	c.presencePatterns = splitList(c.Presence)
	c.presenceEventPatterns = splitList(c.PresenceEvents)
	for _, list := range []struct {
		flag string
		pats []string
	}{{"-presence", c.presencePatterns}, {"-presence-events", c.presenceEventPatterns}} {
		for _, p := range list.pats {
			if protocol.ValidChannel(strings.NewReplacer("*", "x", "?", "x").Replace(p)) != nil {
				errs = append(errs, fmt.Errorf("%s: bad pattern %q (printable ASCII, no spaces or commas)", list.flag, p))
			}
		}
	}
	if c.PresenceHeartbeat < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("-presence-heartbeat must be at least 10ms (got %v)", c.PresenceHeartbeat))
	}
	if c.PresenceGrace < 0 {
		errs = append(errs, fmt.Errorf("-presence-grace must not be negative (got %v)", c.PresenceGrace))
	}
	if c.PresenceEventRate <= 0 {
		errs = append(errs, fmt.Errorf("-presence-event-rate must be positive (got %v)", c.PresenceEventRate))
	}
	return errs
}

// newPresence builds the presence tracker (nil without -presence): on
// Redis with -redis / -redis-cluster, else in memory. Events go to every
// node through the control channel (a.control, set before Run).
func (a *pushApp) newPresence(cfg Config, log *slog.Logger) (*presence.Tracker, error) {
	if len(cfg.presencePatterns) == 0 {
		return nil, nil
	}
	var store presence.Store = presence.NewMemoryStore()
	if a.redis != nil {
		rp, err := cluster.NewRedisPresence(cluster.RedisPresenceConfig{Client: a.redis, Heartbeat: cfg.PresenceHeartbeat})
		if err != nil {
			return nil, err
		}
		store = rp
	}
	return presence.NewTracker(presence.Config{
		Store:         store,
		Heartbeat:     cfg.PresenceHeartbeat,
		Grace:         cfg.PresenceGrace,
		EventChannels: cfg.presenceEventPatterns,
		EventRate:     cfg.PresenceEventRate,
		Emit:          a.emitPresence,
		Logger:        log,
	})
}

// emitPresence sends a join or leave to every node (the tracker's
// goroutine; bounded by -presence-event-rate and a short timeout).
func (a *pushApp) emitPresence(ev presence.Event) {
	op := cluster.ControlPresenceJoin
	if ev.Kind == presence.KindLeave {
		op = cluster.ControlPresenceLeave
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.control.Send(ctx, cluster.ControlMsg{Op: op, User: ev.User, Ch: ev.Channel, AfterMs: -1}); err != nil && a.log.Enabled(ctx, slog.LevelDebug) {
		a.log.Debug("presence event not sent", "channel", ev.Channel, "err", err)
	}
}

// presenceEnabled reports whether ch is a presence channel.
func (a *pushApp) presenceEnabled(ch string) bool {
	return a.presence != nil && fanout.MatchAny(a.presencePatterns, ch)
}
