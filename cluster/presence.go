package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/presence"
)

// Presence keys (all in the channel's {hash tag}, so one Cluster slot and
// one script call per channel):
//
//	pushd:{<ch>}:p       zset: user → expiry (ms, Redis clock); present while expiry > now
//	pushd:{<ch>}:pn      zset: node → expiry; the nodes heartbeating the channel
//	pushd:{<ch>}:pc      hash: node → connections (anonymous included)
//	pushd:{<ch>}:pm:<n>  set:  users present through node n
//
// A node refreshes its users' expiry and its own every heartbeat to
// now + TTL (two heartbeats), so the members of a node that stops (kill
// -9, partition) vanish from listings and counts within two heartbeats,
// and the next heartbeat of any other node of the channel prunes them
// and reports them as left. Every key carries a TTL of at least TTL, so
// a channel whose nodes all die leaves nothing behind.

// presenceUpdateLua applies one node's batched change. KEYS: p, pn, pc,
// pm:<node>. ARGV: node, ttl ms, conns, number of adds, pm: prefix, adds...,
// removes.... Returns {joined, left}.
const presenceUpdateLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node, ttl, conns, nadd, prefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local exp = now + ttl
local joined, left = {}, {}
for i = 6, 5 + nadd do
  local u = ARGV[i]
  redis.call('SADD', KEYS[4], u)
  local s = redis.call('ZSCORE', KEYS[1], u)
  if not s or tonumber(s) <= now then joined[#joined + 1] = u end
  redis.call('ZADD', KEYS[1], 'GT', exp, u)
end
local live
for i = 6 + nadd, #ARGV do
  local u = ARGV[i]
  redis.call('SREM', KEYS[4], u)
  if not live then live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf') end
  local still = false
  for _, n in ipairs(live) do
    if n ~= node and redis.call('SISMEMBER', prefix .. n, u) == 1 then still = true break end
  end
  if not still then
    local s = redis.call('ZSCORE', KEYS[1], u)
    if s then
      redis.call('ZREM', KEYS[1], u)
      left[#left + 1] = u
    end
  end
end
if conns > 0 or redis.call('SCARD', KEYS[4]) > 0 then
  redis.call('ZADD', KEYS[2], exp, node)
  redis.call('HSET', KEYS[3], node, conns)
  redis.call('PEXPIRE', KEYS[4], ttl)
  for k = 1, 3 do
    if redis.call('PTTL', KEYS[k]) < ttl then redis.call('PEXPIRE', KEYS[k], ttl) end
  end
else
  redis.call('ZREM', KEYS[2], node)
  redis.call('HDEL', KEYS[3], node)
  redis.call('DEL', KEYS[4])
end
return {joined, left}
`

// presenceBeatLua refreshes a node's users and prunes dead nodes and
// expired users. KEYS: p, pn, pc, pm:<node>. ARGV: node, ttl ms, conns,
// reset (1: drop the node's list first), pm: prefix, users.... Returns the
// users pruned (left).
const presenceBeatLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node, ttl, conns, prefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
local exp = now + ttl
if ARGV[4] == '1' then redis.call('DEL', KEYS[4]) end
for i = 6, #ARGV do
  redis.call('SADD', KEYS[4], ARGV[i])
  redis.call('ZADD', KEYS[1], 'GT', exp, ARGV[i])
end
if conns > 0 or redis.call('SCARD', KEYS[4]) > 0 then
  redis.call('ZADD', KEYS[2], exp, node)
  redis.call('HSET', KEYS[3], node, conns)
  redis.call('PEXPIRE', KEYS[4], ttl)
  for k = 1, 3 do
    if redis.call('PTTL', KEYS[k]) < ttl then redis.call('PEXPIRE', KEYS[k], ttl) end
  end
else
  redis.call('ZREM', KEYS[2], node)
  redis.call('HDEL', KEYS[3], node)
  redis.call('DEL', KEYS[4])
end
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('ZREM', KEYS[2], n)
  redis.call('HDEL', KEYS[3], n)
  redis.call('DEL', prefix .. n)
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
for _, u in ipairs(gone) do redis.call('ZREM', KEYS[1], u) end
return gone
`

// presenceMembersLua lists a page. KEYS: p. ARGV: cursor, count.
// Returns {next cursor, users...}; expired users are skipped.
const presenceMembersLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local out = {r[1]}
local kv = r[2]
for i = 1, #kv, 2 do
  if tonumber(kv[i + 1]) > now then out[#out + 1] = kv[i] end
end
return out
`

// presenceStatsLua counts. KEYS: p, pn, pc. Returns {conns, users}.
const presenceStatsLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local conns = 0
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')) do
  conns = conns + tonumber(redis.call('HGET', KEYS[3], n) or '0')
end
return {conns, redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')}
`

// RedisPresenceConfig configures a RedisPresence.
type RedisPresenceConfig struct {
	// Client is the node's Redis client (standalone or Cluster). Required.
	Client redis.UniversalClient
	// NodeID names this node in the presence keys (empty: random). Two
	// live processes must never share one.
	NodeID string
	// Heartbeat is the Tracker's heartbeat; entries live twice as long.
	Heartbeat time.Duration
	// Timeout bounds one call when the caller's context has no deadline
	// (0: DefaultPublishTimeout).
	Timeout time.Duration
}

// RedisPresence is presence.Store on Redis, shared by every node; see the
// keys above. All methods are safe for concurrent use.
type RedisPresence struct {
	client  redis.UniversalClient
	node    string
	ttl     time.Duration
	timeout time.Duration

	update, beat, members, stats *redis.Script // EVALSHA, loaded on first use
}

var _ presence.Store = (*RedisPresence)(nil)

// NewRedisPresence validates cfg.
func NewRedisPresence(cfg RedisPresenceConfig) (*RedisPresence, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: RedisPresenceConfig.Client is required", ErrConfig)
	}
	if cfg.Heartbeat <= 0 {
		return nil, fmt.Errorf("%w: presence heartbeat must be positive", ErrConfig)
	}
	if cfg.NodeID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.NodeID = hex.EncodeToString(b[:])
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultPublishTimeout
	}
	return &RedisPresence{client: cfg.Client, node: cfg.NodeID, ttl: 2 * cfg.Heartbeat, timeout: cfg.Timeout,
		update: redis.NewScript(presenceUpdateLua), beat: redis.NewScript(presenceBeatLua),
		members: redis.NewScript(presenceMembersLua), stats: redis.NewScript(presenceStatsLua)}, nil
}

// NodeID is this node's name in the presence keys.
func (r *RedisPresence) NodeID() string { return r.node }

func (r *RedisPresence) keys(ch string) []string {
	base := "pushd:{" + ch + "}:p"
	return []string{base, base + "n", base + "c", base + "m:" + r.node}
}

func (r *RedisPresence) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, r.timeout)
}

