-- Mark seats sold by this owner: 'S:<owner>' until ARGV[2] (unix ms), whatever the key held before
-- (PostgreSQL already committed the sale, so it is the truth).
-- KEYS[1]: the session's taken set; KEYS[2..]: seat keys. ARGV[1]: owner (reservation id),
-- ARGV[2]: expire-at in unix ms.
local taken_set = KEYS[1]
local owner = ARGV[1]
local expire_at_ms = ARGV[2]

for i = 2, #KEYS do
  redis.call('SET', KEYS[i], 'S:' .. owner, 'PXAT', expire_at_ms)
  redis.call('ZADD', taken_set, expire_at_ms, string.match(KEYS[i], ':([^:]+)$'))
end
if #KEYS > 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now + redis.call('PTTL', taken_set) < tonumber(expire_at_ms) then
    redis.call('PEXPIREAT', taken_set, expire_at_ms)
  end
end
return #KEYS - 1
