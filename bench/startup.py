"""Start-up: the wall clock from `python train.py` to its first training step, on the default
config (digits, DCGAN) with a fresh cache, again with that cache, and without metrics or W&B; and
what a bare `import` of the libraries costs in a fresh Python.

    .venv/bin/python bench/startup.py [--repeats 3]

Medians over `--repeats` runs (the fresh-cache row runs once per repeat, on its own empty cache).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "import lightning": "import lightning",
    "import ganforge.train": "import ganforge.train",
}


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def to_first_step(args: list[str], log_dir: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [
        sys.executable, str(ROOT / "train.py"), "max_g_steps=1", f"paths.log_dir={log_dir}",
        f"paths.cache_dir={cache}", "+callbacks.first_step._target_=first_step.FirstStep", *args,
    ]  # fmt: skip
    start = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    first = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("FIRST_STEP"))
    return first - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    print("| what | median wall time | runs |\n|---|---|---|")
    for name, code in IMPORTS.items():
        runs = [wall(code) for _ in range(repeats)]
        print(f"| {name} | {statistics.median(runs):.1f} s | {', '.join(f'{r:.1f}' for r in runs)} |")
    with tempfile.TemporaryDirectory() as tmp:
        cached = Path(tmp, "cache")
        rows = {
            "`python train.py` to the first step, fresh metrics cache": lambda i: to_first_step(
                [], Path(tmp, "logs"), Path(tmp, f"fresh{i}")
            ),
            "the same, metrics cache filled": lambda i: to_first_step([], Path(tmp, "logs"), cached),
            "`metrics=none`": lambda i: to_first_step(["metrics=none"], Path(tmp, "logs"), cached),
            "`metrics=none logger=csv extras.print_config=false`": lambda i: to_first_step(
                ["metrics=none", "logger=csv", "extras.print_config=false"], Path(tmp, "logs"), cached
            ),
        }
        to_first_step([], Path(tmp, "logs"), cached)  # fills the cache for the rows that use it
        for name, run in rows.items():
            runs = [run(i) for i in range(repeats)]
            print(f"| {name} | {statistics.median(runs):.1f} s | {', '.join(f'{r:.1f}' for r in runs)} |")


if __name__ == "__main__":
    main()
