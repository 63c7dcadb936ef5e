-- All-or-nothing hold of every requested seat key.
-- KEYS[1]: the session's taken set (seat id -> end ms); KEYS[2..]: the seat keys (one session, one hash tag).
-- ARGV[1]: owner (reservation id), ARGV[2]: ttl ms.
-- Returns {} when every key was set, else the 1-based indexes (among the seat keys) of those already taken.
local taken_set = KEYS[1]
local owner = ARGV[1]
local ttl_ms = tonumber(ARGV[2])

local taken = {}
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    taken[#taken + 1] = i - 1
  end
end
if #taken > 0 then
  return taken
end
local t = redis.call('TIME')
local ends = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl_ms
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], 'H:' .. owner, 'PX', ttl_ms)
  redis.call('ZADD', taken_set, ends, string.match(KEYS[i], ':([^:]+)$'))
end
if redis.call('PTTL', taken_set) < ttl_ms then
  redis.call('PEXPIREAT', taken_set, ends)
end
return taken
