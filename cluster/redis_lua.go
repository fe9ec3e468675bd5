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
// atomically increments pushd:{<ch>}:seq, appends the payload to the stream
// pushd:{<ch>}:s under the ID <seq>-0 (MAXLEN ~ history; history 0 keeps
// none), sets both keys' TTL, publishes the envelope "p1:<seq>:<payload>"
// on pushd:{<ch>}:d and returns seq. Every key shares the {<ch>} hash tag,
// so the function touches one slot.
//
// pushd_history KEYS[1]=pushd:{<ch>} ARGV: [since] [count] (read-only)
// returns {top} without since, else {top, id1, payload1, ...}: up to count
// stream entries with seq > since, oldest first.
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
  local seq = redis.call('INCR', seqkey)
  local id = string.format('%%d', seq)
  redis.call('EXPIRE', seqkey, ttl, 'GT')
  if redis.call('TTL', seqkey) < 0 then redis.call('EXPIRE', seqkey, ttl) end
  if hist > 0 then
    local stream = base .. ':s'
    redis.call('XADD', stream, 'MAXLEN', '~', hist, id .. '-0', 'd', payload)
    redis.call('EXPIRE', stream, ttl)
  end
  redis.call(PUBLISH, base .. ':d', 'p1:' .. id .. ':' .. payload)
  return seq
end

local function history(keys, args)
  local base = keys[1]
  local top = tonumber(redis.call('GET', base .. ':seq') or '0')
  if args[1] == nil then return {top} end
  local since = tonumber(args[1])
  local count = tonumber(args[2] or '1000')
  local out = {top}
  if since == nil or count == nil or since >= top then return out end
  local entries = redis.call('XRANGE', base .. ':s', string.format('%%d-0', since + 1), '+', 'COUNT', count)
  for _, e in ipairs(entries) do
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][2]
  end
  return out
end

redis.register_function('pushd_publish', publish)
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
