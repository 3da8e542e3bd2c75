#!/usr/bin/env bash
# test_cli_train.sh - `sgbd train` and `sgbd eval` end to end on a small
# synthetic catalogue: a run that learns, the JSON report, a saved model
# that evaluates to the same numbers, and one clear line for bad input.
# ctest: labels=integration timeout=300
set -u
bin=${SGBD_BIN:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

ok()   { pass=$((pass + 1)); echo "ok   $1"; }
bad()  { fail=$((fail + 1)); echo "FAIL $1"; }

# expect_error NAME PATTERN CMD...: exits non-zero (not a crash), prints
# exactly one line on stderr, and that line matches PATTERN.
expect_error() {
    local name=$1 pattern=$2; shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    local lines; lines=$(wc -l <"$tmp/err")
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$lines" -eq 1 ] &&
       grep -q -- "$pattern" "$tmp/err"; then
        ok "$name"
    else
        bad "$name (rc=$rc, stderr: $(head -c 300 "$tmp/err"))"
    fi
}

"$bin" synth --out "$tmp/cat" --users 300 --items 150 --seed 7 \
    >/dev/null 2>&1 || { echo "synth failed"; exit 1; }

# 1. A short run learns something and reports JSON with the agreed keys.
if "$bin" train --data "$tmp/cat" --model lightgcn --optimizer adam \
        --epochs 15 --lr 0.01 --json --quiet --out "$tmp/model.sgbd" \
        >"$tmp/train.json" 2>"$tmp/train.err"; then
    python3 - "$tmp/train.json" <<'PY' && ok train_json_report || bad train_json_report
import json, sys
r = json.load(open(sys.argv[1]))
for key in ("model", "optimizer", "epochs", "best_epoch",
            "seconds_per_epoch", "peak_rss_bytes", "valid", "test"):
    assert key in r, key
for split in ("valid", "test"):
    for m in ("recall", "ndcg", "precision", "map"):
        for k in (5, 10, 20):
            assert f"{m}@{k}" in r[split], (split, m, k)
assert r["model"] == "lightgcn" and r["optimizer"] == "adam"
assert r["bf16_features"] is False   # float32 unless asked
assert r["streams"] == "mmrec"       # auto: LightGCN draws as MMRec
# Clusters make this catalogue learnable: far above the ~20/150 = 0.13
# Recall@20 of a random ranking.
assert r["test"]["recall@20"] > 0.25, r["test"]["recall@20"]
PY
else
    bad "train_json_report ($(head -c 300 "$tmp/train.err"))"
fi

# 2. The saved model evaluates to the best epoch's numbers.
if "$bin" eval --data "$tmp/cat" --in "$tmp/model.sgbd" --json \
        >"$tmp/eval.json" 2>"$tmp/eval.err"; then
    python3 - "$tmp/train.json" "$tmp/eval.json" <<'PY' && ok eval_matches_train || bad eval_matches_train
import json, sys
t, e = (json.load(open(p)) for p in sys.argv[1:3])
for split in ("valid", "test"):
    for k, v in t[split].items():
        assert abs(e[split][k] - v) < 1e-6, (split, k, v, e[split][k])
PY
else
    bad "eval_matches_train ($(head -c 300 "$tmp/eval.err"))"
fi

# 3. From the store: train --db saves a checkpoint, eval --db reads it
#    back (current, and by version), an unknown version is one clear line.
if "$bin" import --data "$tmp/cat" --db "$tmp/db" --quiet >/dev/null 2>&1 &&
   "$bin" train --db "$tmp/db" --model lightgcn --optimizer adam \
        --epochs 5 --lr 0.01 --json --quiet >"$tmp/dbtrain.json" 2>&1 &&
   "$bin" eval --db "$tmp/db" --json >"$tmp/dbeval.json" 2>/dev/null &&
   "$bin" eval --db "$tmp/db" --version 1 --json >"$tmp/dbeval1.json" \
        2>/dev/null; then
    python3 - "$tmp/dbtrain.json" "$tmp/dbeval.json" "$tmp/dbeval1.json" <<'PY' && ok store_train_eval_round_trip || bad store_train_eval_round_trip
import json, sys
t, e, e1 = (json.load(open(p)) for p in sys.argv[1:4])
for k, v in t["test"].items():
    assert abs(e["test"][k] - v) < 1e-6 and abs(e1["test"][k] - v) < 1e-6, k
PY
else
    bad "store_train_eval_round_trip ($(tail -c 300 "$tmp/dbtrain.json"))"
fi
expect_error store_unknown_version "checkpoint 9 not found" \
    "$bin" eval --db "$tmp/db" --version 9

# 3b. Streams: the same seed gives the same run, another seed another;
#     a model MMRec's draws do not cover is refused when mmrec is asked
#     for, and draws from SGBD's streams under auto.
run_streams() {
    "$bin" train --data "$tmp/cat" --model "$1" --optimizer adam --epochs 3 \
        --lr 0.01 --json --quiet --seed "$2" --set "train.streams=$3" \
        2>/dev/null
}
if run_streams lightgcn 5 mmrec >"$tmp/s1.json" &&
   run_streams lightgcn 5 mmrec >"$tmp/s2.json" &&
   run_streams lightgcn 6 mmrec >"$tmp/s3.json" &&
   run_streams lightgcn 5 sgbd >"$tmp/s4.json"; then
    python3 - "$tmp"/s1.json "$tmp"/s2.json "$tmp"/s3.json "$tmp"/s4.json <<'PY' && ok streams_reproduce_and_differ || bad streams_reproduce_and_differ
import json, sys
a, b, c, d = (json.load(open(p)) for p in sys.argv[1:5])
assert a["streams"] == "mmrec" and d["streams"] == "sgbd"
assert a["test"] == b["test"]
assert a["test"] != c["test"] and a["test"] != d["test"]
PY
else
    bad streams_reproduce_and_differ
fi
expect_error streams_mmrec_refuses_other_models "streams = mmrec" \
    "$bin" train --data "$tmp/cat" --model vbpr --epochs 1 \
    --set train.streams=mmrec --quiet
expect_error streams_mmrec_refuses_a_large_seed "2^32" \
    "$bin" train --data "$tmp/cat" --model lightgcn --epochs 1 \
    --seed 4294967296 --set train.streams=mmrec --quiet

# 4. Bad input: one clear line naming the file and the problem.
mkdir -p "$tmp/noheader" "$tmp/nonnum" "$tmp/rows" "$tmp/trunc"
tail -n +2 "$tmp/cat/cat.inter" >"$tmp/noheader/x.inter"
expect_error inter_without_header "x.inter" \
    "$bin" train --data "$tmp/noheader" --model lightgcn --epochs 1 --quiet
{ head -n 3 "$tmp/cat/cat.inter"; printf 'abc\t1\t1\t0\t0\n'; } \
    >"$tmp/nonnum/x.inter"
expect_error inter_non_numeric_id "x.inter:4" \
    "$bin" train --data "$tmp/nonnum" --model lightgcn --epochs 1 --quiet
cp "$tmp/cat/cat.inter" "$tmp/rows/"
# A valid .npy of 7 rows, written by hand (v1 header, 64-byte aligned).
python3 - "$tmp/rows/image_feat.npy" <<'PY'
import struct, sys
head = "{'descr': '<f4', 'fortran_order': False, 'shape': (7, 4), }"
head += " " * (63 - (10 + len(head)) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)))
    f.write(head.encode() + b"\0" * (7 * 4 * 4))
PY
expect_error feature_rows_differ "image_feat.npy" \
    "$bin" train --data "$tmp/rows" --model vbpr --epochs 1 --quiet
cp "$tmp/cat/cat.inter" "$tmp/trunc/"
head -c 1000 "$tmp/cat/image_feat.npy" >"$tmp/trunc/image_feat.npy"
expect_error truncated_npy "image_feat.npy" \
    "$bin" train --data "$tmp/trunc" --model vbpr --epochs 1 --quiet
expect_error unknown_model "unknown model 'nosuch'" \
    "$bin" train --data "$tmp/cat" --model nosuch --epochs 1 --quiet
printf '[model]\nlearning_rat = 1\n' >"$tmp/bad.conf"
expect_error unknown_config_key "bad.conf:2: \[model\] learning_rat" \
    "$bin" train -c "$tmp/bad.conf" --data "$tmp/cat" --quiet
expect_error missing_data "no such\|No such" \
    "$bin" train --data "$tmp/absent" --model lightgcn --quiet
expect_error bad_optimizer "optimizer" \
    "$bin" train --data "$tmp/cat" --optimizer sgd --quiet

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