// Update implements presence.Store.
func (r *RedisPresence) Update(ctx context.Context, ch string, u presence.Update) (joined, left []string, err error) {
	if err := checkPresenceChannel(ch); err != nil {
		return nil, nil, err
	}
	ctx, cancel := r.bound(ctx)
	defer cancel()
	keys := r.keys(ch)
	args := make([]any, 0, 5+len(u.Add)+len(u.Remove))
	args = append(args, r.node, r.ttl.Milliseconds(), u.Conns, len(u.Add), keys[0]+"m:")
	for _, s := range u.Add {
		args = append(args, s)
	}
	for _, s := range u.Remove {
		args = append(args, s)
	}
	v, err := r.update.Run(ctx, r.client, keys, args...).Slice()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: presence update %q: %w", presence.ErrUnavailable, ch, err)
	}
	if len(v) != 2 {
		return nil, nil, fmt.Errorf("%w: presence update: reply of %d items", presence.ErrUnavailable, len(v))
	}
	return replyStrings(v[0]), replyStrings(v[1]), nil
}

// Heartbeat implements presence.Store.
func (r *RedisPresence) Heartbeat(ctx context.Context, ch string, conns int, users []string, reset bool) ([]string, error) {
	if err := checkPresenceChannel(ch); err != nil {
		return nil, err
	}
	ctx, cancel := r.bound(ctx)
	defer cancel()
	keys := r.keys(ch)
	rs := "0"
	if reset {
		rs = "1"
	}
	args := make([]any, 0, 5+len(users))
	args = append(args, r.node, r.ttl.Milliseconds(), conns, rs, keys[0]+"m:")
	for _, s := range users {
		args = append(args, s)
	}
	v, err := r.beat.Run(ctx, r.client, keys, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("%w: presence heartbeat %q: %w", presence.ErrUnavailable, ch, err)
	}
	return replyStrings(v), nil
}

// Members implements presence.Store (ZSCAN: a page holds about limit
// users).
func (r *RedisPresence) Members(ctx context.Context, ch string, cursor uint64, limit int) (presence.Page, error) {
	if err := checkPresenceChannel(ch); err != nil {
		return presence.Page{}, err
	}
	ctx, cancel := r.bound(ctx)
	defer cancel()
	v, err := r.members.Run(ctx, r.client, r.keys(ch)[:1], strconv.FormatUint(cursor, 10), max(1, limit)).Slice()
	if err != nil || len(v) == 0 {
		return presence.Page{}, fmt.Errorf("%w: presence members %q: %v", presence.ErrUnavailable, ch, err)
	}
	next, _ := v[0].(string)
	p := presence.Page{Users: replyStrings(v[1:])}
	p.Cursor, err = strconv.ParseUint(next, 10, 64)
	if err != nil {
		return presence.Page{}, fmt.Errorf("%w: presence members: cursor %q", presence.ErrUnavailable, next)
	}
	return p, nil
}

// Stats implements presence.Store: O(nodes + log users).
func (r *RedisPresence) Stats(ctx context.Context, ch string) (presence.Stats, error) {
	if err := checkPresenceChannel(ch); err != nil {
		return presence.Stats{}, err
	}
	ctx, cancel := r.bound(ctx)
	defer cancel()
	v, err := r.stats.Run(ctx, r.client, r.keys(ch)[:3]).Int64Slice()
	if err != nil || len(v) != 2 {
		return presence.Stats{}, fmt.Errorf("%w: presence stats %q: %v", presence.ErrUnavailable, ch, err)
	}
	return presence.Stats{Conns: v[0], Users: v[1]}, nil
}

func checkPresenceChannel(ch string) error {
	if ch == "" || len(ch) > 255 || ch[0] == '}' {
		// '}' first would make an empty hash tag: the keys would spread
		// over several Cluster slots.
		return fmt.Errorf("%w: presence channel must be 1-255 bytes, not starting with '}'", ErrChannel)
	}
	return nil
}

// replyStrings converts a script's array reply of strings.
func replyStrings(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
