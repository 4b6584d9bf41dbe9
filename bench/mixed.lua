-- wrk script for bench/run.py: hot GETs with pre-signed (Hawk) PUTs mixed in,
-- and the latency of reads and of writes measured apart.
--
-- Usage: wrk -t1 -s bench/mixed.lua URL -- READS_FILE SIGNED_FILE HOST_HEADER WRITE_EVERY
--
-- READS_FILE: one GET path per line (/v1/addons/{id}/files/{sha}), replayed
-- round-robin. SIGNED_FILE: pre-signed requests as bench/writes.py makes them,
-- METHOD<TAB>PATH<TAB>AUTHORIZATION<TAB>JSON_BODY, each to be sent once (a Hawk
-- nonce is accepted once). Every WRITE_EVERY-th request is the next signed one
-- (20: 5 % writes); 0 sends reads only (the read-only reference, measured the
-- same way). HOST_HEADER is the host:port the requests were signed for.
-- One thread only (-t1): a second thread would send every signed request again.
--
-- wrk's own latency histogram mixes reads and writes, and its Lua API does not
-- say which connection an answer belongs to. So the script times requests
-- itself: request() notes a monotonic clock (LuaJIT FFI, clock_gettime) under
-- the file's sha256, which is the last segment of every path; response() finds
-- the sha256 in the answer's JSON body and takes the oldest start noted under
-- it (first in, first out: the same hot file may be in flight on two
-- connections at once; then the two are assumed to finish in order). The
-- difference goes to the read or the write sample, by which list the file came
-- from. Like wrk's own figure, it runs from the moment a connection asks for
-- its next request to the moment the answer is parsed.
--
-- If the signed requests run out, they are sent again and counted in
-- `exhausted` (those answers are 401): bench/run.py then runs again with more.
--
-- done() prints one line that bench/run.py reads (times in microseconds):
--   mixed: reads <n> p50 <us> p90 <us> p99 <us> max <us>; writes <n> p50 <us> p90 <us>
--   p99 <us> max <us>; responses <n> non-2xx <n> unmatched <n> writes_sent <n> of <n>
--   exhausted <n> (<status>=<count> ...)

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } addonreg_mixed_timespec;
int clock_gettime(int clk_id, addonreg_mixed_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("addonreg_mixed_timespec")
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
               .. "?.lua;" .. package.path
local wrkshared = require("wrkshared")

local reads, read_keys, writes, write_keys = {}, {}, {}, {}
local is_write = {}
local started = {} -- sha256 -> FIFO {h = head, t = tail, [i] = start time}
local write_every = 0
local counter, next_read, next_write = 0, 1, 1
local threads = {}

-- Per-thread results; globals so that done() can read them with thread:get().
read_lat = {}
write_lat = {}
responses = 0
non2xx = 0
unmatched = 0
writes_sent = 0
writes_presigned = 0
exhausted = 0
statuses = {}

local function last_segment(path)
  return path:match("([^/]+)$")
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local reads_path, signed_path, host, every = args[1], args[2], args[3], args[4]
  if not reads_path or not signed_path or not host or not every then
    error("mixed.lua: usage: wrk -t1 -s mixed.lua URL -- READS_FILE SIGNED_FILE HOST WRITE_EVERY")
  end
  write_every = tonumber(every)
  local file = assert(io.open(reads_path, "r"))
  for line in file:lines() do
    if line ~= "" then
      reads[#reads + 1] = wrk.format("GET", line, { ["Host"] = host })
      read_keys[#read_keys + 1] = last_segment(line)
    end
  end
  file:close()
  if #reads == 0 then
    error("mixed.lua: no paths in " .. reads_path)
  end
  if write_every > 0 then
    file = assert(io.open(signed_path, "r"))
    for line in file:lines() do
      if line ~= "" then
        local method, target, headers, body =
          wrkshared.signed_request(line, host, "mixed.lua: " .. signed_path)
        writes[#writes + 1] = wrk.format(method, target, headers, body)
        local key = last_segment(target)
        write_keys[#write_keys + 1] = key
        is_write[key] = true
      end
    end
    file:close()
    writes_presigned = #writes
    if #writes == 0 then
      error("mixed.lua: no signed requests in " .. signed_path)
    end
  end
end

function request()
  counter = counter + 1
  local req, key
  if write_every > 0 and counter % write_every == 0 then
    if next_write > #writes then
      next_write = 1
    end
    if writes_sent >= #writes then
      exhausted = exhausted + 1
    end
    req, key = writes[next_write], write_keys[next_write]
    next_write = next_write + 1
    writes_sent = writes_sent + 1
  else
    req, key = reads[next_read], read_keys[next_read]
    next_read = next_read % #reads + 1
  end
  local queue = started[key]
  if not queue then
    queue = { h = 1, t = 0 }
    started[key] = queue
  end
  queue.t = queue.t + 1
  queue[queue.t] = now_us()
  return req
end

function response(status, headers, body)
  local now = now_us()
  responses = responses + 1
  wrkshared.status(status)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  local sha = body and body:match('"sha256":%s*"(%x+)"')
  local queue = sha and started[sha]
  if not queue or queue.h > queue.t then
    unmatched = unmatched + 1
    return
  end
  local t0 = queue[queue.h]
  queue[queue.h] = nil
  queue.h = queue.h + 1
  if is_write[sha] then
    write_lat[#write_lat + 1] = now - t0
  else
    read_lat[#read_lat + 1] = now - t0
  end
end

local function quantiles(sample)
  table.sort(sample)
  local n = #sample
  local function q(p)
    if n == 0 then
      return 0
    end
    local i = math.ceil(p * n)
    if i < 1 then
      i = 1
    end
    return sample[i]
  end
  return string.format("%d p50 %.0f p90 %.0f p99 %.0f max %.0f", n, q(0.5), q(0.9), q(0.99),
                       q(1.0))
end

function done(summary, latency, requests)
  local reads_all, writes_all = {}, {}
  for _, thread in ipairs(threads) do
    for _, v in ipairs(thread:get("read_lat")) do
      reads_all[#reads_all + 1] = v
    end
    for _, v in ipairs(thread:get("write_lat")) do
      writes_all[#writes_all + 1] = v
    end
  end
  local t, detail = wrkshared.sum(threads, { "responses", "non2xx", "unmatched", "writes_sent",
                                            "writes_presigned", "exhausted" })
  io.write(string.format("mixed: reads %s; writes %s; responses %d non-2xx %d unmatched %d "
                         .. "writes_sent %d of %d exhausted %d (%s)\n",
                         quantiles(reads_all), quantiles(writes_all), t.responses, t.non2xx,
                         t.unmatched, t.writes_sent, t.writes_presigned, t.exhausted, detail))
end
