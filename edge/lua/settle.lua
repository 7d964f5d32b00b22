-- settle.lua: turn a reservation into the real charge, exactly once. Atomic.
--
-- Refunds what the reservation held beyond the real cost (or takes the extra,
-- never more than the balance holds), gives unused tokens back to the
-- tokens-per-minute bucket, deletes the reservation and appends the usage
-- entry to the ledger stream that the SQL writer drains. A second call for the
-- same request id finds no reservation and changes nothing.
--
-- KEYS[1]  $ns:bal:<key_id>
-- KEYS[2]  $ns:rl:<key_id>
-- KEYS[3]  $ns:resv:<request_id>
-- KEYS[4]  $ns:resv:open
-- KEYS[5]  $ns:ledger            stream of balance changes waiting for SQL
--
-- ARGV[1]  request id
-- ARGV[2]  real cost, micro-dollars
-- ARGV[3]  tokens really used (prompt + completion)
-- ARGV[4…] field, value pairs appended to the stream entry
--
-- Returns {1, charged, balance after} or {0, 0, 0} when already settled.

local held = redis.call('HMGET', KEYS[3], 'amount', 'tokens')
if not held[1] then
  return {0, 0, 0}
end
local amount = tonumber(held[1])
local cost = tonumber(ARGV[2])
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')

local charged = cost
if cost > amount then
  local extra = math.min(cost - amount, balance)
  charged = amount + extra
  balance = balance - extra
  redis.call('DECRBY', KEYS[1], extra)
elseif cost < amount then
  balance = balance + (amount - cost)
  redis.call('INCRBY', KEYS[1], amount - cost)
end

local unused = tonumber(held[2]) - tonumber(ARGV[3])
if unused ~= 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[2], 'tk', unused)
end

redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], '*', 'charged', charged, unpack(ARGV, 4))
return {1, charged, balance}
