-- progress.lua: record what a stream has delivered so far, and push back its deadline.
--
-- If the edge process dies mid-stream, the reaper settles the reservation from
-- these figures: the client is charged for the tokens it received, no more.
--
-- KEYS[1]  $ns:resv:<request_id>
-- KEYS[2]  $ns:resv:open
--
-- ARGV[1]  request id
-- ARGV[2]  prompt tokens
-- ARGV[3]  completion tokens delivered
-- ARGV[4]  milliseconds until the new deadline
--
-- Returns 1, or 0 when the reservation is gone.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'pt', ARGV[2], 'ct', ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[4]), ARGV[1])
return 1
