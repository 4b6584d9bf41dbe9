-- wrk script for bench/run.py: GET a uniformly random path of a (large) list,
-- and count every answer that is not a 200.
--
-- Usage: wrk -s bench/uniform.lua URL -- PATHS_FILE [SEED]
--
-- PATHS_FILE holds one request path per line (bench/run.py writes every
-- registered file of the data set, 1,000,000 by default). The paths are read
-- in init(), before wrk starts its clock; request() picks one at random
-- (math.random, seeded with SEED) for every request, so every request of the
-- run is an independent uniform draw over the whole list.
--
-- done() prints the same line as replay.lua, which bench/quick.py's parser
-- reads:
--   replay: <responses> responses, <n> non-200 [(<status>=<count> ...)]

local paths = {}
local count = 0
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
    error("uniform.lua: usage: wrk -s uniform.lua URL -- PATHS_FILE [SEED]")
  end
  local file = assert(io.open(path, "r"))
  for line in file:lines() do
    if line ~= "" then
      count = count + 1
      paths[count] = line
    end
  end
  file:close()
  if count == 0 then
    error("uniform.lua: no paths in " .. path)
  end
  math.randomseed(tonumber(args[2]) or os.time())
end

function request()
  return wrk.format("GET", paths[math.random(count)])
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
    for status, n in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + n
    end
  end
  local detail = {}
  for status, n in pairs(by_status) do
    detail[#detail + 1] = status .. "=" .. n
  end
  table.sort(detail)
  local suffix = ""
  if #detail > 0 then
    suffix = " (" .. table.concat(detail, " ") .. ")"
  end
  io.write(string.format("replay: %d responses, %d non-200%s\n", total, bad, suffix))
end
