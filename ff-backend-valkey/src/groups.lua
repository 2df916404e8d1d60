-- Consumer groups: one script, every operation atomic on one group's keys,
-- which share a hash slot.
-- KEYS[1] group hash (name, family, filter, units)
-- KEYS[2] members hash (session -> heartbeat expiry, ms of server time)
-- KEYS[3] units hash (o:<u> owner, e:<u> epoch, c:<u> cursor)
-- KEYS[4] wake-up stream (one entry per change of members or owners)
-- ARGV[1] the operation, ARGV[2] the group's name, then its arguments.
-- A unit's lease lives while its owner's heartbeat does; the epoch moves
-- exactly when the owner changes; a commit compares owner, epoch and the
-- previous cursor.

local G, M, U, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, name = ARGV[1], ARGV[2]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function wake()
    redis.call('XADD', W, 'MAXLEN', '~', '64', '*', 'w', '1')
end

local function live(session)
    if not session then return false end
    local e = redis.call('HGET', M, session)
    return e ~= false and tonumber(e) > now
end

local function exists()
    local stored = redis.call('HGET', G, 'name')
    if stored == false then return false end
    if stored ~= name then
        return redis.error_reply('ff group key collision: group ' .. name .. ' hashes like ' .. stored)
    end
    return true
end

local function view()
    local def = redis.call('HMGET', G, 'family', 'filter', 'units')
    local units = tonumber(def[3])
    local members = {}
    local all = redis.call('HGETALL', M)
    for i = 1, #all, 2 do
        local left = tonumber(all[i + 1]) - now
        if left > 0 then
            members[#members + 1] = all[i]
            members[#members + 1] = left
        end
    end
    local rows = {}
    for u = 0, units - 1 do
        local f = redis.call('HMGET', U, 'o:' .. u, 'e:' .. u, 'c:' .. u)
        local owner = f[1]
        rows[#rows + 1] = owner or ''
        rows[#rows + 1] = live(owner) and 1 or 0
        rows[#rows + 1] = f[2] or '0'
        rows[#rows + 1] = f[3] or ''
    end
    return {'ok', def[1], def[2], units, members, rows}
end

if op == 'create' then
    local found = exists()
    if type(found) == 'table' then return found end
    if found then
        local def = redis.call('HMGET', G, 'family', 'filter', 'units')
        return {'exists', def[1], def[2], tonumber(def[3])}
    end
    local units = tonumber(ARGV[5])
    redis.call('HSET', G, 'name', name, 'family', ARGV[3], 'filter', ARGV[4], 'units', units)
    for u = 0, units - 1 do
        redis.call('HSET', U, 'e:' .. u, '0', 'c:' .. u, ARGV[6])
    end
    return {'created'}
end

local found = exists()
if type(found) == 'table' then return found end
if not found then return {'nogroup'} end

if op == 'view' then
    return view()
elseif op == 'heartbeat' then
    local session, ttl = ARGV[3], tonumber(ARGV[4])
    local was = live(session)
    redis.call('HSET', M, session, now + ttl)
    if not was then
        local all = redis.call('HGETALL', M)
        for i = 1, #all, 2 do
            if tonumber(all[i + 1]) < now - 3600000 then
                redis.call('HDEL', M, all[i])
            end
        end
        wake()
    end
    return view()
elseif op == 'acquire' then
    local u, session = ARGV[3], ARGV[4]
    local owner = redis.call('HGET', U, 'o:' .. u)
    local cursor = redis.call('HGET', U, 'c:' .. u)
    if cursor == false then return {'nounit'} end
    if owner ~= false and owner ~= session and live(owner) then return {'held'} end
    if owner ~= session then
        redis.call('HINCRBY', U, 'e:' .. u, 1)
        redis.call('HSET', U, 'o:' .. u, session)
        wake()
    end
    return {'ok', redis.call('HGET', U, 'e:' .. u), cursor}
elseif op == 'release' then
    local u, session, epoch = ARGV[3], ARGV[4], ARGV[5]
    if redis.call('HGET', U, 'o:' .. u) == session and redis.call('HGET', U, 'e:' .. u) == epoch then
        redis.call('HDEL', U, 'o:' .. u)
        wake()
    end
    return {'ok'}
elseif op == 'leave' then
    local session = ARGV[3]
    redis.call('HDEL', M, session)
    local units = tonumber(redis.call('HGET', G, 'units'))
    for u = 0, units - 1 do
        if redis.call('HGET', U, 'o:' .. u) == session then
            redis.call('HDEL', U, 'o:' .. u)
        end
    end
    wake()
    return {'ok'}
elseif op == 'commit' then
    local u, session, epoch, prev, nxt = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
    local f = redis.call('HMGET', U, 'o:' .. u, 'e:' .. u, 'c:' .. u)
    if f[1] ~= session or f[2] ~= epoch then
        return {'fenced', f[1] or 'nobody', f[2] or '0', 'the unit changed hands'}
    end
    if f[3] == nxt then return {'ok'} end
    if f[3] ~= prev then
        return {'fenced', f[1], f[2], 'the stored cursor is not the one last committed'}
    end
    redis.call('HSET', U, 'c:' .. u, nxt)
    return {'ok'}
end
return redis.error_reply('ff group script: unknown operation ' .. tostring(op))
