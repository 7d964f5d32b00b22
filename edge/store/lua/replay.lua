-- replay.lua: charge (or credit) a settlement that Redis lost, once. Atomic.
--
-- A spooled settlement whose stream entry vanished with an older generation of
-- Redis (edge/billing/spool.py), or whose reservation vanished before it could settle,
-- is applied again on top of the healed balance: the reference is remembered,
-- so it applies once however many spools hold it, and a charge never takes the
-- balance below zero (it takes what there is).
--
-- KEYS[1]  $ns:bal:<account_id>
-- KEYS[2]  $ns:applied:<reference>   marker of an applied reference
-- KEYS[3]  $ns:ledger                stream of balance changes waiting for SQL
-- KEYS[4]  $ns:gen                   the hot store's generation (see edge/billing/heal.py)
--
-- ARGV[1]  amount, micro-dollars (negative to charge)
-- ARGV[2]  seconds the marker is kept
-- ARGV[3]  the stream field that carries the applied amount: charged (usage, as a
--          positive number) or amount (a credit, signed)
-- ARGV[4…] field, value pairs appended to the stream entry (edge/billing/entries.py)
--
-- Returns {1, applied amount, balance after}, {0, 0, 0} when the balance is not
-- loaded or the store is healing (no generation), {-1, 0, balance} for a
-- reference seen before; the codes are named in edge/store/codes.py.

if redis.call('EXISTS', KEYS[4]) == 0 or redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, 0}
end
local balance = tonumber(redis.call('GET', KEYS[1]))
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[2])) then
  return {-1, 0, balance}
end
local amount = tonumber(ARGV[1])
if amount < 0 and -amount > balance then
  amount = 0 - balance  -- not -balance: Lua's -0 is "-0", which INCRBY refuses
end
redis.call('INCRBY', KEYS[1], amount)
local shown = amount
if ARGV[3] == 'charged' then
  shown = -amount
end
redis.call('XADD', KEYS[3], '*', ARGV[3], shown, unpack(ARGV, 4))
return {1, amount, balance + amount}
