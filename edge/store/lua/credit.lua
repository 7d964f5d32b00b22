-- credit.lua: add to (or take from) a balance once per reference. Atomic.
--
-- Top-ups, refunds and adjustments all pass here. The reference (a Stripe
-- event id, a checkout session id, an operator's top-up id) is remembered, so
-- that the same change delivered twice, concurrently or not, applies once. A
-- debit never takes the balance below zero: it takes what there is now, and
-- defers the rest, up to what the key's open reservations hold and no earlier
-- debt claims, to when they settle: that part becomes debt ($ns:owed), which
-- settle.lua collects from the credit they release before the balance sees it.
-- What is neither taken nor deferred is the shortfall (credit already spent).
-- A positive credit (a top-up) never pays the debt: only released reservation
-- credit does, and debt that no reservation holds any longer is written off.
--
-- KEYS[1]  $ns:bal:<account_id>
-- KEYS[2]  $ns:applied:<reference>   marker of an applied reference
-- KEYS[3]  $ns:ledger                stream of balance changes waiting for SQL
-- KEYS[4]  $ns:held:<account_id>        micro-dollars the account's open reservations hold
-- KEYS[5]  $ns:owed:<account_id>        refund debt still to collect from them
-- KEYS[6]  $ns:gen                   the hot store's generation (edge/billing/heal.py)
--
-- ARGV[1]  amount, micro-dollars (negative to debit)
-- ARGV[2]  seconds the marker is kept
-- ARGV[3…] field, value pairs appended to the stream entry (after 'amount': taken
--          or added now, 'requested': ARGV[1], 'owed': deferred, micro-dollars);
--          the entry's format is edge/billing/entries.py's
--
-- Returns {1, applied amount, balance after, deferred}, {0, 0, 0, 0} when the
-- balance is not loaded (load it and call again), {-1, 0, balance, 0} for a
-- reference seen before, or {-5, 0, 0, 0} while the hot store heals (retry soon);
-- the codes are named in edge/store/codes.py.
-- For a debit, -ARGV[1] = taken now (-applied) + deferred + shortfall.

if redis.call('EXISTS', KEYS[6]) == 0 then
  return {-5, 0, 0, 0}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, 0, 0}
end
local balance = tonumber(redis.call('GET', KEYS[1]))
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[2])) then
  return {-1, 0, balance, 0}
end
local amount = tonumber(ARGV[1])
local deferred = 0
if amount < 0 and -amount > balance then
  local rest = -amount - balance
  amount = 0 - balance  -- not -balance: Lua's -0 is "-0", which INCRBY refuses
  local owed = tonumber(redis.call('GET', KEYS[5]) or '0')
  local free = tonumber(redis.call('GET', KEYS[4]) or '0') - owed
  deferred = math.max(0, math.min(rest, free))
  if deferred > 0 then
    redis.call('SET', KEYS[5], owed + deferred)
  end
end
redis.call('INCRBY', KEYS[1], amount)
redis.call('XADD', KEYS[3], '*', 'amount', amount, 'requested', ARGV[1], 'owed', deferred,
           unpack(ARGV, 3))
return {1, amount, balance + amount, deferred}
