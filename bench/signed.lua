-- wrk script for bench/writes.py: send pre-signed (Hawk) requests, each once.
--
-- Usage: wrk -t1 -s bench/signed.lua URL -- REQUESTS_FILE HOST_HEADER
--
-- One thread only (-t1): every thread would send the whole list, so with more
-- threads every nonce would go out more than once.
--
-- REQUESTS_FILE holds one request per line, tab-separated:
--   METHOD<TAB>PATH<TAB>AUTHORIZATION[<TAB>JSON_BODY]
-- (a body is sent with Content-Type: application/json, which its Hawk payload
-- hash covers). HOST_HEADER is the host:port the requests were signed for.
-- Every request is formatted once, in init(); request() only hands out the
-- next one, so the load generator does no per-request work in Lua.
--
-- A Hawk nonce is accepted once, so each request must be sent only once. If
-- the list runs out before wrk stops, request() starts over and counts every
-- request sent again in `exhausted`: those answers are 401 (replayed nonce)
-- and the run is not valid; bench/writes.py then runs it again with more.
--
-- done() prints one line that bench/writes.py reads:
--   signed: <responses> responses, <n> non-2xx, <sent> sent of <prebuilt> pre-signed,
--   <exhausted> exhausted (<status>=<count> ...)

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
               .. "?.lua;" .. package.path
local wrkshared = require("wrkshared")

local prebuilt = {}
local next_index = 1
local threads = {}

-- Per-thread counters; globals so that done() can read them with thread:get().
responses = 0
non2xx = 0
sent = 0
exhausted = 0
count = 0
statuses = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path, host = args[1], args[2]
  if not path or not host then
    error("signed.lua: usage: wrk -s signed.lua URL -- REQUESTS_FILE HOST_HEADER")
  end
  local file = assert(io.open(path, "r"))
  for line in file:lines() do
    if line ~= "" then
      prebuilt[#prebuilt + 1] = wrk.format(
        wrkshared.signed_request(line, host, "signed.lua: " .. path))
    end
  end
  file:close()
  count = #prebuilt
  if count == 0 then
    error("signed.lua: no requests in " .. path)
  end
end

function request()
  if next_index > count then
    next_index = 1
  end
  if sent >= count then
    exhausted = exhausted + 1
  end
  local req = prebuilt[next_index]
  next_index = next_index + 1
  sent = sent + 1
  return req
end

function response(status, headers, body)
  responses = responses + 1
  wrkshared.status(status)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local t, detail = wrkshared.sum(threads, { "responses", "non2xx", "sent", "count",
                                            "exhausted" })
  io.write(string.format("signed: %d responses, %d non-2xx, %d sent of %d pre-signed, "
                         .. "%d exhausted (%s)\n",
                         t.responses, t.non2xx, t.sent, t.count, t.exhausted, detail))
end
