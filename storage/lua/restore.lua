-- Rebuild seat keys from PostgreSQL's state. KEYS: seat keys.
-- ARGV: for each key, a value ('H:<owner>' or 'S:<owner>') then its expire-at in unix ms.
-- A key that already exists is left alone (a live hold may have been taken since the read).
local restored = 0
for i, key in ipairs(KEYS) do
  local value = ARGV[2 * i - 1]
  local expire_at_ms = ARGV[2 * i]
  if redis.call('SET', key, value, 'PXAT', expire_at_ms, 'NX') then
    restored = restored + 1
  end
end
return restored
