-- wrk script for POST /images/ (docs/PERFORMANCE.md): a link request per call, spread over 50
-- projects so no project reaches the pending-link cap quickly.
--   wrk -t2 -c64 -d15s --latency -s scripts/wrk/post-images.lua http://127.0.0.1:8080/images/
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"filename":"a.jpg","project_id":"wrk' .. (n % 50) .. '"}')
end
