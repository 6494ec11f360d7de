-- What the calls of an uncontended release cost inside one redis-server (BENCHMARKS.md, run 11):
-- each line times 200 000 iterations with TIME and prints microseconds per iteration.
--
--   redis-server --port 7399 --save '' --daemonize yes
--   redis-cli -p 7399 --eval benches/profile/release_cost.lua lockkey x waiterskey , token channel
--
-- "set+get+del" is a plain compare-and-delete (the SET before it is subtracted); "+exists" adds
-- RELEASE_HAND_OFF's check for a waiter table, "+exists+publish" also the announcement.
local n = 200000
local function t() local x = redis.call('TIME') return tonumber(x[1]) * 1e6 + tonumber(x[2]) end
local k, tok, w, ch = KEYS[1], ARGV[1], KEYS[3], ARGV[2]
local out = {}
local s = t()
for i = 1, n do redis.call('SET', k, tok) end
local set = t() - s
s = t()
for i = 1, n do
  redis.call('SET', k, tok)
  if redis.pcall('GET', k) == tok then redis.call('DEL', k) end
end
table.insert(out, 'set+get+del ' .. (t() - s - set) / n)
s = t()
for i = 1, n do
  redis.call('SET', k, tok)
  if redis.pcall('GET', k) == tok and redis.call('EXISTS', w) == 0 then redis.call('DEL', k) end
end
table.insert(out, '+exists ' .. (t() - s - set) / n)
s = t()
for i = 1, n do
  redis.call('SET', k, tok)
  if redis.pcall('GET', k) == tok and redis.call('EXISTS', w) == 0 then
    redis.call('DEL', k)
    redis.call('PUBLISH', ch, '')
  end
end
table.insert(out, '+exists+publish ' .. (t() - s - set) / n)
s = t()
for i = 1, n do redis.call('EXISTS', w) end
table.insert(out, 'exists alone ' .. (t() - s) / n)
s = t()
for i = 1, n do redis.call('PUBLISH', ch, '') end
table.insert(out, 'publish alone ' .. (t() - s) / n)
return out
