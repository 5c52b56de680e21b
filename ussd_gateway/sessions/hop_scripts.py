"""The Lua scripts of a hop on the Redis store, and the layout of the session key."""

from __future__ import annotations

SESSION_KEY = "s"
"""`ussd:{84901234567}:s`: the subscriber's session, lock and rate counters."""
RATE_WINDOW_MS = 60_000
"""The subscriber rate limits' window (per minute), counted in the session key."""

# One string key per subscriber (`ussd:{84901234567}:s`) holds everything a hop reads
# and writes, as one MessagePack array (Lua's cmsgpack packs and unpacks it):
#   [1] lock token ('' free)   [2] lock held until (ms)   [3] rate window start (ms)
#   [4] hops in the window     [5] new dialogues in it    [6] session id of the saved reply
#   [7] its hop key            [8] when it was saved (ms) [9] the saved reply  [10] the record
# so a hop is GET + SET in each script: BEGIN (replay check, lock, rate counters, load)
# and COMMIT (save, expire, unlock), 6 Redis commands with the two EVALSHAs. Only the
# remembered language keeps a key of its own (`:lang`, a year, read with the session by
# one MGET): it outlives dialogues. Times are the gateway's clock in ms (passed in):
# lock expiry, rate windows and the begin-retry window compare times written by
# gateway hosts, so their clocks must agree to well within the lock TTL (NTP does);
# Redis's own clock judges only the money writes' fence (`LOCK_FENCE_LUA`).
# KEYS: session, language. ARGV: session id, hop key, token, lock ms, now ms, replay
# window ms ('' none), hops to count (0/1), dialogues to count (0/1), rate window ms,
# ttl s of a new key.
BEGIN = """
local v = redis.call('MGET', KEYS[1], KEYS[2])
local now = tonumber(ARGV[5])
local s
if v[1] then
  s = cmsgpack.unpack(v[1])
  if ARGV[2] ~= '' and s[6] == ARGV[1] and s[7] == ARGV[2] then
    if ARGV[6] == '' or now - s[8] <= tonumber(ARGV[6]) then return {'replay', s[9]} end
  end
  if s[1] ~= '' and s[2] > now then return {'locked'} end
else
  s = {'', 0, now, 0, 0, '', '', 0, '', ''}
end
if now - s[3] >= tonumber(ARGV[9]) then s[3] = now s[4] = 0 s[5] = 0 end
s[4] = s[4] + tonumber(ARGV[7])
s[5] = s[5] + tonumber(ARGV[8])
s[1] = ARGV[3]
s[2] = now + tonumber(ARGV[4])
if v[1] then
  redis.call('SET', KEYS[1], cmsgpack.pack(s), 'KEEPTTL')
else
  redis.call('SET', KEYS[1], cmsgpack.pack(s), 'EX', ARGV[10])
end
return {'ok', s[10], v[2], s[4], s[5]}
"""

# KEYS: session, language. ARGV: token, session id, hop key, reply, record, ttl s,
# lang ('' unchanged), now ms.
COMMIT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local s = cmsgpack.unpack(raw)
local now = tonumber(ARGV[8])
if s[1] ~= ARGV[1] or s[2] < now then return 0 end
s[1] = '' s[2] = 0 s[6] = ARGV[2] s[7] = ARGV[3] s[8] = now s[9] = ARGV[4] s[10] = ARGV[5]
redis.call('SET', KEYS[1], cmsgpack.pack(s), 'EX', ARGV[6])
if ARGV[7] ~= '' then redis.call('SET', KEYS[2], ARGV[7], 'EX', 31536000) end
return 1
"""

# KEYS: session. ARGV: token.
RELEASE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local s = cmsgpack.unpack(raw)
if s[1] ~= ARGV[1] then return 0 end
s[1] = '' s[2] = 0
redis.call('SET', KEYS[1], cmsgpack.pack(s), 'KEEPTTL')
return 1
"""

LOCK_FENCE_LUA = """
local function hop_lock_is(key, token)
  local raw = redis.call('GET', key)
  if not raw then return false end
  local s = cmsgpack.unpack(raw)
  local t = redis.call('TIME')
  return s[1] == token and s[2] >= tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
"""For scripts that must write only while a hop holds its subscriber's lock (the demo
backend's money writes): `hop_lock_is(session key, token)`, judged by Redis's clock,
so a write that reaches Redis after the lock ran out changes nothing."""
