-- All-or-nothing hold of every requested seat key.
-- KEYS[1]: the session's taken set (seat id -> end ms); KEYS[2..]: the seat keys (one session, one hash tag),
-- then ARGV[3] keys only looked at (a held seat's neighbours, for the no-orphan rule; none by default).
-- ARGV[1]: owner (reservation id), ARGV[2]: ttl ms, ARGV[3]: how many keys at the end are only looked at.
-- Returns the 1-based indexes (among the seat keys) of those already taken, nothing held; else, every seat
-- held, the negated 1-based indexes (among the looked-at keys) of those that exist ({} when none do).
local taken_set = KEYS[1]
local owner = ARGV[1]
local ttl_ms = tonumber(ARGV[2])
local watched = tonumber(ARGV[3] or '0')
local last = #KEYS - watched

local taken = {}
for i = 2, last do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    taken[#taken + 1] = i - 1
  end
end
if #taken > 0 then
  return taken
end
local t = redis.call('TIME')
local ends = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl_ms
for i = 2, last do
  redis.call('SET', KEYS[i], 'H:' .. owner, 'PX', ttl_ms)
  redis.call('ZADD', taken_set, ends, string.match(KEYS[i], ':([^:]+)$'))
end
if redis.call('PTTL', taken_set) < ttl_ms then
  redis.call('PEXPIREAT', taken_set, ends)
end
local seen = {}
for j = 1, watched do
  if redis.call('EXISTS', KEYS[last + j]) == 1 then
    seen[#seen + 1] = -j
  end
end
return seen
