-- reserve.lua: admit one request for a key, or say why not. Atomic.
--
-- Applies the key's rate limits (two token buckets that refill continuously)
-- and reserves the request's worst-case cost from its account's balance and,
-- when the key has a credit cap, from what the cap leaves in its window, so that
-- no number of concurrent requests, on any number of workers, can spend more than
-- the balance holds or the cap allows.
--
-- KEYS[1]  $ns:bal:<account_id>   balance in micro-dollars (string integer)
-- KEYS[2]  $ns:rl:<key_id>        hash: rq (request tokens), tk (token tokens), ts (ms)
-- KEYS[3]  $ns:resv:<request_id>  hash: the reservation (created here)
-- KEYS[4]  $ns:resv:open          zset: request_id -> deadline in ms (for the reaper)
-- KEYS[5]  $ns:held:<account_id>  micro-dollars held by the account's open reservations
--                                 (raised here by the amount; settle.lua lowers it):
--                                 what a refund may defer its debit to (credit.lua)
-- KEYS[6]  $ns:gen                the hot store's generation (edge/billing/heal.py): none
--                                 while Redis is being rebuilt from SQL
-- KEYS[7]  $ns:cap:<key_id>       hash: w (the cap's window), used (micro-dollars charged
--                                 and held in it); settle.lua gives back what is unused
--
-- ARGV[1]  amount to reserve, micro-dollars
-- ARGV[2]  tokens to take from the tokens-per-minute bucket
-- ARGV[3]  requests per minute allowed
-- ARGV[4]  tokens per minute allowed
-- ARGV[5]  milliseconds until the reservation's deadline
-- ARGV[6]  request id
-- ARGV[7]  the key's credit cap in micro-dollars, or -1: none
-- ARGV[8]  the cap's current window ('d20424', 'w2918', 'm202612', 'n'): a window other
--          than the hash's starts again from zero
-- ARGV[9…] field, value pairs stored in the reservation hash
--
-- Returns {code, value} (named in edge/store/codes.py):
--   { 1, balance after, gen, requests left, tokens left}
--                              reserved, in generation gen; what the key's buckets
--                              hold after it (the x-ratelimit-remaining-* headers)
--   { 0, 0}                    balance not loaded: load it from SQL and call again
--   {-1, balance}              insufficient credit
--   {-2, retry after ms}       requests-per-minute limit
--   {-3, retry after ms}       tokens-per-minute limit
--   {-4, 0}                    this request id is already reserved
--   {-5, 0}                    no generation: the hot store is healing; retry soon
--   {-6, left under the cap}   the key's credit cap does not cover it
--   {-7, 0}                    the cap's window is not loaded: load it from SQL, call again

local gen = redis.call('GET', KEYS[6])
if not gen then
  return {-5, 0}
end
local balance = redis.call('GET', KEYS[1])
if not balance then
  return {0, 0}
end
balance = tonumber(balance)
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {-4, 0}
end

local amount = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local state = redis.call('HMGET', KEYS[2], 'rq', 'tk', 'ts')
local rq, tk = rpm, tpm
if state[3] then
  local elapsed = math.max(0, now - tonumber(state[3]))
  rq = math.min(rpm, tonumber(state[1]) + elapsed * rpm / 60000)
  tk = math.min(tpm, tonumber(state[2]) + elapsed * tpm / 60000)
end

if rq < 1 then
  return {-2, math.ceil((1 - rq) * 60000 / rpm)}
end
-- The token bucket may go into debt: a large request is admitted when the
-- bucket is positive, and later ones wait until the debt is paid back.
if tk <= 0 then
  return {-3, math.ceil((1 - tk) * 60000 / tpm)}
end
if balance < amount then
  return {-1, balance}
end
local cap = tonumber(ARGV[7])
if cap >= 0 then
  local window = redis.call('HMGET', KEYS[7], 'w', 'used')
  if not window[1] then
    return {-7, 0}
  end
  local used = tonumber(window[2] or '0')
  if window[1] ~= ARGV[8] then
    used = 0
    redis.call('HSET', KEYS[7], 'w', ARGV[8], 'used', 0)
  end
  if used + amount > cap then
    return {-6, math.max(0, cap - used)}
  end
  redis.call('HINCRBY', KEYS[7], 'used', amount)
  redis.call('HSET', KEYS[3], 'cw', ARGV[8])
end

redis.call('DECRBY', KEYS[1], amount)
redis.call('HSET', KEYS[2], 'rq', tostring(rq - 1), 'tk', tostring(tk - tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[2], 120000)
redis.call('HSET', KEYS[3], 'amount', amount, 'tokens', tokens, 'created', now,
           unpack(ARGV, 9))
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), ARGV[6])
redis.call('INCRBY', KEYS[5], amount)
return {1, balance - amount, gen, math.floor(rq - 1), math.floor(math.max(0, tk - tokens))}
