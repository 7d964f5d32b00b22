-- credit.lua: add to (or take from) a balance once per reference. Atomic.
--
-- Top-ups, refunds and adjustments all pass here. The reference (a Stripe
-- event id, a checkout session id, an operator's top-up id) is remembered, so
-- that the same change delivered twice, concurrently or not, applies once. A
-- debit never takes the balance below zero: it takes what there is.
--
-- KEYS[1]  $ns:bal:<key_id>
-- KEYS[2]  $ns:applied:<reference>   marker of an applied reference
-- KEYS[3]  $ns:ledger                stream of balance changes waiting for SQL
--
-- ARGV[1]  amount, micro-dollars (negative to debit)
-- ARGV[2]  seconds the marker is kept
-- ARGV[3…] field, value pairs appended to the stream entry
--
-- Returns {1, applied amount, balance after}, {0, 0, 0} when the balance is not
-- loaded (load it and call again) or {-1, 0, balance} for a reference seen before.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, 0}
end
local balance = tonumber(redis.call('GET', KEYS[1]))
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[2])) then
  return {-1, 0, balance}
end
local amount = tonumber(ARGV[1])
if amount < 0 and -amount > balance then
  amount = -balance
end
redis.call('INCRBY', KEYS[1], amount)
redis.call('XADD', KEYS[3], '*', 'amount', amount, 'requested', ARGV[1], unpack(ARGV, 3))
return {1, amount, balance + amount}
