-- The waiting room of one session: a position counter, and a "serving" counter that moves forward by one of
-- two inlets. A buyer's place costs one increment; a buyer is admitted once `serving` reaches their position.
--   rate inlet:     `serving` moves at `rate` buyers per second of Redis's clock.
--   capacity inlet: at most `capacity` buyers inside at once; `serving` moves as buyers leave (they bought,
--                   gave up, or their time inside, `ttl` ms, ran out).
-- KEYS[1]: the line (hash: rate, capacity, ttl, serving, at, last, opened, entered)
-- KEYS[2]: the order (sorted set: user -> position)
-- KEYS[3]: last seen (hash: user -> ms)
-- KEYS[4]: inside (sorted set: user -> ms their time inside ends; the capacity inlet only)
-- ARGV[1]: what to do; ARGV[2]: the grace in ms (a waiting buyer not seen for longer has given up their place)
--   'join'  ARGV[3] user: the user's place (a new one at the back if they had none)
--   'place' ARGV[3] user: the user's place, kept (position 0 if they have none)
--   'touch' ARGV[3..] users: mark these waiting users seen (if they still have a place)
--   'leave' ARGV[3] user: the user leaves the line, or (capacity) frees their place inside
--   'open'  ARGV[3] rate, ARGV[4] capacity, ARGV[5] ttl ms: open the line or change its inlet
--   'close' : delete the line
-- Every op but 'close' answers {position or 0, serving, last, inside-until ms or 0, rate x 1000, opened ms}, or
-- {} when no line is open (never opened, closed, or lost with Redis: the caller opens it again from PostgreSQL).
-- `opened` names the line: a line opened again after Redis lost it has another, and its places are new ones.
-- Time is Redis's own clock (TIME): every node moves the same counter by the same clock, so the cluster admits
-- at the rate whatever the number of nodes, and no node's clock matters. `serving` never passes `last`: an
-- empty line saves up no admissions for a later rush.
local line, order, seen, inside = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, grace = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local KEEP_MS = 86400000  -- a line nobody touches for a day goes

-- The line's fields, read once per call (one HMGET, not one HGET each: commands inside a script cost too)
local FIELDS = {'rate', 'capacity', 'ttl', 'serving', 'at', 'last', 'opened', 'entered'}
local state = {}
local values = redis.call('HMGET', line, unpack(FIELDS))
for i, name in ipairs(FIELDS) do
  state[name] = tonumber(values[i])
end

local function num(field, default)
  return state[field] or default
end

local function set(...)  -- HSET, and the same fields in `state`
  local args = {...}
  for i = 1, #args, 2 do
    state[args[i]] = tonumber(args[i + 1])
  end
  redis.call('HSET', line, ...)
end

local function waiting_and_here(user)
  local last_seen = tonumber(redis.call('HGET', seen, user))
  return last_seen ~= nil and now - last_seen <= grace
end

local function advance_rate(rate, serving, last)
  local at = num('at', now)
  local whole = math.floor((now - at) * rate / 1000)
  if whole >= 1 or serving >= last then
    serving = math.min(serving + whole, last)
    if serving >= last then at = now else at = at + whole * 1000 / rate end
    set('serving', serving, 'at', string.format('%.3f', at))
  end
  return serving
end

local function advance_capacity(capacity, serving, last)
  redis.call('ZREMRANGEBYSCORE', inside, '-inf', now)  -- time inside ran out: those places are free again
  local free = capacity - redis.call('ZCARD', inside)
  local ttl, entered = num('ttl', 600000), num('entered', 0)
  while free > 0 and serving < last do
    local next = redis.call('ZRANGEBYSCORE', order, '(' .. serving, '+inf', 'WITHSCORES', 'LIMIT', 0, free)
    if #next == 0 then
      serving = last  -- nobody waits beyond `serving` (they left)
      break
    end
    for i = 1, #next, 2 do
      local user = next[i]
      serving = tonumber(next[i + 1])
      if waiting_and_here(user) then
        redis.call('ZADD', inside, now + ttl, user)
        free, entered = free - 1, entered + 1
        if entered % 100 == 1 then
          redis.call('PEXPIRE', inside, KEEP_MS)  -- made by the first to go in: it expires with the line
        end
      else  -- gone for longer than the grace: their turn goes to the next buyer, not to an empty chair
        redis.call('ZREM', order, user)
        redis.call('HDEL', seen, user)
      end
    end
  end
  if serving ~= num('serving', 0) or entered ~= num('entered', 0) then
    set('serving', serving, 'entered', entered)
  end
  return serving
