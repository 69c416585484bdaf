#!/usr/bin/env bash
# The scarcity curves of BENCHMARKS.md: digits (5, 10 per class) and MNIST (5, 10, 20, 60 per class),
# GAN seeds 0 and 1, 5 downstream seeds, every strategy. Two one-thread processes share the two cores
# (the 16x16 networks gain nothing from a second thread: 32 vs 35 ms a classifier step), each taking
# the next job (size, GAN seed) of a queue; the curves are reported when the queue is empty.
#   bash bench/scarcity_curves.sh <folder holding MNIST/raw> <log dir>
set -euo pipefail
data=${1:?folder holding MNIST/raw}
logs=${2:?log dir}
root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
cd "$root"
export OMP_NUM_THREADS=1
queue=$(mktemp)
for job in "scarcity_digits 5" "scarcity_digits 10" "scarcity_mnist 60" "scarcity_mnist 20" \
  "scarcity_mnist 10" "scarcity_mnist 5"; do
  for seed in 0 1; do echo "$job $seed"; done
done > "$queue"
worker() {
  while true; do
    job=$(flock "$queue" sh -c 'head -n 1 "$1"; sed -i 1d "$1"' _ "$queue")
    [ -n "$job" ] || return 0
    set -- $job
    echo "$(date -u +%FT%T) start $1 per_class=$2 seed=$3"
    rc=0
    .venv/bin/python train.py -m "experiment=$1" "paths.log_dir=$logs" "paths.data_dir=$data" logger=csv \
      "hydra.sweep.dir=$logs/$1" "data.train_per_class=$2" "seed=$3" > "$logs/$1_$2_$3.log" 2>&1 || rc=$?
    echo "$(date -u +%FT%T) done $1 per_class=$2 seed=$3 (exit $rc)"
  done
}
mkdir -p "$logs"
worker & worker & wait
rm -f "$queue"
for curve in scarcity_digits scarcity_mnist; do .venv/bin/python -m ganforge.scarcity "$logs/$curve"; done
