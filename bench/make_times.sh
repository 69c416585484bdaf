#!/usr/bin/env bash
# Wall-clock of the README's two commands on a fresh clone (venv creation included).
#   bash bench/make_times.sh            # clones HEAD into a temp folder; prints both times
set -euo pipefail
src=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
dir=$(mktemp -d)
git clone -q "$src" "$dir/ganforge"
cd "$dir/ganforge"
t0=$(date +%s); make train > train.out 2>&1; t1=$(date +%s)
make test > test.out 2>&1; t2=$(date +%s)
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%F)"
echo "make train (incl. venv creation): $((t1 - t0)) s"
echo "make test  (venv reused):         $((t2 - t1)) s"
tail -n 1 test.out
echo "logs: $dir/ganforge/{train,test}.out"
