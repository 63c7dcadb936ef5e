-- Best available seats: choose N free seats and hold them, in one step (storage/best_seats.py is the
-- reference implementation and documents the rules; the two must choose alike).
-- KEYS[1]: the session's taken set (seat id -> when its key ends, ms; kept by every gate script),
-- KEYS[2]: the session's layout (hash: `rows` = row lengths "16,16,...", `ids` = the seat ids in seat order,
--          36 characters each, and each seat id -> its position, 0-based).
-- ARGV[1]: owner (reservation id), ARGV[2]: ttl ms, ARGV[3]: N, ARGV[4]: the seat key prefix (a seat's key is
-- the prefix and its id; one session, the same hash tag as KEYS), ARGV[5..]: the rows to choose in (0-based,
-- from the front), none for every row.
-- Reads the taken set and the layout, not every seat's key: O(taken seats) reads, O(seats) arithmetic.
-- The chosen seats' keys are then checked and set (they are the session's, in the same hash slot).
-- Returns the ids of the seats now held; {} when fewer than N are free; -1 when the layout is missing (the
-- caller writes it and asks again); -2 when the taken set keeps disagreeing with the seat keys (the caller
-- repairs the session's gate).
local taken_set, layout_key = KEYS[1], KEYS[2]
local owner = ARGV[1]
local ttl_ms = tonumber(ARGV[2])
local quantity = tonumber(ARGV[3])
local prefix = ARGV[4]
local ROW_WEIGHT = 2
local ID = 36

local layout = redis.call('HMGET', layout_key, 'rows', 'ids')
if not layout[1] or not layout[2] then
  return -1
end
local ids = layout[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- every row of the room: {index, length, offset = position of its first seat}
local all_rows = {}
local offset = 0
for length in string.gmatch(layout[1], '%d+') do
  local n = tonumber(length)
  all_rows[#all_rows + 1] = {index = #all_rows, length = n, offset = offset}
  offset = offset + n
end
local total_rows = #all_rows
local row_of = {}  -- position -> row number (1-based), for the rows to choose in
local rows = {}
if #ARGV >= 5 then
  for a = 5, #ARGV do rows[#rows + 1] = all_rows[tonumber(ARGV[a]) + 1] end
else
  rows = all_rows
end
local taken = {}  -- taken[m][c], c 0-based
for m, row in ipairs(rows) do
  local seats = {}
  for c = 0, row.length - 1 do
    seats[c] = false
    row_of[row.offset + c] = m
  end
  taken[m] = seats
end
local free = 0
for _, row in ipairs(rows) do free = free + row.length end

local function mark_taken(position)
  local m = row_of[position]
  if m and not taken[m][position - rows[m].offset] then
    taken[m][position - rows[m].offset] = true
    free = free - 1
  end
end

-- the seats taken now: drop the ended entries, then read the rest (positions through the layout)
redis.call('ZREMRANGEBYSCORE', taken_set, '-inf', now)
local members = redis.call('ZRANGE', taken_set, 0, -1)
for first = 1, #members, 500 do
  local got = redis.call('HMGET', layout_key, unpack(members, first, math.min(first + 499, #members)))
  for _, position in ipairs(got) do
    if position then mark_taken(tonumber(position)) end
  end
end

local function cost(row, c)
  return ROW_WEIGHT * math.abs(2 * row.index - (total_rows - 1)) + math.abs(2 * c - (row.length - 1))
end

-- key order: stranded, cost, row index, start (the reference's tuple order)
local function better(s1, k1, i1, st1, s2, k2, i2, st2)
  if s1 ~= s2 then return s1 < s2 end
  if k1 ~= k2 then return k1 < k2 end
  if i1 ~= i2 then return i1 < i2 end
  return st1 < st2
end

-- every run of free seats of map row m in `state`: a list of {first seat, length}
local function free_runs(state, m)
  local seats, length = state[m], rows[m].length
  local found = {}
  local c = 0
  while c < length do
    if seats[c] then
      c = c + 1
    else
      local first = c
      while c < length and not seats[c] do c = c + 1 end
      found[#found + 1] = {first, c - first}
    end
  end
  return found
end

-- the best block of `size` free seats by (stranded, cost, row index, start): map row, start, stranded.
-- A block inside a run of free seats [first, first + length) leaves gaps start - first and the rest.
-- The starts worth trying for a block of `size` in a run [first, stop): a block's cost is convex in its start,
-- lowest at (or beside) the start that centres it in the row, so the best start of each stranding level is the
-- centred one moved into the run, a step or two from it, or one of the run's ends and their neighbours (the
-- starts that leave a gap of 0, 1 or 2). A few starts per run instead of every one: a big room's call is cheap.
local function starts(first, stop, size, length)
  local last = stop - size
  local centre = math.floor((length - size) / 2)
  local found, seen = {}, {}
  for _, s in ipairs({first, first + 1, first + 2, last - 2, last - 1, last,
                      centre - 2, centre - 1, centre, centre + 1, centre + 2}) do
    if s < first then s = first elseif s > last then s = last end
    if not seen[s] then
      seen[s] = true
      found[#found + 1] = s
    end
  end
  return found
end

local function best_block(state, size)
  local bm, bs, bstr, bcost
  for m, row in ipairs(rows) do
    local width = row.length - 1
    local base = size * ROW_WEIGHT * math.abs(2 * row.index - (total_rows - 1))
    for _, run in ipairs(free_runs(state, m)) do
      local first, length = run[1], run[2]
      local stop = first + length
      if length >= size then
        for _, s in ipairs(starts(first, stop, size, row.length)) do
          local k = base
          for x = s, s + size - 1 do k = k + math.abs(2 * x - width) end
          local stranded = 0
          if s - first == 1 then stranded = 1 end
          if stop - (s + size) == 1 then stranded = stranded + 1 end
          if bm == nil or better(stranded, k, row.index, s, bstr, bcost, rows[bm].index, bs) then
            bm, bs, bstr, bcost = m, s, stranded, k
          end
        end
      end
    end
  end
  return bm, bs, bstr
end

local function copy_state()
  local state = {}
  for m, seats in pairs(taken) do
    local c2 = {}
    for c, t in pairs(seats) do c2[c] = t end
    state[m] = c2
  end
  return state
end

local function longest_run(state)
  local longest = 0
  for m, row in ipairs(rows) do
    local run = 0
    for c = 0, row.length - 1 do
      if state[m][c] then run = 0 else run = run + 1 end
      if run > longest then longest = run end
    end
  end
  return longest
end

-- the best block of the longest run that fits, again and again (strands what it must)
local function greedy_blocks()
  local state = copy_state()
  local chosen = {}
  while #chosen < quantity do
    local size = math.min(quantity - #chosen, longest_run(state))
    if size == 0 then return nil end
    local m, s = best_block(state, size)
    for c = s, s + size - 1 do
      state[m][c] = true
      chosen[#chosen + 1] = rows[m].offset + c + 1
    end
  end
  return chosen
end

-- the fewest blocks (then the lowest cost) that strand no seat, at most one block per run of free seats.
-- A room whose every run strands (runs of N + 1 seats, say) has many runs: each run's options cost O(run length)
-- per size (a block's cost from the run's prefix sums) and each state keeps a link to the state it extends, never a
-- copy of its picks, so the script stays within a few ms in the largest room.
local function split_without_stranding()
  -- dp[j] = {blocks, cost, previous state, m, start, k} taking j seats from the runs seen so far
  local dp = {}
  dp[0] = {0, 0}
  for m, row in ipairs(rows) do
    for _, run in ipairs(free_runs(taken, m)) do
      local first, length = run[1], run[2]
      local stop = first + length
      local options = {}
      -- sums[i]: the cost of the run's first i seats, so a block's cost is one subtraction
      local sums, sum = {[0] = 0}, 0
      for i = 1, length do
        sum = sum + cost(row, first + i - 1)
        sums[i] = sum
      end
      for k = 1, math.min(length, quantity) do
        if length - k ~= 1 then
          local best_cost, best_start
          for s = first, stop - k do
            local k_cost = sums[s - first + k] - sums[s - first]
            if s - first ~= 1 and stop - (s + k) ~= 1 and (best_cost == nil or k_cost < best_cost) then
              best_cost, best_start = k_cost, s
            end
          end
          if best_cost ~= nil then
            options[#options + 1] = {k, best_cost, best_start}
          end
        end
      end
      if #options > 0 then
        local new = {}
        for j = 0, quantity do new[j] = dp[j] end
        for j = 0, quantity do
          local here = dp[j]
          if here ~= nil then
            for _, o in ipairs(options) do
              local k = o[1]
              if j + k <= quantity then
                local blocks, total = here[1] + 1, here[2] + o[2]
                local current = new[j + k]
                if current == nil or blocks < current[1] or (blocks == current[1] and total < current[2]) then
                  new[j + k] = {blocks, total, here, m, o[3], k}
                end
              end
            end
          end
        end
        dp = new
      end
    end
  end
  local state = dp[quantity]
  if state == nil then return nil end
  local picks = {}  -- the blocks, last run first
  while state[3] ~= nil do
    picks[#picks + 1] = state
    state = state[3]
  end
  local chosen = {}
  for i = #picks, 1, -1 do
    local p = picks[i]
    for x = p[5], p[5] + p[6] - 1 do
      chosen[#chosen + 1] = rows[p[4]].offset + x + 1
    end
  end
  return chosen
end

local function block_keys(m, s)
  local chosen = {}
  for c = s, s + quantity - 1 do
    chosen[#chosen + 1] = rows[m].offset + c + 1
  end
  return chosen
end

local function choose()
  if quantity < 1 or free < quantity then return nil end
  local sm, ss, sstr = best_block(taken, quantity)
  if sm ~= nil and sstr == 0 then
    return block_keys(sm, ss)
  end
  local chosen = split_without_stranding()
  if chosen == nil then
    if sm ~= nil then
      chosen = block_keys(sm, ss)
    else
      chosen = greedy_blocks()
    end
  end
  return chosen
end

-- Choose; should a chosen seat's key exist all the same (the taken set missed it: a node of an older
-- version, a key restored by hand), note it in the set and choose again.
for _ = 1, 8 do
  local chosen = choose()
  if chosen == nil then
    return {}
  end
  local stale = false
  for _, p in ipairs(chosen) do
    local id = string.sub(ids, (p - 1) * ID + 1, p * ID)
    local left = redis.call('PTTL', prefix .. id)
    if left ~= -2 then
      stale = true
      mark_taken(p - 1)
      if left == -1 then left = ttl_ms end
      redis.call('ZADD', taken_set, now + left, id)
    end
  end
  if not stale then
    local ends = now + ttl_ms
    local held = {}
    for _, p in ipairs(chosen) do
      local id = string.sub(ids, (p - 1) * ID + 1, p * ID)
      redis.call('SET', prefix .. id, 'H:' .. owner, 'PX', ttl_ms)
      redis.call('ZADD', taken_set, ends, id)
      held[#held + 1] = id
    end
    if redis.call('PTTL', taken_set) < ttl_ms then
      redis.call('PEXPIREAT', taken_set, ends)
    end
    return held
  end
end
return -2
