-- Follow a hold's extension: its seat keys expire at the new time.
-- KEYS: the hold's seat keys (one session, one hash tag), as RedisGate.keys gives them: a first key naming
-- ':taken:' is the session's taken set (seat id -> end ms, kept beside the seat keys where the gate has one),
-- whose entries then follow too. ARGV[1]: owner (reservation id), ARGV[2]: the new expire-at in unix ms
-- (PostgreSQL's expires_at). A key of this owner gets the new expiry; a key already gone (its TTL ran out just
-- before the extension) is set again; a key of another owner is left alone (PostgreSQL is the arbiter: that
-- hold fails there and the gate is repaired). Returns how many keys now follow the hold.
local owner = 'H:' .. ARGV[1]
local expire_at_ms = tonumber(ARGV[2])

local first, taken_set = 1, nil
if KEYS[1] and string.find(KEYS[1], ':taken:', 1, true) then
  first, taken_set = 2, KEYS[1]
end
local following = 0
for i = first, #KEYS do
  local key = KEYS[i]
  local value = redis.call('GET', key)
  local follows = false
  if value == owner then
    redis.call('PEXPIREAT', key, expire_at_ms)
    follows = true
  elseif not value then
    redis.call('SET', key, owner, 'PXAT', expire_at_ms)
    follows = true
  end
  if follows then
    following = following + 1
    if taken_set then
      redis.call('ZADD', taken_set, expire_at_ms, string.match(key, ':([^:]+)$'))
    end
  end
end
if taken_set and following > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now + redis.call('PTTL', taken_set) < expire_at_ms then
    redis.call('PEXPIREAT', taken_set, expire_at_ms)
  end
end
return following
