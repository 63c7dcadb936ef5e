-- One node's count of a session's sockets, and the session's total over every live node.
-- KEYS[1]: the session's presence hash (node -> "<count>:<expire-at ms>").
-- ARGV[1]: node id, ARGV[2]: its sockets (0: it has none), ARGV[3]: how long the count lives (ms).
-- Times are Redis's own clock, so the nodes' clocks need not agree.
local key = KEYS[1]
local node = ARGV[1]
local count = tonumber(ARGV[2])
local ttl_ms = tonumber(ARGV[3])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if count > 0 then
  redis.call('HSET', key, node, count .. ':' .. (now_ms + ttl_ms))
else
  redis.call('HDEL', key, node)
end
local total = 0
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local n, expire_at = string.match(fields[i + 1], '^(%d+):(%d+)$')
  if n and tonumber(expire_at) > now_ms then
    total = total + tonumber(n)
  else
    redis.call('HDEL', key, fields[i])  -- a node that stopped reporting (killed): its sockets are gone
  end
end
if total > 0 then
  redis.call('PEXPIRE', key, ttl_ms)
end
return total
