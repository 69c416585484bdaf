#!/usr/bin/env bash
# Issue 16's GPU checks in one run: the GPU tests, the throughput table on the GPU (fp32 raw loop vs
# ganforge, bf16-mixed / channels_last / compile alone and combined, 32x32 and 64x64, batch 64 and
# 256), and a 10k-sample evaluation with cached reference statistics.
#
#   bench/gpu_check.sh wheels   # here, with network: the pure-Python packages a bare CUDA image lacks
#   bench/gpu_check.sh run      # on the GPU machine (carry .wheelhouse); results under $OUT
#
# `run` uses the machine's own torch/torchvision/lightning/torchmetrics (python3), adds the carried
# wheels without their dependencies, and installs ganforge itself in editable mode. On a machine with
# ganforge's .venv, `PY=.venv/bin/python bench/gpu_check.sh run` skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.wheelhouse
# what ganforge needs at run time (W&B, Optuna and submitit stay out: the GPU runs log to CSV)
PACKAGES=(hydra-core omegaconf antlr4-python3-runtime torchdata torch-fidelity)

case "${1:-}" in
wheels)
  mkdir -p "$WHEELS"
  pins=()
  for p in "${PACKAGES[@]}"; do pins+=("$(grep -i "^${p//-/[-_]}==" constraints.txt)"); done
  .venv/bin/python -m pip wheel --quiet --no-deps -w "$WHEELS" "${pins[@]}"
  ls -l "$WHEELS"
  ;;
run)
  OUT=${OUT:-logs/gpu_check}
  mkdir -p "$OUT"
  if [[ -z "${PY:-}" ]]; then
    python3 -m venv --system-site-packages /tmp/ganforge-gpu
    PY=/tmp/ganforge-gpu/bin/python
    "$PY" -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl
    "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
  fi
  export WANDB_MODE=offline
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  "$PY" -m pytest -p no:cacheprovider -q -rs tests/test_gpu.py tests/test_speed.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
  "$PY" bench/throughput.py --device cuda --sizes 32 64 --batches 64 256 --steps 300 --warmup 50 \
    --extra logger=csv 2>&1 | grep -E '^(\||a fresh|DCGAN)' | tee "$OUT/throughput.md"
  # a 10k-sample evaluation: a short GPU run makes the checkpoint and the cached reference statistics
  "$PY" train.py trainer=gpu max_g_steps=200 logger=csv paths.log_dir="$OUT/logs" extras.print_config=false \
    > "$OUT/train.txt" 2>&1
  ckpt=$(ls "$OUT"/logs/train/runs/*/checkpoints/last.ckpt)
  "$PY" bench/eval_cache.py --ckpt "$ckpt" --num-samples 10000 --repeats 3 2>&1 | tail -6 | tee "$OUT/fid.txt"
  ;;
*)
  echo "usage: bench/gpu_check.sh wheels|run" >&2
  exit 2
  ;;
esac
