-- users.lua - wrk script: GET /v1/users/u<random>/recommendations?k=K
-- with a uniformly random user below SBENCH_USERS (default 19445) and
-- K = SBENCH_K (default 20), so requests do not all hit one user's cache
-- lines. Used by tests/bench/serve.sh.
local n = tonumber(os.getenv("SBENCH_USERS") or "19445")
local k = os.getenv("SBENCH_K") or "20"
math.randomseed(os.time())
request = function()
  local u = math.random(0, n - 1)
  return wrk.format("GET", "/v1/users/u" .. u .. "/recommendations?k=" .. k)
end
