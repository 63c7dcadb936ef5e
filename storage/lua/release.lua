-- Compare-and-delete: remove only the seat keys this owner holds or bought (and their taken-set entries).
-- A seat whose key is gone (expired, evicted, deleted) loses its taken-set entry too: nobody holds it in the gate,
-- and an entry left behind would hide a free seat from best available until the entry's own end.
-- KEYS[1]: the session's taken set; KEYS[2..]: seat keys. ARGV[1]: owner (reservation id).
-- Returns how many keys were deleted.
local taken_set = KEYS[1]
local owner = ARGV[1]

local deleted = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local value = redis.call('GET', key)
  if value and string.sub(value, 3) == owner then
    redis.call('DEL', key)
    redis.call('ZREM', taken_set, string.match(key, ':([^:]+)$'))
    deleted = deleted + 1
  elseif not value then
    redis.call('ZREM', taken_set, string.match(key, ':([^:]+)$'))
  end
end
return deleted
