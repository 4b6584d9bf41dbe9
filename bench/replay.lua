-- wrk script for bench/quick.py: replay pre-built requests round-robin and
-- count every answer that is not a 200.
--
-- Usage: wrk -s bench/replay.lua URL -- REQUESTS_FILE
--
-- REQUESTS_FILE holds one request per line: METHOD<TAB>PATH, or
-- METHOD<TAB>PATH<TAB>JSON_BODY (sent with Content-Type: application/json).
-- Every request is formatted once, in init(); request() only hands out the
-- next one, so the load generator does no per-request work in Lua.
-- done() prints one line that bench/quick.py reads:
--   replay: <responses> responses, <n> non-200 [(<status>=<count> ...)]

local prebuilt = {}
local next_index = 1
local threads = {}

-- Per-thread counters; globals so that done() can read them with thread:get().
responses = 0
non200 = 0
statuses = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  if not path then
    error("replay.lua: usage: wrk -s replay.lua URL -- REQUESTS_FILE")
  end
  local file = assert(io.open(path, "r"))
  for line in file:lines() do
    if line ~= "" then
      local method, target, body = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
      if not method then
        error("replay.lua: bad line in " .. path .. ": " .. line)
      end
      local headers = nil
      if body == "" then
        body = nil
      else
        headers = { ["Content-Type"] = "application/json" }
      end
      prebuilt[#prebuilt + 1] = wrk.format(method, target, headers, body)
    end
  end
  file:close()
  if #prebuilt == 0 then
    error("replay.lua: no requests in " .. path)
  end
end

function request()
  local req = prebuilt[next_index]
  next_index = next_index % #prebuilt + 1
  return req
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    non200 = non200 + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total, bad, by_status = 0, 0, {}
  for _, thread in ipairs(threads) do
    total = total + thread:get("responses")
    bad = bad + thread:get("non200")
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local detail = {}
  for status, count in pairs(by_status) do
    detail[#detail + 1] = status .. "=" .. count
  end
  table.sort(detail)
  local suffix = ""
  if #detail > 0 then
    suffix = " (" .. table.concat(detail, " ") .. ")"
  end
  io.write(string.format("replay: %d responses, %d non-200%s\n", total, bad, suffix))
end
