-- Some fields of many hashes in one call (a tick looks up thousands of requests' outcomes and
-- assignments: one command instead of one per request).
-- KEYS[i] a hash; ARGV the field names.
-- Returns the fields of each hash in turn, flat: #ARGV items per key, false where missing.
local values = {}
for _, key in ipairs(KEYS) do
  local found = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, #ARGV do values[#values + 1] = found[j] end
end
return values
