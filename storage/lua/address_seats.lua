-- The seats one client address holds within one hold lifetime, across every node: take `count` more, or none.
-- KEYS[1]  the address's sorted set: member "<ref>:<count>", score = when that share ends (ms, Redis clock)
-- ARGV[1]  ref of this take (a fresh id)
-- ARGV[2]  seats asked for
-- ARGV[3]  the cap
-- ARGV[4]  how long a share lasts, ms (the hold TTL)
-- Returns 0 when taken, else the ms until enough of the address's earlier shares end.
local key = KEYS[1]
local ref = ARGV[1]
local count = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local ttl_ms = tonumber(ARGV[4])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local shares = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local held = 0
for i = 1, #shares, 2 do
    held = held + tonumber(string.match(shares[i], ':(%d+)$'))
end
if held + count > cap then
    -- free enough: walk the shares in the order they end
    local need = held + count - cap
    for i = 1, #shares, 2 do
        need = need - tonumber(string.match(shares[i], ':(%d+)$'))
        if need <= 0 then
            return math.max(1, tonumber(shares[i + 1]) - now)
        end
    end
    return ttl_ms
end
redis.call('ZADD', key, now + ttl_ms, ref .. ':' .. count)
redis.call('PEXPIRE', key, ttl_ms)
return 0
