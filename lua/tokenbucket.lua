-- Sluice token buckets: one call decides every bucket of one request.
--
-- KEYS[i]  bucket key
-- ARGV     six integers per key: op, num, den, cap, cost, maxdebt
--          op: 0 take (all or nothing), 1 shadow take, 2 peek, 3 refund,
--          4 usage charge, 5 shadow usage charge, 6 usage check,
--          7 shadow usage check, 8 quota take (denies only when every
--          quota take of the call is short); maxdebt is 0 for admission
--          limits
-- Returns  {allowed, ok_1, remaining_1, reset_us_1, ok_2, ...}, followed by
--          cut_1 ... cut_n (tokens the debt floor cut off each usage
--          charge) only when some charge was cut or some bucket is
--          unsettled, then unsettled_1 ... unsettled_n only when some
--          bucket is (Cluster only, below)
--
-- A request whose buckets span several Redis Cluster slots is one call per
-- slot group, and all or nothing across them is kept by refunds: each
-- group takes, and when any group denied, the groups that took are given
-- back what they paid. Such a call passes one more key, its record, in the
-- group's slot, and two more ARGV after the buckets' six:
--   't', ttl_ms  decide as usual and, when some bucket paid (a take or a
--                shadow take; any op that pays, but never a usage
--                charge), write the record: what each bucket paid and its
--                debt after the call, expiring after ttl_ms
--   'r', 0       refund: give back what the record says and delete it; no
--                record (never paid, already refunded, expired) does
--                nothing, so a refund can be sent again safely. Replies
--                {1, 1, remaining_i, reset_us_i, ...}: the buckets after.
--
-- Such a take also adds what each bucket paid, in whole tokens, to the
-- bucket's unsettled marker, KEYS[i]..'~u' (same slot: it follows the hash
-- tag; after the tag a bucket key holds only length-prefixed parts, '!' or
-- '#', so no bucket ends in '~u', and a record has more than one character
-- after its '~'), expiring with the record or later. A refund takes its
-- record's tokens off again; a take that is never refunded (its call was
-- allowed) stays counted until the marker expires: the marker over-counts
-- what may still be refunded, never under-counts.
-- The Cluster form of the script (unsettled below set to true by the
-- store) returns, for every bucket that is short after the call, its
-- marker: the tokens of its debt that takes of other calls may still give
-- back, so that a deny cache learns only what holds after every refund.
-- On one node the script is the same as ever and reads no marker.
--
-- A bucket is stored as its slack, with the key expiring at the millisecond
-- the bucket is full again: debt = (expire_ms*1000 - now)*num - slack,
-- floored at 0 and capped at (cap+maxdebt)*den. A missing key is a full
-- bucket. A usage bucket's debt may pass cap*den: its balance is negative.
-- limiter/bucket.go does the same integer steps; keep the two in step.
-- Every number stays below 2^53, where Lua's doubles are exact.

local unsettled = false

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local rec, mode
if #ARGV ~= 6 * n then
  rec = KEYS[n]
  n = n - 1
  mode = ARGV[6 * n + 1]
end

