#!/usr/bin/env bash
# serve.sh - HTTP serving benchmarks of issue #5, side by side in one run.
#
#   tests/bench/serve.sh [baby|electronics|churn|all]
#
# baby: `sgbd serve --synthetic 19445,7050,64` (the Baby size, D = 64)
#   against tests/bench/mhd_ceiling (a minimal libmicrohttpd server with the
#   daemon's MHD flags and a fixed 600-byte JSON body), both under wrk
#   -t$WRK_THREADS -c$CONNS keep-alive for $SECONDS_EACH s, in ABAB order so
#   both see the same machine load. The daemon gets
#   GET /v1/users/u<random>/recommendations?k=20 (tests/bench/users.lua),
#   once with its default answer cache (with the share of answers it
#   served) and once with result_cache_mb=0, where every request is
#   scored. The ceiling runs twice: under the same script (the same
#   requests, so wrk does the same work for both servers: the ratio's
#   reference) and under plain wrk, one fixed request, the least wrk can
#   do.
#   Reports requests/s, p50 and p99 of each run, the server's CPU time
#   per request (utime + stime from /proc: robust to other load on the
#   machine) and the daemon/ceiling ratios of the medians.
# electronics: `sgbd serve --synthetic 192000,63000,64` under
#   tests/bench/loadgen at a fixed $RATE requests/s (default 1000) for
#   $SECONDS_EACH s: p50, p99, p99.9 from the time each request was due.
#   loadgen draws the same users in every round, so the answer cache is
#   off here ($CACHE_MB, default 0) and every request is scored.
# churn: the Baby size with a store, under tests/bench/mixed.lua (writes
#   mixed into the reads), with the answer cache and without it, in
#   alternation: what item edits and interactions cost the cache.
#
# Environment: SGBD_BIN (default build/sgbd), HTTP_THREADS (the daemon's
# [server] http_threads and the ceiling's pool, default 2), CONNS (16),
# WRK_THREADS (1), SECONDS_EACH (10), RATE (1000), ROUNDS (3), CACHE_MB
# (electronics only, 0), PORT_BASE (18500). Needs wrk, cc and pkg-config
# (libmicrohttpd); the C tools are built next to the binary, in
# $(dirname SGBD_BIN)/bench.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${SGBD_BIN:-$root/build/sgbd}
what=${1:-all}
threads=${HTTP_THREADS:-2}
conns=${CONNS:-16}
wrk_threads=${WRK_THREADS:-1}
secs=${SECONDS_EACH:-10}
rate=${RATE:-1000}
rounds=${ROUNDS:-3}
cache_mb=${CACHE_MB:-0}
port=${PORT_BASE:-18500}
tools=$(dirname "$bin")/bench

for need in wrk cc pkg-config curl; do
    command -v "$need" >/dev/null || { echo "skipped: no $need"; exit 77; }
done
[ -x "$bin" ] || { echo "serve.sh: $bin not found (set SGBD_BIN)"; exit 1; }

mkdir -p "$tools"
cc -O2 -o "$tools/mhd_ceiling" "$here/mhd_ceiling.c" \
    $(pkg-config --cflags --libs libmicrohttpd)
cc -O2 -o "$tools/loadgen" "$here/loadgen.c" -lm

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

wait_ready() {  # URL
    for _ in $(seq 600); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "serve.sh: $1 never answered" >&2
    exit 1
}

