-- The waiting room of one session: a position counter and a "serving" counter that time moves forward.
-- A buyer's place costs one HINCRBY; a buyer is admitted once `serving` reaches their position.
-- KEYS[1]: the line (hash: rate, serving, at, last); KEYS[2]: positions (user -> position);
-- KEYS[3]: last seen (user -> ms).
-- ARGV[1]: what to do:
--   'join'  ARGV[2] user, ARGV[3] grace ms: the user's place (a new one at the back if they had none, or
--           were last seen longer than the grace ago) -> {position, serving, last}, or {} if no line is open
--   'place' ARGV[2] user, ARGV[3] grace ms: the user's place, kept (0 if they have none, or gave it up)
--           -> {position or 0, serving, last}, or {} if no line is open
--   'touch' ARGV[2] grace ms, ARGV[3..] users: mark these users seen (if they still have a place)
--           -> {0, serving, last}, or {} if no line is open
--   'open'  ARGV[2] rate (buyers per second): open the line, or change its rate -> {0, serving, last}
--   'close' : delete the line -> {}
-- Time is Redis's own clock (TIME), so every node moves the same counter by the same clock: the cluster
-- admits at the rate whatever the number of nodes, and no node's clock matters. `serving` never passes
-- `last`: an empty line saves up no admissions for a later rush.
local line, positions, seen = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local KEEP_MS = 86400000  -- a line nobody touches for a day goes

local function advance()
  local rate = tonumber(redis.call('HGET', line, 'rate'))
  if not rate then
    return nil
  end
  local serving = tonumber(redis.call('HGET', line, 'serving')) or 0
  local at = tonumber(redis.call('HGET', line, 'at')) or now
  local last = tonumber(redis.call('HGET', line, 'last')) or 0
  local whole = math.floor((now - at) * rate / 1000)
  if whole >= 1 or serving >= last then
    serving = math.min(serving + whole, last)
    if serving >= last then
      at = now
    else
      at = at + whole * 1000 / rate
    end
    redis.call('HSET', line, 'serving', serving, 'at', string.format('%.3f', at))
  end
  return serving, last
end

local function keep()
  redis.call('PEXPIRE', line, KEEP_MS)
  redis.call('PEXPIRE', positions, KEEP_MS)
  redis.call('PEXPIRE', seen, KEEP_MS)
end

if op == 'open' then
  advance()  -- the admissions due at the old rate are made before the new rate applies
  local old_rate = tonumber(redis.call('HGET', line, 'rate'))
  local new_rate = tonumber(ARGV[2])
  local at = tonumber(redis.call('HGET', line, 'at'))
  if old_rate and at then
    -- the time towards the next admission keeps its share of the way, at the new rate
    redis.call('HSET', line, 'at', string.format('%.3f', now - (now - at) * old_rate / new_rate))
  end
  redis.call('HSET', line, 'rate', ARGV[2])
  if not redis.call('HGET', line, 'at') then
    redis.call('HSET', line, 'serving', 0, 'last', 0, 'at', now)
  end
  local serving, last = advance()
  keep()
  return {0, serving, last}
end

if op == 'close' then
  redis.call('DEL', line, positions, seen)
  return {}
end

local serving, last = advance()
if not serving then
  return {}
end

local function place_of(user, grace)
  local position = tonumber(redis.call('HGET', positions, user))
  local last_seen = tonumber(redis.call('HGET', seen, user))
  if position and last_seen and now - last_seen > grace then
    return nil  -- left for longer than the grace: the place is given up
  end
  return position
end

if op == 'place' then
  local user = ARGV[2]
  local position = place_of(user, tonumber(ARGV[3]))
  if not position then
    return {0, serving, last}
  end
  redis.call('HSET', seen, user, now)
  return {position, serving, last}
end

if op == 'join' then
  local user = ARGV[2]
  local position = place_of(user, tonumber(ARGV[3]))
  if not position then
    last = redis.call('HINCRBY', line, 'last', 1)
    position = last
    redis.call('HSET', positions, user, position)
  end
  redis.call('HSET', seen, user, now)
  keep()
  return {position, serving, last}
end

if op == 'touch' then
  local grace = tonumber(ARGV[2])
  for i = 3, #ARGV do
    local user = ARGV[i]
    local last_seen = tonumber(redis.call('HGET', seen, user))
    if last_seen and now - last_seen <= grace then
      redis.call('HSET', seen, user, now)
    end
  end
  return {0, serving, last}
end

return redis.error_reply('unknown op ' .. tostring(op))
