package cluster

import (
	"fmt"
	"time"
)

// libraryName is the Redis Function library pushd loads (FUNCTION LOAD
// REPLACE) on every primary at start.
const libraryName = "pushd"

// librarySource is the pushd Redis Function library. %d placeholders: the
// default TTL in seconds and the default history size; %s: the publish
// command (PUBLISH, or SPUBLISH for Redis Cluster sharded pub/sub).
//
// pushd_publish KEYS[1]=pushd:{<ch>} ARGV: payload [ttl_s] [history]
// atomically increments pushd:{<ch>}:seq; when that created the counter
// (seq 1: first publish, or the counter was lost to FLUSHALL, expiry, a
// restart without persistence or a failover) or the epoch key is missing,
// it makes a new epoch in pushd:{<ch>}:e from the server's TIME (hex
// seconds and microseconds: never repeats for one channel); it appends the
// payload to the stream pushd:{<ch>}:s under the ID <seq>-0 (MAXLEN ~
// history; history 0 keeps none) after deleting a stream of an older
// epoch, sets the keys' TTL (the counter's and the epoch's never shrink),
// publishes the envelope "p2:<epoch>:<seq>:<payload>" on pushd:{<ch>}:d
// and returns seq. Every key shares the {<ch>} hash tag, so the function
// touches one slot.
//
// pushd_fence KEYS[1]=pushd:{<ch>} ARGV: epoch gives the channel a new
// epoch if its current one is still epoch (and its counter exists), and
// returns {top, epoch}. A node calls it when it finds the counter below
// the last seq it handed out in the same epoch: Redis lost acknowledged
// writes (a failover to a replica that had not received them), so the
// seqs after top would be numbered again for other publications; the new
// epoch tells every client (recovered:false) instead of letting the reused
// seqs pass as duplicates. The old epoch's stream is deleted (a client
// resuming in it is told recovered:false anyway). Idempotent across nodes: only the first call
// for an epoch changes it.
//
// pushd_history KEYS[1]=pushd:{<ch>} ARGV: [since] [count] (read-only)
// returns {top, epoch} without since, else {top, epoch, id1, payload1,
// ...}: up to count stream entries with seq > since, oldest first (epoch
// "" when the channel has none).
const librarySource = `#!lua name=pushd

local DEFAULT_TTL = %d
local DEFAULT_HISTORY = %d
local PUBLISH = '%s'

local function publish(keys, args)
  local base = keys[1]
  local payload = args[1]
  if base == nil or payload == nil then
    return redis.error_reply('ERR pushd_publish: want 1 key and a payload')
  end
  local ttl = DEFAULT_TTL
  if args[2] ~= nil and args[2] ~= '' then ttl = tonumber(args[2]) end
  local hist = DEFAULT_HISTORY
  if args[3] ~= nil and args[3] ~= '' then hist = tonumber(args[3]) end
  if ttl == nil or ttl < 1 or ttl ~= math.floor(ttl) then
    return redis.error_reply('ERR pushd_publish: ttl_s must be a positive integer')
  end
  if hist == nil or hist < 0 or hist ~= math.floor(hist) then
    return redis.error_reply('ERR pushd_publish: history must be a non-negative integer')
  end
  local seqkey = base .. ':seq'
  local epochkey = base .. ':e'
  local stream = base .. ':s'
  local seq = redis.call('INCR', seqkey)
  local id = string.format('%%d', seq)
  local epoch = redis.call('GET', epochkey)
  if seq == 1 or not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%%x%%05x', tonumber(t[1]), tonumber(t[2]))
    redis.call('SET', epochkey, epoch)
    -- A stream left from an older epoch would mix two numberings.
    if seq == 1 then redis.call('DEL', stream) end
  end
  for _, k in ipairs({seqkey, epochkey}) do
    redis.call('EXPIRE', k, ttl, 'GT')
    if redis.call('TTL', k) < 0 then redis.call('EXPIRE', k, ttl) end
  end
  if hist > 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', hist, id .. '-0', 'd', payload)
    redis.call('EXPIRE', stream, ttl)
  end
  redis.call(PUBLISH, base .. ':d', 'p2:' .. epoch .. ':' .. id .. ':' .. payload)
  return seq
end

local function history(keys, args)
  local base = keys[1]
  local top = tonumber(redis.call('GET', base .. ':seq') or '0')
  local epoch = redis.call('GET', base .. ':e') or ''
  if top == 0 then epoch = '' end
  if args[1] == nil then return {top, epoch} end
  local since = tonumber(args[1])
  local count = tonumber(args[2] or '1000')
  local out = {top, epoch}
  if since == nil or count == nil or since >= top then return out end
  local entries = redis.call('XRANGE', base .. ':s', string.format('%%d-0', since + 1), '+', 'COUNT', count)
  for _, e in ipairs(entries) do
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][2]
  end
  return out
end

local function fence(keys, args)
  local base = keys[1]
  local seqkey = base .. ':seq'
  local epochkey = base .. ':e'
  local top = tonumber(redis.call('GET', seqkey) or '0')
  local epoch = redis.call('GET', epochkey)
  if top > 0 and epoch and epoch == args[1] then
    local t = redis.call('TIME')
    epoch = string.format('%%x%%05x', tonumber(t[1]), tonumber(t[2]))
    redis.call('SET', epochkey, epoch)
    local ttl = redis.call('PTTL', seqkey)
    if ttl > 0 then redis.call('PEXPIRE', epochkey, ttl) end
    -- The old epoch's history goes with it (its IDs may be above top).
    redis.call('DEL', base .. ':s')
  end
  if top == 0 or not epoch then epoch = '' end
  return {top, epoch}
end

redis.register_function('pushd_publish', publish)
redis.register_function('pushd_fence', fence)
redis.register_function{function_name = 'pushd_history', callback = history, flags = {'no-writes'}}
`

// library returns the library source for the given defaults and publish
// command.
func library(ttl time.Duration, history int, sharded bool) string {
	cmd := "PUBLISH"
	if sharded {
		cmd = "SPUBLISH"
	}
	return fmt.Sprintf(librarySource, max(int64(ttl/time.Second), 1), max(history, 0), cmd)
}
