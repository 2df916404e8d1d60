-- ff retention: trim one family's stream and record the largest removed
-- entry id in the stream's max-deleted-entry-id (XSETID), and in KEYS[2]
-- that id with the stream's removal count (entries-added - length) right
-- after the trim, so subscribers can tell an expired position from one
-- whose next entry is retained, even after later trims by other clients.
--
-- KEYS[1]  the stream
-- KEYS[2]  the trim record: "<largest removed id> <entries-added - length>"
-- ARGV[1]  mode: "maxlen" (keep ARGV[2] newest entries), "minage" (keep
--          entries younger than ARGV[2] ms by the server clock) or
--          "before" (remove every entry before id ARGV[2])
-- ARGV[3]  slack: trim only once this many entries (maxlen) or
--          milliseconds (minage) past the limit
-- Returns the number of entries removed.
local key = KEYS[1]
local mode = ARGV[1]

local function split_id(id)
  local dash = string.find(id, '-', 1, true)
  return string.sub(id, 1, dash - 1), string.sub(id, dash + 1)
end

-- Compare decimal digit strings (no leading zeros) without float rounding.
local function cmp_digits(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end

local function cmp_id(a, b)
  local am, as = split_id(a)
  local bm, bs = split_id(b)
  local c = cmp_digits(am, bm)
  if c ~= 0 then
    return c
  end
  return cmp_digits(as, bs)
end

if redis.call('EXISTS', key) == 0 then
  return 0
end

local last_removed
local removed = 0
if mode == 'maxlen' then
  local keep = tonumber(ARGV[2])
  local len = redis.call('XLEN', key)
  if len <= keep + tonumber(ARGV[3]) then
    return 0
  end
  local gone = redis.call('XRANGE', key, '-', '+', 'COUNT', len - keep)
  last_removed = gone[#gone][1]
  removed = redis.call('XTRIM', key, 'MAXLEN', keep)
elseif mode == 'minage' or mode == 'before' then
  local bound = ARGV[2]
  if mode == 'minage' then
    local t = redis.call('TIME')
    local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
    if min_ms <= 0 then
      return 0
    end
    local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
    if #first == 0 or tonumber((split_id(first[1][1]))) >= min_ms - tonumber(ARGV[3]) then
      return 0
    end
    bound = string.format('%d-0', min_ms)
  end
  local gone = redis.call('XREVRANGE', key, '(' .. bound, '-', 'COUNT', 1)
  if #gone == 0 then
    return 0
  end
  last_removed = gone[1][1]
  removed = redis.call('XTRIM', key, 'MINID', bound)
else
  return redis.error_reply('ERR ff retention: unknown mode ' .. tostring(mode))
end

local info = redis.call('XINFO', 'STREAM', key)
local last_generated, max_deleted, entries_added, length
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    last_generated = info[i + 1]
  elseif info[i] == 'max-deleted-entry-id' then
    max_deleted = info[i + 1]
  elseif info[i] == 'entries-added' then
    entries_added = info[i + 1]
  elseif info[i] == 'length' then
    length = info[i + 1]
  end
end
if max_deleted == nil or entries_added == nil then
  return redis.error_reply('ERR ff retention needs Valkey 7.2+ / Redis 7.0+ (no max-deleted-entry-id)')
end
if cmp_id(last_removed, max_deleted) > 0 then
  redis.call('XSETID', key, last_generated, 'MAXDELETEDID', last_removed)
  max_deleted = last_removed
end
redis.call('SET', KEYS[2], max_deleted .. ' ' .. string.format('%d', entries_added - length))
return removed
