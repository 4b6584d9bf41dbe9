-- The one wrk script of bench/run.py: replay pre-built requests.
--
--   wrk -t1 -s bench/replay.lua URL -- REQUESTS_FILE cycle|once EXPECTED_STATUS
--
-- REQUESTS_FILE: one request per line, tab-separated:
--   METHOD <TAB> PATH <TAB> BODY [<TAB> Name: value]...
-- BODY is empty (none), the body as is (JSON: no tab or newline in it), or
-- "hex:" and the bytes in hex (msgpack). Every request is formatted once in
-- init(), before wrk starts its clock, so request() costs nothing per call.
--
-- cycle: round-robin for the whole run. once: each line is meant to be sent
-- once (Hawk nonces, new files); if the list runs out the script starts over
-- and counts every extra request in `exhausted`, and run.py runs the round
-- again with more lines. Use -t1: each wrk thread replays the whole list.
--
-- done() prints one line that run.py reads:
--   replay {"requests":..,"duration_us":..,"p50_us":..,"p99_us":..,"socket_errors":..,
--           "bad":..,"exhausted":..,"lines":..,"statuses":{"200":..}}
-- where bad counts answers whose status is not EXPECTED_STATUS, lines the requests read.

local requests, sent, mode, expected = {}, 0, "cycle", 200
local threads = {}
-- Per-thread counters are globals so that done() can read them (thread:get): done() runs
-- in wrk's main Lua state, where init() never ran.
bad, exhausted, lines, statuses = 0, 0, 0, {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  mode, expected = args[2] or "cycle", tonumber(args[3] or "200")
  local host = wrk.host .. ":" .. wrk.port  -- the Host that run.py signed for
  for line in io.lines(args[1]) do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    local body = f[3]
    if body == "" then
      body = nil
    elseif body:sub(1, 4) == "hex:" then
      body = body:sub(5):gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
    end
    local headers = { Host = host }
    for i = 4, #f do
      local name, value = f[i]:match("^([^:]+):%s*(.*)$")
      headers[name] = value
    end
    requests[#requests + 1] = wrk.format(f[1], f[2], headers, body)
  end
  assert(#requests > 0, "replay.lua: no requests in " .. args[1])
  lines = #requests
end

function request()
  sent = sent + 1
  if mode == "once" and sent > #requests then exhausted = exhausted + 1 end
  return requests[(sent - 1) % #requests + 1]
end

function response(status, headers, body)
  if status ~= expected then bad = bad + 1 end
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, _)
  local total_bad, total_exhausted, total_lines, by_status = 0, 0, 0, {}
  for _, thread in ipairs(threads) do
    total_bad = total_bad + thread:get("bad")
    total_exhausted = total_exhausted + thread:get("exhausted")
    total_lines = total_lines + thread:get("lines")
    for status, n in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(by_status) do parts[#parts + 1] = string.format('"%d":%d', status, n) end
  local e = summary.errors
  io.write(string.format(
    'replay {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"socket_errors":%d,'
    .. '"bad":%d,"exhausted":%d,"lines":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, total_bad, total_exhausted, total_lines,
    table.concat(parts, ",")))
end
