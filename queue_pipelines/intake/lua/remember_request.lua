-- The first entry of each of a tick's request keys, as the intake sensor reads entries written
-- straight to Redis: recorded unless a first is recorded already (by this script or
-- enqueue_once.lua). One call for many keys: a tick's thousands are one command, not one each.
-- KEYS[i] a request's first-request record.
-- ARGV[1] seconds to keep a record, ARGV[2i] the i-th key's entry id, ARGV[2i+1] its digest.
-- Returns {first entry id, first digest} of each key in turn, flat: 2 items per key.
local ttl = tonumber(ARGV[1])
local firsts = {}
for i, key in ipairs(KEYS) do
  local id, digest = ARGV[2 * i], ARGV[2 * i + 1]
  local first = redis.call('HMGET', key, 'entry_id', 'digest')
  if first[1] then
    id, digest = first[1], first[2]
  else
    redis.call('HSET', key, 'entry_id', id, 'digest', digest)
    redis.call('EXPIRE', key, ttl)
  end
  firsts[2 * i - 1] = id
  firsts[2 * i] = digest
end
return firsts
