#!/usr/bin/env bash
# curl.sh - every route of the SGBD v1 API, called with curl.
#
#   SGBD_URL=http://127.0.0.1:8080 clients/examples/curl.sh [USER_ID [ITEM_ID]]
#
# Environment:
#   SGBD_URL            the daemon (default http://127.0.0.1:8080)
#   SGBD_TOKEN          bearer token for the write routes (PUT, DELETE,
#                       POST /v1/interactions), when the daemon has tokens
#   SGBD_ADMIN_TOKEN    bearer token for retrain and rollback (default:
#                       SGBD_TOKEN)
#   SGBD_FEATURES       JSON object of feature channels for the PUT, e.g.
#                       '{"image": [0.1, 0.2], "text": [0.3]}' (each width
#                       must match the store's channel); default: none
#   SGBD_NEW_ITEM       id of the item created, read and deleted
#                       (default example-item-1)
#   SGBD_ROLLBACK_TO    checkpoint version for the rollback call (default 1)
#
# USER_ID and ITEM_ID (defaults u1, i1) are a user and an item the served
# model knows; ids are used as given, so pick URL- and JSON-safe ones or
# percent-encode them. Each call prints "== METHOD PATH", the answer, and
# "-> HTTP STATUS". The script stops only when curl cannot reach the
# daemon: error answers (e.g. 501 for retrain on a daemon without the
# online retrainer) are printed and the tour goes on. Note that the
# interaction call records that USER_ID has seen ITEM_ID.
set -euo pipefail

URL=${SGBD_URL:-http://127.0.0.1:8080}
URL=${URL%/}
USER_ID=${1:-u1}
ITEM_ID=${2:-i1}
NEW_ITEM=${SGBD_NEW_ITEM:-example-item-1}
ROLLBACK_TO=${SGBD_ROLLBACK_TO:-1}

write_auth=()
if [ -n "${SGBD_TOKEN:-}" ]; then
    write_auth=(-H "Authorization: Bearer $SGBD_TOKEN")
fi
admin_auth=("${write_auth[@]}")
if [ -n "${SGBD_ADMIN_TOKEN:-}" ]; then
    admin_auth=(-H "Authorization: Bearer $SGBD_ADMIN_TOKEN")
fi
json=(-H "Content-Type: application/json")

# call METHOD PATH [curl options...]
call() {
    local method=$1 path=$2
    shift 2
    printf '\n== %s %s\n' "$method" "$path"
    curl -sS -X "$method" -w '\n-> HTTP %{http_code}\n' "$@" "$URL$path"
}

# Liveness, readiness, the served model.
call GET /healthz
call GET /readyz
call GET /v1/model

# Top 5 for one user; the same without ITEM_ID.
call GET "/v1/users/$USER_ID/recommendations?k=5"
call GET "/v1/users/$USER_ID/recommendations?k=5&exclude=$ITEM_ID"

# Many users in one call (a user the model does not know gets the
# popular items, flagged "fallback": "popular").
call POST /v1/recommendations "${json[@]}" \
    -d "{\"user_ids\": [\"$USER_ID\", \"someone-new\"], \"k\": 3}"

# Items closest to ITEM_ID by the model's embeddings.
call GET "/v1/items/$ITEM_ID/similar?k=5"

# Create (or update) an item with named feature channels and attributes,
# read it back; a multimodal model recommends it at once.
body="{\"attributes\": {\"title\": \"Example mug\", \"price\": 12.5}"
if [ -n "${SGBD_FEATURES:-}" ]; then
    body="$body, \"features\": $SGBD_FEATURES"
fi
body="$body}"
call PUT "/v1/items/$NEW_ITEM" "${write_auth[@]}" "${json[@]}" -d "$body"
call GET "/v1/items/$NEW_ITEM"

# Feedback events, batched in one request (timestamps in unix seconds;
# the same event sent twice is stored once).
now=$(date +%s)
event="{\"user_id\": \"$USER_ID\", \"item_id\": \"$ITEM_ID\","
event="$event \"timestamp\": $now}"
call POST /v1/interactions "${write_auth[@]}" "${json[@]}" \
    -d "{\"interactions\": [$event]}"

# Hide the new item: it vanishes from every answer at once.
call DELETE "/v1/items/$NEW_ITEM" "${write_auth[@]}"

# Kept checkpoints; retrain now; serve an older checkpoint again.
call GET /v1/model/checkpoints
call POST /v1/model/retrain "${admin_auth[@]}" "${json[@]}" \
    -d '{"reason": "curl example"}'
call POST /v1/model/rollback "${admin_auth[@]}" "${json[@]}" \
    -d "{\"version\": $ROLLBACK_TO}"

# Prometheus metrics (the first lines).
printf '\n== GET /metrics\n'
curl -sS "$URL/metrics" | sed -n '1,12p'
printf -- '-> HTTP %s\n' "$(curl -sS -o /dev/null -w '%{http_code}' \
    "$URL/metrics")"