-- exact integer quotient and remainder for 0 <= a < 2^53, 0 < b
local function divmod(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then q = q - 1; r = r + b elseif r >= b then q = q + 1; r = r - b end
  return q, r
end

local function ceildiv(a, b)
  if a <= 0 then return 0 end
  local q, r = divmod(a, b)
  if r > 0 then q = q + 1 end
  return q
end

-- the unsettled marker of bucket k: whole tokens of its debt that takes
-- across slots may still refund
local function owed(k)
  return tonumber(redis.call('GET', k .. '~u') or '0')
end

-- the debt of bucket k now (num: debt refilled per microsecond; bound: the
-- most debt the bucket holds, cap*den for an admission limit)
local function loadDebt(k, num, bound)
  local full = redis.call('PEXPIRETIME', k)
  if full <= 0 then return 0 end
  local diff = full * 1000 - now
  if diff <= 0 then return 0 end
  if diff > (divmod(bound, num)) + 1000 then return bound end
  -- the slack was written under the bucket's last rate: under a smaller
  -- num it would stand for more than the millisecond it means
  local d = diff * num - math.min(tonumber(redis.call('GET', k) or '0'), 1000 * num - 1)
  if d < 0 then return 0 elseif d > bound then return bound end
  return d
end

-- writes debt d of bucket k back (a debt of 0 is a full bucket: no key)
local function saveDebt(k, d, num)
  if d <= 0 then
    redis.call('DEL', k)
    return
  end
  local q, r = divmod(d, num)
  local tt = now + q
  local full
  if r > 0 then
    full = (divmod(tt, 1000)) + 1
  else
    full = (divmod(tt + 999, 1000))
  end
  local slack = (full * 1000 - now) * num - d
  redis.call('SET', k, string.format('%d', slack), 'PXAT', string.format('%d', full))
end

-- One enforced take, the common call: the steps below for n = 1, op 0,
-- without the tables. Keep it in step with them.
if n == 1 and ARGV[1] == '0' and rec == nil then
  local k = KEYS[1]
  local num1, den1, cap1, cost1 = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local capd1 = cap1 * den1
  local d = loadDebt(k, num1, capd1)
  local need = cost1 * den1
  if cost1 > cap1 or d + need > capd1 then
    local reset = 0
    if cost1 <= cap1 then reset = ceildiv(d + need - capd1, num1) end
    local u = 0
    if unsettled then u = owed(k) end
    if u > 0 then return {0, 0, (divmod(capd1 - d, den1)), reset, 0, u} end
    return {0, 0, (divmod(capd1 - d, den1)), reset}
  end
  if need > 0 then
    d = d + need
    saveDebt(k, d, num1)
  end
  if unsettled and d + math.max(need, den1) > capd1 then
    local u = owed(k)
    if u > 0 then return {1, 1, (divmod(capd1 - d, den1)), ceildiv(d, num1), 0, u} end
  end
  return {1, 1, (divmod(capd1 - d, den1)), ceildiv(d, num1)}
end

local op, num, den, cap, cost, capd = {}, {}, {}, {}, {}, {}
local lim, bound = {}, {}
local debt, slot, loaded = {}, {}, {}
local seen = {}
for i = 1, n do
  local a = (i - 1) * 6
  op[i] = tonumber(ARGV[a + 1]); num[i] = tonumber(ARGV[a + 2]); den[i] = tonumber(ARGV[a + 3])
  cap[i] = tonumber(ARGV[a + 4]); cost[i] = tonumber(ARGV[a + 5]); capd[i] = cap[i] * den[i]
  lim[i] = cap[i] + tonumber(ARGV[a + 6]); bound[i] = lim[i] * den[i]
  local k = KEYS[i]
  local s = seen[k]
  if s == nil then
    s = i
    seen[k] = i
    local d = loadDebt(k, num[i], bound[i])
    debt[i] = d
    loaded[i] = d
  end
  slot[i] = s
end

-- a refund of a record: what each bucket paid, less what refill since
-- the take may have wasted (debt the bucket would not have had without
-- the take), so the bucket never ends fuller than if the take had never
-- been made: at most its debt after the take less the refill since
if mode == 'r' then
  local r = redis.call('GET', rec)
  if r then
    redis.call('DEL', rec)
    local f = {}
    for x in string.gmatch(r, '%d+') do f[#f + 1] = tonumber(x) end
    local el = now - f[1]
    if el < 0 then el = 0 end
    for j = 2, #f - 2, 3 do
      local i, back, after = f[j], f[j + 1], f[j + 2]
      if i >= 1 and i <= n and slot[i] == i then
        -- this take is settled: off the marker (which outlives the record)
        local m = KEYS[i] .. '~u'
        local u, x = tonumber(redis.call('GET', m) or '0'), ceildiv(back, den[i])
        if u > x then redis.call('DECRBY', m, x) elseif u > 0 then redis.call('DEL', m) end
        local q = divmod(after, num[i])
        local floor = 0
        if el <= q then floor = after - el * num[i] end
        if back > floor then back = floor end
        if back > 0 then
          local d = debt[i] - back
          if d < 0 then d = 0 end
          debt[i] = d
        end
      end
    end
  end
  local out = {1}
  for i = 1, n do
    if slot[i] == i and debt[i] ~= loaded[i] then saveDebt(KEYS[i], debt[i], num[i]) end
    local d = debt[slot[i]]
    local left = capd[i] - d
    if left < 0 then left = 0 end
    out[#out + 1] = 1
    out[#out + 1] = (divmod(left, den[i]))
    out[#out + 1] = ceildiv(d, num[i])
  end
  return out
end

-- what each bucket (by its first entry) paid, for a record: every op that
-- pays adds to it (usage charges excepted: they are never refunded)
local paid = {}
for i = 1, n do paid[i] = 0 end

-- refunds apply first and always
for i = 1, n do
  if op[i] == 3 then
    local c = cost[i]
    if c > lim[i] then c = lim[i] end
    local d = debt[slot[i]] - c * den[i]
    if d < 0 then d = 0 end
    debt[slot[i]] = d
  end
end

-- usage answers, from the balance before this call's takes: a charge is ok
-- when the bucket holds its cost, a check when it holds one whole token
local ok = {}
local allowed = true
for i = 1, n do
  local o = op[i]
  if o >= 4 and o <= 7 then
    local need = den[i]
    local good
    if o <= 5 and cost[i] > cap[i] then
      good = false
    else
      if o <= 5 then need = cost[i] * den[i] end
      good = debt[slot[i]] + need <= capd[i]
    end
    ok[i] = good
    if not good and (o == 4 or o == 6) then allowed = false end
  end
end

-- enforced takes: all or nothing
for i = 1, n do
  if op[i] == 0 then
    local need = cost[i] * den[i]
    if cost[i] > cap[i] or debt[slot[i]] + need > capd[i] then
      allowed = false
      ok[i] = false
    else
      ok[i] = true
      debt[slot[i]] = debt[slot[i]] + need
    end
  end
end
-- op 8, quota takes, booked after the enforced ones: the call is denied
-- when there are some and none fits
local quota, quotaok = false, false
for i = 1, n do
  if op[i] == 8 then
    quota = true
    local need = cost[i] * den[i]
    if cost[i] > cap[i] or debt[slot[i]] + need > capd[i] then
      ok[i] = false
    else
      ok[i] = true
      quotaok = true
      debt[slot[i]] = debt[slot[i]] + need
    end
  end
end
-- (a group of a call across Cluster slots, which writes a record, leaves
-- this to the caller: the quota takes of other groups may fit, and when
-- none does anywhere, every group that paid is refunded)
if quota and not quotaok and rec == nil then allowed = false end
if not allowed then
  for i = 1, n do
    if (op[i] == 0 or op[i] == 8) and ok[i] then debt[slot[i]] = debt[slot[i]] - cost[i] * den[i] end
  end
end

-- shadow takes pay only when the call is allowed and they fit
for i = 1, n do
  if op[i] == 1 then
    local need = cost[i] * den[i]
    local fits = cost[i] <= cap[i] and debt[slot[i]] + need <= capd[i]
    ok[i] = fits
    if fits and allowed then
      debt[slot[i]] = debt[slot[i]] + need
      paid[slot[i]] = paid[slot[i]] + need
    end
  end
end
if allowed then
  for i = 1, n do
    if op[i] == 0 or (op[i] == 8 and ok[i]) then paid[slot[i]] = paid[slot[i]] + cost[i] * den[i] end
  end
end

-- usage charges are paid in full whatever the answer, down to the debt
-- floor; what the floor cuts off is counted
local cut, anycut = {}, false
for i = 1, n do
  cut[i] = 0
  if op[i] == 4 or op[i] == 5 then
    local c = cost[i]
    if c > lim[i] then c = lim[i] end
    local x = cost[i] - c
    local d = debt[slot[i]] + c * den[i]
    if d > bound[i] then
      x = x + ceildiv(d - bound[i], den[i])
      d = bound[i]
    end
    if d > debt[slot[i]] then debt[slot[i]] = d end
    if x > 0 then cut[i] = x; anycut = true end
  end
end

-- write back the buckets whose debt changed (as the memory store does: a
-- debt capped by a smaller capacity is not written back by itself)
for i = 1, n do
  if slot[i] == i and debt[i] ~= loaded[i] then
    saveDebt(KEYS[i], debt[i], num[i])
  end
end

-- the record of what paid, for a refund: "time i paid debt ..."
if mode == 't' then
  local r, any = {string.format('%d', now)}, false
  for i = 1, n do
    if slot[i] == i and paid[i] > 0 then
      any = true
      r[#r + 1] = string.format('%d %d %d', i, paid[i], debt[i])
    end
  end
  if any then
    local ttl = tonumber(ARGV[6 * n + 2])
    redis.call('SET', rec, table.concat(r, ' '), 'PX', ttl)
    -- the markers: extended to the record's ttl, never shortened
    for i = 1, n do
      if slot[i] == i and paid[i] > 0 then
        local m = KEYS[i] .. '~u'
        redis.call('INCRBY', m, ceildiv(paid[i], den[i]))
        if redis.call('PTTL', m) < ttl then redis.call('PEXPIRE', m, ttl) end
      end
    end
  end
end

local out = {allowed and 1 or 0}
local owes, anyowed = {}, false
for i = 1, n do
  local d = debt[slot[i]]
  -- a key listed again with a smaller cap can hold more debt than capd[i]
  local left = capd[i] - d
  if left < 0 then left = 0 end
  local remaining = (divmod(left, den[i]))
  local reset
  local good = ok[i]
  if op[i] == 2 or op[i] == 3 then good = true end
  if good then
    reset = ceildiv(d, num[i])
  elseif op[i] == 6 or op[i] == 7 then
    reset = ceildiv(d + den[i] - capd[i], num[i])
  elseif cost[i] > cap[i] then
    reset = 0
  else
    reset = ceildiv(d + cost[i] * den[i] - capd[i], num[i])
  end
  out[#out + 1] = good and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = reset
  owes[i] = 0
  -- a bucket a deny cache may learn from: not ok, or a take's (or
  -- peek's) bucket that cannot hold its cost (a token at least) again
  if unsettled and op[i] ~= 3 then
    local o = op[i]
    if not good or ((o <= 2 or o == 8) and d + math.max(cost[i], 1) * den[i] > capd[i]) then
      owes[i] = owed(KEYS[i])
      if owes[i] > 0 then anyowed = true end
    end
  end
end
if anycut or anyowed then
  for i = 1, n do out[#out + 1] = cut[i] end
end
if anyowed then
  for i = 1, n do out[#out + 1] = owes[i] end
end
return out
