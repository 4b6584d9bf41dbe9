-- wrk script for bench/quick.py and bench/run.py: send pre-built requests,
-- in order or at random, and count every answer that is not a 200.
--
-- Usage: wrk -s bench/replay.lua URL -- REQUESTS_FILE
--        wrk -s bench/replay.lua URL -- PATHS_FILE random SEED
--
-- In order: REQUESTS_FILE holds one request per line: METHOD<TAB>PATH, or
-- METHOD<TAB>PATH<TAB>JSON_BODY (sent with Content-Type: application/json).
-- Every request is formatted once, in init(); request() only hands out the
-- next one, round-robin, so the load generator does no per-request work.
--
-- random: PATHS_FILE holds one path per line (bench/run.py writes every
-- registered file of its data set, 1,000,000 by default), read in init(),
-- before wrk starts its clock; request() GETs a path drawn uniformly at
-- random (math.random seeded with SEED), so every request is an independent
-- draw over the whole list. Nothing is pre-formatted: a million formatted
-- requests would not fit in a reasonable amount of memory.
--
-- done() prints one line that bench/quick.py reads:
--   replay: <responses> responses, <n> non-200 [(<status>=<count> ...)]

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
               .. "?.lua;" .. package.path
local wrkshared = require("wrkshared")

local prebuilt = {}
local paths = {}
local next_index = 1
local threads = {}

-- Per-thread counters; globals so that done() can read them with thread:get().
responses = 0
non200 = 0
statuses = {}

function setup(thread)
  table.insert(threads, thread)
end

local function read_lines(path)
  local lines = {}
  local file = assert(io.open(path, "r"))
  for line in file:lines() do
    if line ~= "" then
      lines[#lines + 1] = line
    end
  end
  file:close()
  if #lines == 0 then
    error("replay.lua: nothing to send in " .. path)
  end
  return lines
end

function init(args)
  local path = args[1]
  if not path or (args[2] and args[2] ~= "random") then
    error("replay.lua: usage: wrk -s replay.lua URL -- REQUESTS_FILE "
          .. "| PATHS_FILE random SEED")
  end
  if args[2] == "random" then
    paths = read_lines(path)
    math.randomseed(tonumber(args[3]) or os.time())
    request = function()
      return wrk.format("GET", paths[math.random(#paths)])
    end
    return
  end
  for _, line in ipairs(read_lines(path)) do
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

function request()
  local req = prebuilt[next_index]
  next_index = next_index % #prebuilt + 1
  return req
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    non200 = non200 + 1
    wrkshared.status(status)
  end
end

function done(summary, latency, requests)
  local totals, detail = wrkshared.sum(threads, { "responses", "non200" })
  local suffix = ""
  if detail ~= "" then
    suffix = " (" .. detail .. ")"
  end
  io.write(string.format("replay: %d responses, %d non-200%s\n", totals.responses,
                         totals.non200, suffix))
end
