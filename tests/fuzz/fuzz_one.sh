#!/bin/sh
# fuzz_one.sh BIN SECONDS CORPUS REGRESS WORKDIR [LIBFUZZER-ARGS...]
#
# Replay every reproducer in REGRESS (a crash there fails at once), then
# fuzz BIN for SECONDS starting from a writable copy of CORPUS made in
# WORKDIR/corpus, so the seeds in the repository are never modified. New
# crash inputs go to WORKDIR/artifacts/, the log to WORKDIR/fuzz.log.
# Exit status: 0, or libFuzzer's (non-zero on a crash, leak or timeout).
set -eu

bin=$1 seconds=$2 corpus=$3 regress=$4 work=$5
shift 5
name=$(basename "$bin")
dict=$(dirname "$0")/${name#fuzz_}.dict

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"

if [ -d "$regress" ] && [ -n "$(ls -A "$regress" 2>/dev/null)" ]; then
    echo "$name: replaying $(ls "$regress" | wc -l) reproducers"
    "$bin" -rss_limit_mb=2048 "$regress"/* >"$work/regress.log" 2>&1 || {
        tail -n 60 "$work/regress.log"
        echo "$name: a reproducer in $regress fails"
        exit 1
    }
fi

if [ -d "$corpus" ]; then
    cp -R "$corpus"/. "$work/corpus/"
fi
set -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$@"
if [ -f "$dict" ]; then
    set -- -dict="$dict" "$@"
fi

echo "$name: fuzzing for ${seconds}s from $(ls "$work/corpus" | wc -l) seeds"
rc=0
"$bin" "$@" "$work/corpus" >"$work/fuzz.log" 2>&1 || rc=$?
grep -E '^(stat::|#[0-9]+[[:space:]]+DONE)' "$work/fuzz.log" || true
if [ "$rc" -ne 0 ]; then
    tail -n 80 "$work/fuzz.log"
    echo "$name: FAILED (exit $rc); inputs in $work/artifacts/"
    exit "$rc"
fi
echo "$name: ok, corpus now $(ls "$work/corpus" | wc -l) inputs"
