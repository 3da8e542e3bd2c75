#!/bin/sh
# run.sh [SECONDS] [BUILD_DIR] - build the libFuzzer targets with clang and
# run each for SECONDS (default 60), one at a time.
#
# Configures BUILD_DIR (default build-fuzz at the repository root) with
# -DCMAKE_C_COMPILER=clang -DSGBD_FUZZ=ON, builds only the fuzz targets,
# then per target (fuzz_one.sh): replays every reproducer in
# tests/fuzz/regress/<name>/, and fuzzes from a temporary writable copy of
# tests/fuzz/corpus/<name>/ (the repository's seeds are never modified).
# Options: FUZZ_TARGETS="npy inter" runs a subset; FUZZ_SKIP (fuzz_util.h)
# switches off checks of findings already reported; FUZZ_JOBS (default 2)
# sets the build parallelism. Exits non-zero when any target crashes,
# leaks, times out or breaks an invariant; the inputs are then in
# BUILD_DIR/tests/fuzz/run/<name>/artifacts/.
set -eu

seconds=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${2:-$root/build-fuzz}
targets=${FUZZ_TARGETS:-npy inter config checkpoint api}

mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DSGBD_FUZZ=ON \
    >"$build/fuzz-configure.log" 2>&1 || {
    cat "$build/fuzz-configure.log"
    exit 1
}
set --
for t in $targets; do
    set -- "$@" "fuzz_$t"
done
cmake --build "$build" -j"${FUZZ_JOBS:-2}" --target "$@"

failed=""
for t in $targets; do
    sh "$here/fuzz_one.sh" "$build/tests/fuzz/fuzz_$t" "$seconds" \
        "$here/corpus/$t" "$here/regress/$t" "$build/tests/fuzz/run/$t" ||
        failed="$failed $t"
done
if [ -n "$failed" ]; then
    echo "run.sh: FAILED:$failed"
    exit 1
fi
echo "run.sh: all targets ok ($seconds s each)"
