-- users.lua - wrk script: GET /v1/users/<prefix><n>/recommendations?k=K
-- with n uniformly random below SBENCH_USERS (default 19445), K =
-- SBENCH_K (default 20) and prefix SBENCH_PREFIX (default "u", the
-- synthetic snapshot's ids; "" for an imported MMRec dataset), so
-- requests do not all hit one user's cache lines. Used by
-- tests/bench/serve.sh and tests/bench/retrain_latency.sh.
local n = tonumber(os.getenv("SBENCH_USERS") or "19445")
local k = os.getenv("SBENCH_K") or "20"
local prefix = os.getenv("SBENCH_PREFIX") or "u"
math.randomseed(os.time())
request = function()
  local u = math.random(0, n - 1)
  return wrk.format("GET", "/v1/users/" .. prefix .. u ..
                    "/recommendations?k=" .. k)
end
