#!/usr/bin/env bash
# train.sh - training and evaluation speed of one model, Adam against SGBD,
# side by side in one run.
#
#   tests/bench/train.sh [DATA_DIR] [MODEL] [EPOCHS] [EXTRA sgbd train ARGS]
#
# Defaults: ../shared/data/baby, lightgcn, 5 epochs. Each optimiser runs
# EPOCHS epochs (early stopping off) twice, interleaved (adam, sgbd, adam,
# sgbd) so both see the same machine load; the report gives the median of
# the per-run means and the SGBD/Adam ratio of training time per epoch.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${SGBD_BIN:-$here/build/sgbd}
data=${1:-$here/../shared/data/baby}
model=${2:-lightgcn}
epochs=${3:-5}
shift $(( $# < 3 ? $# : 3 ))
py=/usr/bin/python3
[ -x "$py" ] || py=python3

if [ ! -d "$data" ]; then
    echo "skipped: $data not found"
    exit 77
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for round in 1 2; do
    for opt in adam sgbd; do
        "$bin" train --data "$data" --model "$model" --optimizer "$opt" \
            --epochs "$epochs" --stopping-step 100000 --json --quiet "$@" \
            >"$out/$opt.$round.json"
    done
done

"$py" - "$out" "$model" "$epochs" "$(nproc)" <<'PY'
import json, os, statistics, sys
out, model, epochs, cores = sys.argv[1:5]
runs = {o: [json.load(open(os.path.join(out, f"{o}.{r}.json")))
            for r in (1, 2)] for o in ("adam", "sgbd")}
def med(o, key):
    return statistics.median(r[key] for r in runs[o])
a, s = med("adam", "seconds_per_epoch"), med("sgbd", "seconds_per_epoch")
ga = runs["adam"][0]["grad_evals"]; gs = runs["sgbd"][0]["grad_evals"]
print(f"model={model} epochs={epochs} cores={cores}")
print(f"adam  train_s_per_epoch={a:.3f} eval_s_per_split="
      f"{med('adam', 'eval_seconds_per_split'):.3f} "
      f"peak_rss_mb={med('adam', 'peak_rss_bytes') / 2**20:.0f}")
print(f"sgbd  train_s_per_epoch={s:.3f} eval_s_per_split="
      f"{med('sgbd', 'eval_seconds_per_split'):.3f} "
      f"peak_rss_mb={med('sgbd', 'peak_rss_bytes') / 2**20:.0f}")
print(f"ratio sgbd/adam time={s / a:.2f} grad_evals={gs / ga:.2f}")
PY
