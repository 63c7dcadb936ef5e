-- The demand on one session: hold attempts counted per second of Redis's clock, by every node.
-- KEYS[1]: the counts (hash: second -> attempts). ARGV[1]: attempts to add now; ARGV[2]: the window in seconds.
-- -> the attempts within the window (this second included); seconds older than the window are dropped.
local counts = KEYS[1]
local add, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local second = tonumber(redis.call('TIME')[1])
if add > 0 then
  redis.call('HINCRBY', counts, second, add)
end
local total = 0
local all = redis.call('HGETALL', counts)
for i = 1, #all, 2 do
  local at = tonumber(all[i])
  if at <= second - window then
    redis.call('HDEL', counts, all[i])
  else
    total = total + tonumber(all[i + 1])
  end
end
redis.call('EXPIRE', counts, window + 1)
return total
