-- Record a batch before its run is requested and put its requests in flight in it, at once.
-- KEYS[1] the batch's record, KEYS[2] the job type's set of batches in flight, KEYS[3...] the
-- assignment hash of each request.
-- ARGV[1] the batch (JSON), ARGV[2] the batch key, ARGV[3...] each request's attempt, in the
-- order of KEYS[3...].
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
for i = 3, #KEYS do
  redis.call('HSET', KEYS[i], 'batch', ARGV[2], 'attempt', ARGV[i])
end
return #KEYS - 2
