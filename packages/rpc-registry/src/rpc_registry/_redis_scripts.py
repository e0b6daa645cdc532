"""The Lua scripts the Redis registry runs on the server, and the key layout they share.

Owns the data model of :class:`RedisRegistry` in Redis, as text only (no I/O, no redis-py
import). Under a ``prefix`` (default ``"rpc:"``):

- ``<prefix>names``: a sorted set of every service name (upper-cased), scored by the latest
  expiry of its providers, in milliseconds of the Redis server's clock.
- ``<prefix>service:<NAME>``: a sorted set of the providers of ``NAME``; a member is
  ``"<host>:<port>"`` scored by the moment its lease expires.
- ``<prefix>since:<NAME>``: a hash from the same members to the moment their lease began, so
  that providers come back oldest lease first, as the UDP/TCP registries answer.

Every key carries a ``PEXPIREAT`` at its latest lease, so a name whose servers all died is gone
from Redis by itself; expired members are skipped by every read and dropped by the next write.
Time is the Redis server's ``TIME``, so the clocks of the hosts that register never matter.
Scripts build service keys from the prefix they are given, so they need one Redis node (a
standalone server or the master behind Sentinel), not a Cluster.
"""

from __future__ import annotations

__all__ = ["DISCOVER", "LIST", "REGISTER", "UNREGISTER", "names_key", "service_key", "since_key"]


def names_key(prefix: str) -> str:
    return f"{prefix}names"


def service_key(prefix: str, name: str) -> str:
    return f"{prefix}service:{name}"


def since_key(prefix: str, name: str) -> str:
    return f"{prefix}since:{name}"


# The server's clock in whole milliseconds, as a number and as an exact decimal string.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local now_s = string.format('%.0f', now)
"""

# Drop the expired members of one name's providers (and their "since"), then re-arm the expiry
# of both keys at the latest live lease; returns that lease's expiry ('' when none is left).
_TIDY = """
local function tidy(key, since)
  local expired = redis.call('ZRANGEBYSCORE', key, '-inf', now_s)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_s)
    redis.call('HDEL', since, unpack(expired))
  end
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', key, since)
    return ''
  end
  redis.call('PEXPIREAT', key, last[2])
  redis.call('PEXPIREAT', since, last[2])
  return last[2]
end
"""

#: KEYS: names, then (service, since) per name. ARGV: ttl in ms, member, then the names.
REGISTER = _NOW + _TIDY + """
local expires = string.format('%.0f', now + tonumber(ARGV[1]))
local member = ARGV[2]
for i = 3, #ARGV do
  local key, since = KEYS[2 * i - 4], KEYS[2 * i - 3]
  local score = redis.call('ZSCORE', key, member)
  if (not score) or tonumber(score) <= now then
    redis.call('HSET', since, member, now_s)
  end
  redis.call('ZADD', key, expires, member)
  redis.call('ZADD', KEYS[1], tidy(key, since), ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return now_s
"""

#: KEYS: service, since. Returns the live members, oldest lease first.
DISCOVER = _NOW + """
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_s, '+inf')
if #members == 0 then return members end
local since = redis.call('HMGET', KEYS[2], unpack(members))
local order = {}
for i, member in ipairs(members) do
  order[i] = {tonumber(since[i]) or 0, member}
end
table.sort(order, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local out = {}
for i, pair in ipairs(order) do out[i] = pair[2] end
return out
"""

#: KEYS: names. ARGV: the prefix of service keys, the host to filter on ('' for every host).
#: Returns the live names (sorted by the caller).
LIST = _NOW + """
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_s, '+inf')
if ARGV[2] == '' then return names end
local out = {}
for _, name in ipairs(names) do
  local members = redis.call('ZRANGEBYSCORE', ARGV[1] .. 'service:' .. name, '(' .. now_s, '+inf')
  for _, member in ipairs(members) do
    if string.match(member, '^(.*):%d+$') == ARGV[2] then
      out[#out + 1] = name
      break
    end
  end
end
return out
"""

#: KEYS: names. ARGV: the key prefix, the member, then the names it held (none: every name).
#: Returns how many names it was withdrawn from.
UNREGISTER = _NOW + _TIDY + """
local names = {}
if #ARGV > 2 then
  for i = 3, #ARGV do names[#names + 1] = ARGV[i] end
else
  names = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local removed = 0
for _, name in ipairs(names) do
  local key, since = ARGV[1] .. 'service:' .. name, ARGV[1] .. 'since:' .. name
  if redis.call('ZREM', key, ARGV[2]) == 1 then
    removed = removed + 1
    redis.call('HDEL', since, ARGV[2])
    local latest = tidy(key, since)
    if latest == '' then
      redis.call('ZREM', KEYS[1], name)
    else
      redis.call('ZADD', KEYS[1], latest, name)
    end
  end
end
return removed
"""
