-- An operator replays a dead letter: the request may run again, unless it succeeded.
-- KEYS[1] the request's outcome hash, KEYS[2] its first-request record.
-- ARGV[1] the replayed envelope's payload digest, ARGV[2] 'replay' as its entry id.
-- Returns 0 when the request succeeded (nothing changed: its replay is acked), else 1.
if redis.call('HGET', KEYS[1], 'status') == 'succeeded' then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'entry_id', ARGV[2], 'digest', ARGV[1])
end
return 1
