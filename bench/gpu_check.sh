#!/usr/bin/env bash
# The GPU checks in one call on a lent GPU machine, sections in priority order, each under its own
# `timeout` and each writing its result under $OUT as it goes (at most 8 files come back), so a run
# cut short still returns what it measured:
#   gpu.txt          the GPU, the driver, python/torch/lightning versions
#   throughput64.md  DCGAN 64x64 (CelebA's shape), batch 256: raw loop vs ganforge and the switches
#                    (bf16, channels_last, compile, CUDA graphs), with TFLOP/s
#   tests.txt        the GPU tests (tests/test_gpu.py, tests/test_speed.py): graphs against eager
#   throughput32.md  DCGAN 32x32, batch 64: raw loop vs ganforge, plain and trainer=gpu_fast
#   fid.txt          a 10k-sample evaluation with cached reference statistics
#
#   bench/gpu_check.sh wheels   # here, with network: the pure-Python packages the GPU image lacks
#   bench/gpu_check.sh run      # there (carry .wheelhouse); e.g. the device tool's
#                               #   run(command="bench/gpu_check.sh run", carry=[".wheelhouse"], timeout_s=540)
#
# On the lent machine python3 is itself a venv (/opt/torch/.venv: torch, lightning, torchmetrics,
# torchvision) without hydra/omegaconf/torchdata/torch-fidelity: those are carried as wheels and
# installed with `pip install --no-deps --target`, and ganforge runs from src/ through PYTHONPATH
# (a `venv --system-site-packages` made from that venv does not see its packages). With ganforge's
# own .venv: `PY=.venv/bin/python bench/gpu_check.sh run`.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.wheelhouse
# what ganforge needs at run time that the GPU image lacks (W&B, Optuna and submitit stay out: the GPU
# runs log to CSV); pydantic's compiled core is fetched for the image's Python
PACKAGES=(hydra-core omegaconf antlr4-python3-runtime torchdata torch-fidelity pydantic annotated-types
  typing-inspection typing_extensions)
COMPILED=(pydantic_core)
GPU_PYTHON=3.12

# section NAME SECONDS COMMAND...: run it under a time limit, its output to $OUT/NAME as it goes
section() {
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s)" | tee -a "$OUT/$name"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name"
  echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/$name"
}

case "${1:-}" in
wheels)
  mkdir -p "$WHEELS"
  pins=()
  for p in "${PACKAGES[@]}"; do pins+=("$(grep -i "^${p//-/[-_]}==" constraints.txt)"); done
  .venv/bin/python -m pip wheel --quiet --no-deps -w "$WHEELS" "${pins[@]}"
  pins=()
  for p in "${COMPILED[@]}"; do pins+=("$(grep -i "^${p//-/[-_]}==" constraints.txt)"); done
  .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$WHEELS" "${pins[@]}"
  ls -l "$WHEELS"
  ;;
run)
  OUT=${OUT:-logs/gpu_check}
  mkdir -p "$OUT"
  export WANDB_MODE=offline PYTHONUNBUFFERED=1
  if [[ -z "${PY:-}" ]]; then
    PY=python3
    "$PY" -m pip install --quiet --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl 2>&1 | tail -3
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD
  fi
  section gpu.txt 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c 'import sys, torch, lightning, hydra, ganforge.train; print(sys.version.split()[0], torch.__version__, lightning.__version__, hydra.__version__, torch.cuda.get_device_name())'"
  section throughput64.md 240 "$PY" bench/throughput.py --device cuda --sizes 64 --batches 256 \
    --steps 300 --warmup 50 --variants bf16 bf16+channels_last bf16+channels_last+compile graphs \
    bf16+channels_last+graphs --extra logger=csv
  section tests.txt 120 "$PY" -m pytest -p no:cacheprovider -q -rs -x tests/test_gpu.py tests/test_speed.py
  section throughput32.md 120 "$PY" bench/throughput.py --device cuda --sizes 32 --batches 64 \
    --steps 300 --warmup 50 --variants bf16+channels_last+graphs --extra logger=csv
  # a 10k-sample evaluation: a short GPU run makes the checkpoint and the cached reference statistics
  section fid.txt 150 bash -c "$PY train.py trainer=gpu max_g_steps=200 logger=csv paths.log_dir=$OUT/logs \
    extras.print_config=false > /tmp/gpu_train.txt 2>&1 || tail -20 /tmp/gpu_train.txt
    $PY bench/eval_cache.py --ckpt \$(ls $OUT/logs/train/runs/*/checkpoints/last.ckpt) --num-samples 10000 --repeats 3"
  rm -rf "$OUT/logs"  # only the result files come back
  ;;
*)
  echo "usage: bench/gpu_check.sh wheels|run" >&2
  exit 2
  ;;
esac
