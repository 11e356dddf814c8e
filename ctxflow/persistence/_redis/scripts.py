"""The Lua scripts of a checkpoint write: read the head, then write, each checking the fence
first.

Redis runs a script with nothing interleaved, so a fence checked in a script
holds for every command after it in that script. Both scripts check the fence
before anything else: a writer that lost its lease learns that (``fenced``),
never that its parent is stale.
"""

from __future__ import annotations

__all__ = ["HEAD", "PUT"]

# KEYS: owner, fence.  ARGV[1], ARGV[2]: owner value or '', token.
_FENCE = """
if ARGV[1] ~= '' then
  local owner = redis.call('GET', KEYS[1])
  local fence = redis.call('GET', KEYS[2])
  if owner ~= ARGV[1] or fence ~= ARGV[2] then return {'fenced', owner or '', fence or ''} end
end
"""

# KEYS: owner, fence, order, rec, body.  ARGV: owner value or '', token, body hashes.
# -> {'fenced', owner, token} | {'ok', latest record or '', present flags...}
HEAD = (
    _FENCE
    + """
local latest = redis.call('LINDEX', KEYS[3], -1)
local out = {'ok', ''}
if latest then out[2] = redis.call('HGET', KEYS[4], latest) or '' end
for i = 3, #ARGV do out[#out + 1] = redis.call('HEXISTS', KEYS[5], ARGV[i]) end
return out
"""
)

# KEYS: owner, fence, order, rec, man, body.
# ARGV: owner value or '', token, expected parent or '', id, record, manifest, ttl ms,
#       n new bodies, n pairs (hash, body), then the hashes the manifest mentions.
# -> {status, detail, detail}
PUT = (
    _FENCE
    + """
local latest = redis.call('LINDEX', KEYS[3], -1) or ''
if latest ~= ARGV[3] then return {'stale', latest, ''} end
if redis.call('HEXISTS', KEYS[4], ARGV[4]) == 1 then return {'duplicate', '', ''} end
local n = tonumber(ARGV[8])
local given = {}
for i = 0, n - 1 do given[ARGV[9 + 2 * i]] = true end
for i = 9 + 2 * n, #ARGV do
  local h = ARGV[i]
  if not given[h] and redis.call('HEXISTS', KEYS[6], h) == 0 then return {'missing', h, ''} end
end
for i = 0, n - 1 do redis.call('HSET', KEYS[6], ARGV[9 + 2 * i], ARGV[10 + 2 * i]) end
redis.call('HSET', KEYS[5], ARGV[4], ARGV[6])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('RPUSH', KEYS[3], ARGV[4])
local ttl = tonumber(ARGV[7])
if ttl > 0 then
  for i = 3, 6 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
return {'ok', '', ''}
"""
)
