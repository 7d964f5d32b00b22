-- take_slot.lua: open a call on a node with a free slot, the one that holds its prefix
-- if it has room.
--
-- Admission control: a node takes at most its limit of calls at once, counted over
-- every edge worker and host. Each slot is leased; a worker renews the leases of its
-- open calls, so the slots of a worker that died free themselves.
--
-- Cache-affine routing (consistent hashing with bounded loads, by memory rather than
-- by hash): a call that shares a prefix with an earlier one goes to the node that
-- served it last while that node has a free slot and its open calls are under its
-- keep (the model's target load per node: a node under it is not overloaded, however
-- many nodes were added since) or within (1 + epsilon) times the mean over the
-- candidates, this call included, plus one; otherwise, and for a prefix not seen
-- before, to the candidate with the fewest open calls (the caller's order breaks
-- ties). The prefix is then remembered on the node chosen.
--
-- KEYS[1..n]  $ns:slots:<node_id> of the candidate nodes, in the caller's order
-- KEYS[n+1]   $ns:affinity:<model_id>:<prefix>, when ARGV[3] > 0
--
-- ARGV[1]     the call's request id (the slot's member)
-- ARGV[2]     lease, milliseconds
-- ARGV[3]     milliseconds a prefix is remembered (0: the call has no affinity)
-- ARGV[4]     epsilon, the affine node's headroom over the mean
-- ARGV[5..4+n]     each candidate's node id, in the order of KEYS
-- ARGV[5+n..4+2n]  each candidate's limit
-- ARGV[5+2n..4+3n] each candidate's keep: open calls under which it keeps a prefix
--                  whatever the others carry (0: the bound alone decides)
--
-- Returns the 1-based index of the node whose slot was taken, or 0 when all are full.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local remember = tonumber(ARGV[3])
local n = (#ARGV - 4) / 3
local open = {}
local total = 0
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  open[i] = redis.call('ZCARD', KEYS[i])
  total = total + open[i]
end
local chosen = 0
if remember > 0 then
  local last = redis.call('GET', KEYS[n + 1])
  if last then
    -- One call of slack over the bound, so that the few calls of a quiet model do not
    -- spill on rounding (with 3 open over 3 nodes the bound alone would be 2).
    local bound = math.ceil((total + 1) * (1 + tonumber(ARGV[4])) / n) + 1
    for i = 1, n do
      if ARGV[4 + i] == last then
        local keep = math.max(bound, tonumber(ARGV[4 + 2 * n + i]))
        if open[i] < tonumber(ARGV[4 + n + i]) and open[i] < keep then
          chosen = i
        end
        break
      end
    end
  end
end
if chosen == 0 then
  for i = 1, n do
    if open[i] < tonumber(ARGV[4 + n + i]) and (chosen == 0 or open[i] < open[chosen]) then
      chosen = i
    end
  end
end
if chosen == 0 then
  return 0
end
redis.call('ZADD', KEYS[chosen], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[chosen], lease)
if remember > 0 then
  redis.call('SET', KEYS[n + 1], ARGV[4 + chosen], 'PX', remember)
end
return chosen
