local first = redis.call('HMGET', KEYS[2], 'entry_id', 'digest')
if first[1] then return {first[1], 0, first[2]} end
local id = redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'entry_id', id, 'digest', ARGV[4])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return {id, 1, ARGV[4]}
