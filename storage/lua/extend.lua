-- Follow a hold's extension: its seat keys expire at the new time.
-- KEYS: the hold's seat keys (one session, one hash tag). ARGV[1]: owner (reservation id), ARGV[2]: the new
-- expire-at in unix ms (PostgreSQL's expires_at). A key of this owner gets the new expiry; a key already gone
-- (its TTL ran out just before the extension) is set again; a key of another owner is left alone (PostgreSQL
-- is the arbiter: that hold fails there and the gate is repaired). Returns how many keys now follow the hold.
local owner = 'H:' .. ARGV[1]
local expire_at_ms = ARGV[2]

local following = 0
for _, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value == owner then
    redis.call('PEXPIREAT', key, expire_at_ms)
    following = following + 1
  elseif not value then
    redis.call('SET', key, owner, 'PXAT', expire_at_ms)
    following = following + 1
  end
end
return following
