-- Shared by the wrk scripts of bench/ (replay.lua, signed.lua, mixed.lua):
-- each counts answers per thread in globals (so that done() can read them
-- with thread:get()), and done() sums them here; signed.lua and mixed.lua
-- read the same file of pre-signed requests.
--
-- Loaded with, at the top of a script:
--   package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
--                  .. "?.lua;" .. package.path
--   local wrkshared = require("wrkshared")

local M = {}

-- Count one answer by status, in the calling thread's `statuses` global.
function M.status(status)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

-- The totals of the per-thread numbers `names` over `threads`, and their
-- `statuses` merged as "status=count ..." (sorted).
function M.sum(threads, names)
  local totals, by_status = {}, {}
  for _, name in ipairs(names) do
    totals[name] = 0
  end
  for _, thread in ipairs(threads) do
    for _, name in ipairs(names) do
      totals[name] = totals[name] + thread:get(name)
    end
    for status, n in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + n
    end
  end
  local detail = {}
  for status, n in pairs(by_status) do
    detail[#detail + 1] = status .. "=" .. n
  end
  table.sort(detail)
  return totals, table.concat(detail, " ")
end

-- One line of a file of pre-signed requests (bench/writes.py, bench/run.py),
-- METHOD<TAB>PATH<TAB>AUTHORIZATION[<TAB>JSON_BODY], as a request for
-- wrk.format with Host `host`: method, path, headers, body. `where` names the
-- script and file in the error a bad line raises.
function M.signed_request(line, host, where)
  local method, target, auth, body = line:match("^(%u+)\t([^\t]+)\t([^\t]+)\t?(.*)$")
  if not method then
    error(where .. ": bad line: " .. line:sub(1, 200))
  end
  local headers = { ["Host"] = host, ["Authorization"] = auth }
  if body == "" then
    body = nil
  else
    headers["Content-Type"] = "application/json"
  end
  return method, target, headers, body
end

return M
