-- A producer's request, enqueued at most once per request key (the gateway's path).
-- KEYS[1] the job type's intake stream, KEYS[2] the request's first-request record.
-- ARGV[1] the envelope field, ARGV[2] the envelope, ARGV[3] seconds to keep the record,
-- ARGV[4] the payload digest.
-- Returns {entry id, 1 when this call added it else 0, the first request's digest}.
local first = redis.call('HMGET', KEYS[2], 'entry_id', 'digest')
if first[1] then return {first[1], 0, first[2]} end
local id = redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'entry_id', id, 'digest', ARGV[4])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return {id, 1, ARGV[4]}
