-- Move entries to the dead-letter stream (copying their fields) and out of the intake in one
-- atomic step, so that a crash in between can neither lose nor duplicate an entry.
-- KEYS[1] the intake stream, KEYS[2] the dead-letter stream, KEYS[3] the request's waiting
-- set, KEYS[4] the request's dead-letter index.
-- ARGV[1] now (ISO 8601), ARGV[2] reason, ARGV[3] run id, ARGV[4] the consumer group,
-- ARGV[5] the request key ('' for an entry that names none), ARGV[6...] the entry ids.
-- Returns how many entries were dead-lettered (and acked).
local count = 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local found = redis.call('XRANGE', KEYS[1], id, id)
  -- An entry already gone (settled meanwhile) leaves no dead letter: it was not lost.
  if #found > 0 then
    local original = {}
    local flat = found[1][2]
    for j = 1, #flat, 2 do original[flat[j]] = flat[j + 1] end
    local letter = redis.call('XADD', KEYS[2], '*', 'stream', KEYS[1], 'entry_id', id,
               'reason', ARGV[2], 'run_id', ARGV[3], 'request_key', ARGV[5],
               'fields', cjson.encode(original), 'dead_lettered_at', ARGV[1])
    -- Indexed by request, so a later success of the request can remove its dead letters.
    if ARGV[5] ~= '' then redis.call('SADD', KEYS[4], letter) end
    count = count + redis.call('XACK', KEYS[1], ARGV[4], id)
    redis.call('XDEL', KEYS[1], id)
  else
    redis.call('XACK', KEYS[1], ARGV[4], id)
  end
  redis.call('SREM', KEYS[3], id)
end
return count
