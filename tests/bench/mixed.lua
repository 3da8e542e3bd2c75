-- mixed.lua - wrk script: storefront traffic. Mostly GET
-- /v1/users/u<n>/recommendations?k=K for n uniformly random below
-- SBENCH_USERS (default 19445), K = SBENCH_K (default 20); one request in
-- SBENCH_INTER_EVERY (default 50) posts an interaction of a random user
-- with a random item below SBENCH_ITEMS (default 7050), and one in
-- SBENCH_EDIT_EVERY (default 500) gives a random item new 64-wide image
-- features, as a merchant's edit. Ids are the synthetic snapshot's.
-- Used by tests/bench/serve.sh churn.
local users = tonumber(os.getenv("SBENCH_USERS") or "19445")
local items = tonumber(os.getenv("SBENCH_ITEMS") or "7050")
local k = os.getenv("SBENCH_K") or "20"
local inter_every = tonumber(os.getenv("SBENCH_INTER_EVERY") or "50")
local edit_every = tonumber(os.getenv("SBENCH_EDIT_EVERY") or "500")
local json = {["Content-Type"] = "application/json"}
local n = 0
math.randomseed(os.time())

local function features()
  local v = {}
  for d = 1, 64 do
    v[d] = string.format("%.3f", math.random() * 2 - 1)
  end
  return '{"features": {"image": [' .. table.concat(v, ",") .. ']}}'
end

request = function()
  n = n + 1
  if n % edit_every == 0 then
    return wrk.format("PUT", "/v1/items/i" .. math.random(0, items - 1),
                      json, features())
  end
  if n % inter_every == 0 then
    return wrk.format("POST", "/v1/interactions", json,
                      '{"interactions": [{"user_id": "u' ..
                      math.random(0, users - 1) .. '", "item_id": "i' ..
                      math.random(0, items - 1) .. '"}]}')
  end
  return wrk.format("GET", "/v1/users/u" .. math.random(0, users - 1) ..
                    "/recommendations?k=" .. k)
end
