local first = redis.call('HMGET', KEYS[1], 'entry_id', 'digest')
if first[1] then return first end
redis.call('HSET', KEYS[1], 'entry_id', ARGV[1], 'digest', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {ARGV[1], ARGV[2]}
