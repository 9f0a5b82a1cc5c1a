-- Add entry ids to their requests' waiting sets, for many requests in one call.
-- KEYS[i] a request's waiting set.
-- ARGV[i] how many ids the i-th set gets; then all the ids, the first set's first.
local at = #KEYS + 1
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[i])
  for j = at, at + n - 1 do redis.call('SADD', key, ARGV[j]) end
  at = at + n
end
return at - #KEYS - 1
