-- A request succeeded: record its outcome (when given), ack and delete every entry that carried
-- it, and remove the dead letters an earlier failure of it left on this stream, in one call
-- (a run settles each of its requests so; the sensor settles again what a run recorded).
-- KEYS[1] the job type's intake stream, KEYS[2] the request's waiting set, KEYS[3] its outcome
-- hash, KEYS[4] its dead-letter index, KEYS[5] the dead-letter stream.
-- ARGV[1] the consumer group, ARGV[2] seconds to keep the outcome, ARGV[3...] the outcome's
-- field and value pairs (none: the outcome is recorded already and stays as it is).
-- Returns how many entries the waiting set named.
if #ARGV > 2 then
  for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[2]))
end
local ids = redis.call('SMEMBERS', KEYS[2])
for _, id in ipairs(ids) do
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
redis.call('DEL', KEYS[2])
-- A letter of another job type's stream is not this request's failure; a letter gone
-- already (purged by an operator) only leaves the index.
for _, letter in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  local found = redis.call('XRANGE', KEYS[5], letter, letter)
  local mine = #found == 0
  if not mine then
    local flat = found[1][2]
    for j = 1, #flat, 2 do
      if flat[j] == 'stream' then mine = flat[j + 1] == KEYS[1] end
    end
  end
  if mine then
    redis.call('XDEL', KEYS[5], letter)
    redis.call('SREM', KEYS[4], letter)
  end
end
return #ids
