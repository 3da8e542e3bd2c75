#!/usr/bin/env bash
# retrain_latency.sh - latency of recommendations while the daemon
# retrains, against the same daemon idle, side by side in one run.
#
#   tests/bench/retrain_latency.sh [DATA_DIR] [THREADS]
#
# Imports DATA_DIR (default ../shared/data/baby) into a temporary store,
# starts `sgbd serve` on it ($MODEL, [retrain] threads = THREADS,
# default 1) and waits for the first model ($INITIAL_EPOCHS). Then, ROUNDS times (default
# 2): wrk (tests/bench/users.lua, -t1 -c$CONNS keep-alive) for
# SECONDS_EACH s on the idle daemon, then POST /v1/model/retrain and the
# same wrk run while it trains ($EPOCHS epochs, long enough to cover the
# run; a run that outlasts the retrain is reported as such). Prints
# requests/s, p50 and p99 of each run, how long each retrain took
# (last_duration_s of GET /v1/model) and the ratio of the p99 medians.
#
# Environment: SGBD_BIN (default build/sgbd), CONNS (8), SECONDS_EACH
# (8), ROUNDS (2), EPOCHS (40), PORT (18600), MODEL (lightgcn),
# INITIAL_EPOCHS (20), NICE and BF16 ([retrain] nice and [train]
# bf16_features, when set), FEATURES (a folder of <name>_feat.npy to
# import with DATA_DIR's interactions). Needs wrk and curl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${SGBD_BIN:-$root/build/sgbd}
data=${1:-$root/../shared/data/baby}
threads=${2:-1}
conns=${CONNS:-8}
secs=${SECONDS_EACH:-8}
rounds=${ROUNDS:-2}
epochs=${EPOCHS:-40}
port=${PORT:-18600}
model=${MODEL:-lightgcn}
initial=${INITIAL_EPOCHS:-20}
url=http://127.0.0.1:$port

for need in wrk curl; do
    command -v "$need" >/dev/null || { echo "skipped: no $need"; exit 77; }
done
[ -d "$data" ] || { echo "skipped: $data not found"; exit 77; }
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

src=$data
if [ -n "${FEATURES:-}" ]; then   # the interactions of DATA, features of FEATURES
    src=$work/data
    mkdir "$src"
    ln -s "$(cd "$data" && pwd)"/*.inter "$src/"
    ln -s "$(cd "$FEATURES" && pwd)"/*_feat.npy "$src/"
fi
"$bin" import --data "$src" --db "$work/db" --quiet
users=$(ls "$data"/*.inter >/dev/null && \
        awk 'NR > 1 { if ($1 + 1 > n) n = $1 + 1 } END { print n }' \
            "$data"/*.inter)
"$bin" serve --db "$work/db" --listen "127.0.0.1:$port" \
    --set "model.name=$model" --set "retrain.threads=$threads" \
    --set "retrain.epochs=$epochs" --set "retrain.initial_epochs=$initial" \
    --set retrain.min_interval_s=0 ${NICE:+--set retrain.nice=$NICE} \
    ${BF16:+--set train.bf16_features=$BF16} \
    >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 900); do
    curl -sf -o /dev/null "$url/readyz" && break
    sleep 0.5
done
curl -sf -o /dev/null "$url/readyz" || { echo "never ready"; exit 1; }

training() { curl -s "$url/v1/model" | grep -q '"state":"training"'; }

# "req_per_s p50_ms p99_ms" of one wrk run.
wrk_run() {
    SBENCH_PREFIX= SBENCH_USERS=$users \
        wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$here/users.lua" "$url" |
        awk '/Requests\/sec/ { r = $2 }
             $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
             function ms(x) { if (x ~ /us$/) return x / 1000;
                              if (x ~ /ms$/) return x + 0;
                              return x * 1000 }
             END { printf "%.0f %.3f %.3f\n", r, ms(p50), ms(p99) }'
}

echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(basename "$data"): $users users, $model${FEATURES:+ (features $FEATURES)}, retrain.threads=$threads${NICE:+ nice=$NICE}${BF16:+ bf16_features=$BF16}, wrk -t1 -c$conns, $secs s per run"
echo "| round | daemon | req/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
idle99=() busy99=()
for r in $(seq "$rounds"); do
    read -r rps p50 p99 < <(wrk_run)
    echo "| $r | idle | $rps | $p50 | $p99 |"
    idle99+=("$p99")
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' \
        -d '{}' "$url/v1/model/retrain"
    for _ in $(seq 100); do training && break; sleep 0.1; done
    read -r rps p50 p99 < <(wrk_run)
    note=
    training || note=" (the retrain ended during the run)"
    busy99+=("$p99")
    for _ in $(seq 1200); do training || break; sleep 0.2; done
    dur=$(curl -s "$url/v1/model" | grep -o '"last_duration_s":[0-9.]*' | cut -d: -f2)
    echo "| $r | retraining | $rps | $p50 | $p99 |$note retrain ${dur:-?} s"
done
med() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
i=$(med "${idle99[@]}") b=$(med "${busy99[@]}")
echo
echo "median p99: idle $i ms, retraining $b ms, ratio $(awk -v i="$i" -v b="$b" 'BEGIN { printf "%.2f", b / i }') (target <= 2)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
