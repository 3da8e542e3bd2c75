-- users.lua - wrk script: GET /v1/users/<prefix><n>/recommendations?k=K
-- with n uniformly random below SBENCH_USERS (default 19445), K =
-- SBENCH_K (default 20) and prefix SBENCH_PREFIX (default "u", the
-- synthetic snapshot's ids; "" for an imported MMRec dataset), so
-- requests do not all hit one user's cache lines. Used by
-- tests/bench/serve.sh (against the daemon and, the same requests, the
-- fixed-body ceiling) and tests/bench/retrain_latency.sh.
--
-- Up to PREBUILT_MAX users the requests are formatted once per wrk
-- thread, at start: formatting one per request (wrk.format, string
-- concatenation) costs wrk 10-20 % of its rate against the fixed-body
-- server, CPU the server under test then lacks on a shared machine.
local n = tonumber(os.getenv("SBENCH_USERS") or "19445")
local k = os.getenv("SBENCH_K") or "20"
local prefix = os.getenv("SBENCH_PREFIX") or "u"
local PREBUILT_MAX = 1000000
local prebuilt = {}

local function format(u)
  return wrk.format("GET", "/v1/users/" .. prefix .. u ..
                    "/recommendations?k=" .. k)
end

init = function(args)
  math.randomseed(os.time())
  if n <= PREBUILT_MAX then
    for u = 0, n - 1 do
      prebuilt[u + 1] = format(u)
    end
  end
end

request = function()
  local u = math.random(0, n - 1)
  return prebuilt[u + 1] or format(u)
end