end

-- The line moved to now; nil when no line is open.
local function advance()
  local rate, capacity = num('rate', 0), num('capacity', 0)
  if rate <= 0 and capacity <= 0 then
    return nil
  end
  local serving, last = num('serving', 0), num('last', 0)
  if capacity > 0 then
    return advance_capacity(capacity, serving, last), last
  end
  return advance_rate(rate, serving, last), last
end

-- Buyers per second x 1000, for the wait estimate: the rate; for the capacity inlet, the admissions measured
-- since the line filled up (before any: capacity / time inside).
local function rate_milli()
  local rate, capacity = num('rate', 0), num('capacity', 0)
  if capacity <= 0 then
    return math.floor(rate * 1000)
  end
  local after_fill = num('entered', 0) - capacity
  local elapsed = now - num('opened', now)
  if after_fill > 0 and elapsed > 1000 then
    return math.floor(after_fill * 1000000 / elapsed)
  end
  return math.max(1, math.floor(capacity * 1000000 / num('ttl', 600000)))
end

local function keep()
  for _, key in ipairs({line, order, seen, inside}) do
    redis.call('PEXPIRE', key, KEEP_MS)
  end
end

-- The user's position, or nil: no place, a waiting place given up (not seen for longer than the grace), or
-- (capacity) a turn whose time inside ended.
local function place_of(user, serving)
  local position = tonumber(redis.call('ZSCORE', order, user))
  if not position then
    return nil
  end
  if position > serving then
    if waiting_and_here(user) then return position end
  elseif num('capacity', 0) <= 0 or redis.call('ZSCORE', inside, user) then
    return position
  end
  redis.call('ZREM', order, user)
  redis.call('HDEL', seen, user)
  return nil
end

local function answer(position, serving, last, user)
  local until_ms = 0
  if user and position > 0 and position <= serving then
    until_ms = tonumber(redis.call('ZSCORE', inside, user)) or 0
  end
  return {position, serving, last, until_ms, rate_milli(), num('opened', 0)}
end

if op == 'open' then
  local rate, capacity, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local was_open = advance() ~= nil  -- the admissions due under the old inlet are made first
  local old_rate, at = num('rate', 0), state['at']
  if old_rate > 0 and rate > 0 and at then
    -- a new rate: the time towards the next admission keeps its share of the way
    set('at', string.format('%.3f', now - (now - at) * old_rate / rate))
  else
    set('at', now)
  end
  if not was_open then
    set('serving', num('serving', 0), 'last', num('last', 0), 'opened', now, 'entered', 0)
  end
  set('rate', rate, 'capacity', capacity, 'ttl', ttl)
  local serving, last = advance()
  keep()
  return answer(0, serving, last, nil)
end

if op == 'close' then
  redis.call('DEL', line, order, seen, inside)
  return {}
end

local serving, last = advance()
if not serving then
  return {}
end

if op == 'place' then
  local user = ARGV[3]
  local position = place_of(user, serving)
  if not position then
    return answer(0, serving, last, nil)
  end
  redis.call('HSET', seen, user, now)
  return answer(position, serving, last, user)
end

if op == 'join' then
  local user = ARGV[3]
  local position = place_of(user, serving)
  if not position then
    last = num('last', 0) + 1
    set('last', last)
    position = last
    redis.call('ZADD', order, position, user)
  end
  redis.call('HSET', seen, user, now)
  serving, last = advance()  -- a free place inside is taken at once
  if position == last and last % 100 == 1 then
    keep()  -- a day more for a line that is still growing (every join: 4 commands each, a fifth of the total)
  end
  return answer(position, serving, last, user)
end

if op == 'touch' then
  for i = 3, #ARGV do
    if waiting_and_here(ARGV[i]) then
      redis.call('HSET', seen, ARGV[i], now)
    end
  end
  return answer(0, serving, last, nil)
end

if op == 'leave' then
  local user = ARGV[3]
  redis.call('ZREM', order, user)
  redis.call('HDEL', seen, user)
  redis.call('ZREM', inside, user)
  serving, last = advance()  -- the place freed goes to the next buyer now
  return answer(0, serving, last, nil)
end

return redis.error_reply('unknown op ' .. tostring(op))
