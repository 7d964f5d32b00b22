-- settle.lua: turn a reservation into the real charge, exactly once. Atomic.
--
-- Refunds what the reservation held beyond the real cost (or takes the extra,
-- never more than the balance holds), gives unused tokens back to the
-- tokens-per-minute bucket, deletes the reservation and appends the usage
-- entry to the ledger stream that the SQL writer drains. A second call for the
-- same request id finds no reservation and changes nothing.
--
-- A refund that came while reservations held the key's credit left a debt
-- ($ns:owed, see credit.lua): what this reservation releases pays it first, and
-- the balance gets the rest. Debt beyond what the key's remaining reservations
-- hold can never be collected (the credit was spent): it is written off, and is
-- the refund's shortfall. The usage entry says both: owed_paid, owed_void.
--
-- A key with a credit cap gets back, in its cap's window, what the reservation
-- held beyond the real cost, if the window is still the one it was made in (cw);
-- a capped key is never charged more than it reserved (the cap holds exactly).
--
-- KEYS[1]  $ns:bal:<account_id>
-- KEYS[2]  $ns:rl:<key_id>
-- KEYS[3]  $ns:resv:<request_id>
-- KEYS[4]  $ns:resv:open
-- KEYS[5]  $ns:ledger            stream of balance changes waiting for SQL
-- KEYS[6]  $ns:held:<account_id> micro-dollars the account's open reservations hold
-- KEYS[7]  $ns:owed:<account_id> refund debt still to collect from them
-- KEYS[8]  $ns:gen               the hot store's generation (edge/billing/heal.py)
-- KEYS[9]  $ns:cap:<key_id>      the key's credit cap window (reserve.lua)
--
-- ARGV[1]  request id
-- ARGV[2]  real cost, micro-dollars
-- ARGV[3]  tokens really used (prompt + completion)
-- ARGV[4…] field, value pairs appended to the stream entry (after 'charged' and,
--          when not zero, 'owed_paid' and 'owed_void', micro-dollars); the
--          entry's format is edge/billing/entries.py's
--
-- Returns {1, charged, balance after, gen}, {0, 0, 0, gen} when there is no such
-- reservation (settled already in this generation, or lost with an older one:
-- the caller compares), or {-5, 0, 0, ''} while the hot store heals (retry soon);
-- the codes are named in edge/store/codes.py.

local gen = redis.call('GET', KEYS[8])
if not gen then
  return {-5, 0, 0, ''}
end
local held = redis.call('HMGET', KEYS[3], 'amount', 'tokens', 'cw')
if not held[1] then
  return {0, 0, 0, gen}
end
local amount = tonumber(held[1])
local cost = tonumber(ARGV[2])
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
local capped = false
if held[3] then
  capped = redis.call('HGET', KEYS[9], 'w') == held[3]
end

local charged = cost
local released = 0
if cost > amount then
  local extra = math.min(cost - amount, balance)
  if held[3] then  -- a capped key's reservation was its whole room under the cap
    extra = 0
  end
  charged = amount + extra
  balance = balance - extra
  redis.call('DECRBY', KEYS[1], extra)
elseif cost < amount then
  released = amount - cost
end

-- Refund debt first, from what the reservation releases; the balance gets the rest.
local owed = tonumber(redis.call('GET', KEYS[7]) or '0')
local owed_paid = math.min(released, owed)
owed = owed - owed_paid
if released > owed_paid then
  balance = balance + (released - owed_paid)
  redis.call('INCRBY', KEYS[1], released - owed_paid)
end
local holding = tonumber(redis.call('DECRBY', KEYS[6], amount))
if holding <= 0 then
  holding = 0
  redis.call('DEL', KEYS[6])
end
local owed_void = 0
if owed > holding then  -- no reservation left holds it: spent, never to collect
  owed_void = owed - holding
  owed = holding
end
if owed_paid > 0 or owed_void > 0 then
  if owed > 0 then
    redis.call('SET', KEYS[7], owed)
  else
    redis.call('DEL', KEYS[7])
  end
end

if capped and charged ~= amount then
  redis.call('HINCRBY', KEYS[9], 'used', charged - amount)
end

local unused = tonumber(held[2]) - tonumber(ARGV[3])
if unused ~= 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[2], 'tk', unused)
end

redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
local entry = {'charged', charged}
if owed_paid > 0 then
  entry[#entry + 1] = 'owed_paid'
  entry[#entry + 1] = owed_paid
end
if owed_void > 0 then
  entry[#entry + 1] = 'owed_void'
  entry[#entry + 1] = owed_void
end
for i = 4, #ARGV do
  entry[#entry + 1] = ARGV[i]
end
redis.call('XADD', KEYS[5], '*', unpack(entry))
return {1, charged, balance, gen}
