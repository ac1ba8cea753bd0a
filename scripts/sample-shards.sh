#!/usr/bin/env bash
# Samples a model in 4 shards run in parallel with `xargs -P 4`, concatenates
# them and checks that the result equals the unsharded run byte for byte.
#
#   scripts/sample-shards.sh MODEL.onnx N [FMRT]
#
# Each shard is `fmrt sample --first-index I -n K` with the same seed; sample
# i's noise depends on (seed, i) only, so the shards are rows I..I+K of the
# whole run. CSV output (one sample per row) concatenates with `cat`.
# Fixed steps keep every sample's steps independent of the batch.
set -euo pipefail
model=$1
n=$2
fmrt=${3:-fmrt}
shards=4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--model "$model" --seed 7 --solver rk4 --steps 20 --quiet)

per=$(((n + shards - 1) / shards))
for ((s = 0; s < shards; s++)); do
    first=$((s * per))
    count=$((n - first < per ? n - first : per))
    if ((count > 0)); then
        echo "--first-index $first -n $count -o $work/shard-$s.csv"
    fi
done | xargs -P "$shards" -L 1 "$fmrt" sample "${common[@]}"

# Concatenate in index order and compare with one run of all N samples.
for ((s = 0; s < shards; s++)); do
    if [[ -f $work/shard-$s.csv ]]; then cat "$work/shard-$s.csv"; fi
done >"$work/joined.csv"
"$fmrt" sample "${common[@]}" -n "$n" -o "$work/whole.csv"
cmp "$work/joined.csv" "$work/whole.csv"
echo "$shards shards of $n samples concatenate to the unsharded run"
