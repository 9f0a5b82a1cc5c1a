-- A request's run succeeded: ack and delete every entry that carried it.
-- KEYS[1] the job type's intake stream, KEYS[2] the request's waiting set.
-- ARGV[1] the consumer group. Returns how many entries the set named.
local ids = redis.call('SMEMBERS', KEYS[2])
for _, id in ipairs(ids) do
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
redis.call('DEL', KEYS[2])
return #ids
