-- Compare-and-delete: remove only the seat keys this owner holds or bought.
-- KEYS: seat keys. ARGV[1]: owner (reservation id). Returns how many keys were deleted.
local owner = ARGV[1]

local deleted = 0
for _, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value and string.sub(value, 3) == owner then
    redis.call('DEL', key)
    deleted = deleted + 1
  end
end
return deleted
