-- Rebuild seat keys from PostgreSQL's state. KEYS[1]: the session's taken set; KEYS[2..]: seat keys.
-- ARGV: for each seat key, a value ('H:<owner>' or 'S:<owner>') then its expire-at in unix ms.
-- A key that already exists is left alone (a live hold may have been taken since the read); either way the
-- taken set gets the key's entry, scored by when the key ends.
local taken_set = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local restored, latest = 0, 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local value = ARGV[2 * i - 3]
  local expire_at_ms = tonumber(ARGV[2 * i - 2])
  local ends = expire_at_ms
  if redis.call('SET', key, value, 'PXAT', expire_at_ms, 'NX') then
    restored = restored + 1
  else
    local ttl = redis.call('PTTL', key)
    if ttl == -1 then ends = expire_at_ms elseif ttl >= 0 then ends = now + ttl else ends = 0 end
  end
  if ends > now then
    redis.call('ZADD', taken_set, ends, string.match(key, ':([^:]+)$'))
    if ends > latest then latest = ends end
  end
end
if latest > 0 and now + redis.call('PTTL', taken_set) < latest then
  redis.call('PEXPIREAT', taken_set, latest)
end
return restored
