-- Mark seats sold by this owner: 'S:<owner>' until ARGV[2] (unix ms), whatever the key held before
-- (PostgreSQL already committed the sale, so it is the truth).
-- KEYS: seat keys. ARGV[1]: owner (reservation id), ARGV[2]: expire-at in unix ms.
local owner = ARGV[1]
local expire_at_ms = ARGV[2]

for _, key in ipairs(KEYS) do
  redis.call('SET', key, 'S:' .. owner, 'PXAT', expire_at_ms)
end
return #KEYS