start_daemon() {  # SPEC PORT [CACHE_MB]; sets daemon_pid
    "$bin" serve --no-store --listen "127.0.0.1:$2" --synthetic "$1" \
        --set "server.http_threads=$threads" \
        ${3:+--set "server.result_cache_mb=$3"} >/dev/null 2>&1 &
    daemon_pid=$!
    pids+=($!)
    wait_ready "http://127.0.0.1:$2/readyz"
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# wrk's summary as "req_per_s p50_ms p99_ms server_cpu_us_per_request".
wrk_run() {  # PID URL [LUA]
    local out t0 t1 hz
    hz=$(getconf CLK_TCK)
    t0=$(cpu_ticks "$1")
    out=$(wrk -t"$wrk_threads" -c"$conns" -d"${secs}s" --latency \
              ${3:+-s "$3"} "$2")
    t1=$(cpu_ticks "$1")
    echo "$out" | awk -v ticks=$((t1 - t0)) -v hz="$hz" '
        function ms(v) {
            if (v ~ /us$/) return v / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /s$/) return v * 1000
            return v
        }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /requests in/ { n = $1 }
        /^Requests\/sec/ { rps = $2 }
        /Non-2xx or 3xx responses/ { bad = $NF }
        END { printf "%.0f %.3f %.3f %.1f%s\n", rps, p50, p99,
                     ticks * 1e6 / hz / n,
                     bad ? " (" bad " non-2xx!)" : "" }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

machine() {
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# The answer cache's hits and misses so far, as "hits misses".
cache_counts() {  # PORT
    curl -sf "http://127.0.0.1:$1/metrics" | awk '
        /^sgbd_reco_cache_hits_total / { h = $2 }
        /^sgbd_reco_cache_misses_total / { m = $2 }
        END { printf "%d %d\n", h, m }'
}

bench_baby() {
    local ceil=$((port)) daemon=$((port + 1)) nocache=$((port + 3))
    local c d n ceil_pid cached_pid nocache_pid h0 h1
    "$tools/mhd_ceiling" "$ceil" "$threads" 2>/dev/null &
    ceil_pid=$!
    pids+=($!)
    start_daemon 19445,7050,64 "$daemon"
    cached_pid=$daemon_pid
    start_daemon 19445,7050,64 "$nocache" 0
    nocache_pid=$daemon_pid
    wait_ready "http://127.0.0.1:$ceil/"
    echo "== Baby size: 19,445 users x 7,050 items x 64, k = 20;" \
         "wrk -t$wrk_threads -c$conns, ${secs} s per run," \
         "http_threads=$threads"
    echo "sgbd serve: the default answer cache; result_cache_mb=0: every" \
         "request scored"
    echo "| run | server | req/s | p50 ms | p99 ms | server CPU us/req |" \
         "cache hits |"
    echo "|---|---|---|---|---|---|---|"
    : >"$tools/ceil.txt"
    : >"$tools/ceil_plain.txt"
    : >"$tools/daemon.txt"
    : >"$tools/nocache.txt"
    for r in $(seq "$rounds"); do
        c=$(SBENCH_USERS=19445 wrk_run "$ceil_pid" \
            "http://127.0.0.1:$ceil/" "$here/users.lua")
        echo "$c" >>"$tools/ceil.txt"
        echo "| $r | mhd_ceiling, users.lua | ${c// / | } | |"
        c=$(wrk_run "$ceil_pid" "http://127.0.0.1:$ceil/")
        echo "$c" >>"$tools/ceil_plain.txt"
        echo "| $r | mhd_ceiling, plain wrk | ${c// / | } | |"
        h0=$(cache_counts "$daemon")
        d=$(SBENCH_USERS=19445 wrk_run "$cached_pid" \
            "http://127.0.0.1:$daemon/" "$here/users.lua")
        h1=$(cache_counts "$daemon")
        echo "$d" >>"$tools/daemon.txt"
        echo "| $r | sgbd serve | ${d// / | } |" \
             "$(echo "$h0 $h1" | awk '{ n = $3 - $1 + $4 - $2;
                 printf "%.1f %%", n ? 100 * ($3 - $1) / n : 0 }') |"
        n=$(SBENCH_USERS=19445 wrk_run "$nocache_pid" \
            "http://127.0.0.1:$nocache/" "$here/users.lua")
        echo "$n" >>"$tools/nocache.txt"
        echo "| $r | sgbd serve, result_cache_mb=0 | ${n// / | } | |"
    done
    c=$(cut -d' ' -f1 "$tools/ceil.txt" | median)
    p=$(cut -d' ' -f1 "$tools/ceil_plain.txt" | median)
    d=$(cut -d' ' -f1 "$tools/daemon.txt" | median)
    n=$(cut -d' ' -f1 "$tools/nocache.txt" | median)
    echo
    echo "median req/s: ceiling $c under users.lua ($p under plain wrk)," \
         "daemon $d (ratio $(ratio "$d" "$c"); $(ratio "$d" "$p") to plain" \
         "wrk), no cache $n (ratio $(ratio "$n" "$c"); $(ratio "$n" "$p")" \
         "to plain wrk) (target >= 0.60 at p99 <= 5 ms)"
    cleanup
    pids=()
}

bench_electronics() {
    local daemon=$((port + 2))
    start_daemon 192000,63000,64 "$daemon" "$cache_mb"
    echo "== Electronics size: 192,000 users x 63,000 items x 64, k = 20;" \
         "loadgen $rate req/s over $conns connections, ${secs} s," \
         "http_threads=$threads, result_cache_mb=$cache_mb"
    for r in $(seq "$rounds"); do
        local t0 t1
        t0=$(cpu_ticks "$daemon_pid")
        "$tools/loadgen" -c "$conns" -r "$rate" -d "$secs" -w 1 \
            -u 192000 "127.0.0.1:$daemon" 2>/dev/null
        t1=$(cpu_ticks "$daemon_pid")
        echo "  daemon CPU: $(( (t1 - t0) * 1000 / $(getconf CLK_TCK) )) ms" \
             "over $((secs + 1)) s"
    done
    echo "(target: p99 <= 10 ms at 1,000 req/s)"
    cleanup
    pids=()
}

bench_churn() {
    local cached=$((port + 4)) plain=$((port + 5)) dir c_pid p_pid r
    local out t0 t1 h0 h1 pid url
    dir=$(mktemp -d /tmp/sgbd-churn.XXXXXX)
    for spec in "$cached 64" "$plain 0"; do
        set -- $spec
        "$bin" serve --db "$dir/db$1" --listen "127.0.0.1:$1" \
            --synthetic 19445,7050,64 --set retrain.enabled=false \
            --set "server.http_threads=$threads" \
            --set "server.result_cache_mb=$2" >/dev/null 2>&1 &
        pids+=($!)
        wait_ready "http://127.0.0.1:$1/readyz"
    done
    c_pid=${pids[-2]}
    p_pid=${pids[-1]}
    echo "== Storefront mix on the Baby size: tests/bench/mixed.lua (one" \
         "interaction in 50 requests, one item edit in 500, the rest" \
         "recommendations, k = 20), each write committed to a store;" \
         "wrk -t$wrk_threads -c$conns, ${secs} s per run," \
         "http_threads=$threads, no retrain (the overlay grows)"
    echo "| run | server | req/s | p50 ms | p99 ms | server CPU us/req |" \
         "cache hits | overlay items after |"
    echo "|---|---|---|---|---|---|---|---|"
    for r in $(seq "$rounds"); do
        for which in cached plain; do
            if [ "$which" = cached ]; then
                pid=$c_pid url="127.0.0.1:$cached"
            else
                pid=$p_pid url="127.0.0.1:$plain"
            fi
            h0=$(cache_counts "${url#*:}")
            out=$(wrk_run "$pid" "http://$url/" "$here/mixed.lua")
            h1=$(cache_counts "${url#*:}")
            echo "| $r | $([ "$which" = cached ] && echo "sgbd serve" ||
                  echo "sgbd serve, result_cache_mb=0") |" \
                 "${out// / | } |" \
                 "$(echo "$h0 $h1" | awk '{ n = $3 - $1 + $4 - $2;
                     if (n) printf "%.1f %%", 100 * ($3 - $1) / n }') |" \
                 "$(curl -sf "http://$url/metrics" |
                    awk '/^sgbd_overlay_items / { print $2 }') |"
        done
    done
    cleanup
    pids=()
    rm -rf "$dir"
}

machine
case $what in
baby) bench_baby ;;
electronics) bench_electronics ;;
churn) bench_churn ;;
all) bench_baby; echo; bench_electronics; echo; bench_churn ;;
*) echo "usage: serve.sh [baby|electronics|churn|all]" >&2; exit 2 ;;
esac
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
