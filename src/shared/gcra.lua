-- saltgate's shared GCRA bucket (generic cell rate algorithm), one atomic step.
-- KEYS[1]: the bucket: its theoretical arrival time (TAT), microseconds on the server's clock.
-- ARGV[1]: emission interval in microseconds (what one cell adds to the TAT).
-- ARGV[2]: burst (cells that may be taken at once from a full bucket).
-- ARGV[3]: take  = take one cell if there is one;
--          peek  = answer as take would, store nothing;
--          force = take one cell even from an empty bucket (charge what already happened);
--          full  = 0 when the bucket is full (nothing is being refilled), else 1.
-- Returns 0 when allowed (take, peek), or the microseconds until one cell is there.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local mode = ARGV[3]
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if mode == 'full' then
  if tat <= now then return 0 end
  return 1
end
local allow_at = tat - (burst - 1) * interval
local new_tat = tat + interval
local function store()
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
end
if now < allow_at then
  if mode == 'force' then store() end
  return allow_at - now
end
if mode ~= 'peek' then store() end
return 0
