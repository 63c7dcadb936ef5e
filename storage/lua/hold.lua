-- All-or-nothing hold of every requested seat key.
-- KEYS: the seat keys (one session, one hash tag). ARGV[1]: owner (reservation id), ARGV[2]: ttl ms.
-- Returns {} when every key was set, else the 1-based indexes of the keys already taken.
local owner = ARGV[1]
local ttl_ms = tonumber(ARGV[2])

local taken = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    taken[#taken + 1] = i
  end
end
if #taken > 0 then
  return taken
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, 'H:' .. owner, 'PX', ttl_ms)
end
return taken
