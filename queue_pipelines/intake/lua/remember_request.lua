-- The first entry of a request key, as the intake sensor reads entries written straight to
-- Redis: recorded unless a first is recorded already (by this script or enqueue_once.lua).
-- KEYS[1] the request's first-request record.
-- ARGV[1] the entry id, ARGV[2] its payload digest, ARGV[3] seconds to keep the record.
-- Returns {first entry id, first digest}.
local first = redis.call('HMGET', KEYS[1], 'entry_id', 'digest')
if first[1] then return first end
redis.call('HSET', KEYS[1], 'entry_id', ARGV[1], 'digest', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {ARGV[1], ARGV[2]}
