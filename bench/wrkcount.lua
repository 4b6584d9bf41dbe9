-- Shared by the wrk scripts of bench/ (replay.lua, signed.lua, mixed.lua):
-- each counts answers per thread in globals (so that done() can read them
-- with thread:get()), and done() sums them here.
--
-- Loaded with, at the top of a script:
--   package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
--                  .. "?.lua;" .. package.path
--   local wrkcount = require("wrkcount")

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

return M
