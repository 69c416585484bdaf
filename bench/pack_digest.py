"""What checking a pack's digest at every open costs: `pack.content_digest` over a memory-mapped
`images.u8` of `--gib` GiB of random bytes, with 1 thread and with every CPU, the file in the page
cache (a pack a run has just read) and, where it can be dropped (root), cold.

    .venv/bin/python bench/pack_digest.py [--gib 1] [--repeats 3]

Printed: seconds and GB/s per case (median of the repeats). Run it alone: timings on a shared
machine mean nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ganforge.datamodules.pack import available_cpus, content_digest


def timed(path: Path, workers: int, repeats: int, cold: bool) -> float:
    times = []
    labels = np.zeros(1000, dtype=np.int64)
    for _ in range(repeats):
        if cold:
            subprocess.run(["sh", "-c", "sync; echo 1 > /proc/sys/vm/drop_caches"], check=True)
        images = np.memmap(path, dtype=np.uint8, mode="r")
        start = time.perf_counter()
        content_digest(images, 1000, [3, 64, 64], labels, workers)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    can_drop = os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "images.u8"
        with open(path, "wb") as f:
            rng = np.random.default_rng(0)
            for _ in range(0, size, 1 << 26):
                f.write(rng.integers(0, 256, min(1 << 26, size), dtype=np.uint8).tobytes())
        size = path.stat().st_size
        print(f"| {size / 1e9:.2f} GB pack | threads | page cache | seconds | GB/s |")
        print("|---|---|---|---|---|")
        for workers in sorted({1, available_cpus()}):
            for cold in (False, True) if can_drop else (False,):
                seconds = timed(path, workers, args.repeats, cold)
                cache = "cold" if cold else "warm"
                print(f"| | {workers} | {cache} | {seconds:.2f} | {size / 1e9 / seconds:.2f} |")


if __name__ == "__main__":
    main()
